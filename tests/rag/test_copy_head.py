"""The pointer head of decoder-only RAG generators (`CopyHead`)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.rag.copy_head import CopyHead
from keras_ragkd.rag.copy_head import log_mix
from keras_ragkd.rag.copy_head import switch_loss


def _softmax(values):
    values = np.exp(values - values.max(-1, keepdims=True))
    return values / values.sum(-1, keepdims=True)


def _numpy_copy_head(head, hidden, logits, prompt_hidden, prompt_ids, prompt_mask,
                     input_ids=None):
    """The pointer-generator mixture (with continuation and coverage) in NumPy."""
    w_q, w_k = (np.asarray(d.kernel) for d in (head.query_dense, head.key_dense))
    w_g, b_g = np.asarray(head.gate_dense.kernel), np.asarray(head.gate_dense.bias)
    keys = prompt_hidden @ w_k
    scores = np.einsum("btd,bsd->bts", hidden @ w_q, keys) / np.sqrt(head.key_dim)
    scores = np.where(prompt_mask[:, None, :], scores, -np.inf)
    continuation = np.zeros_like(scores)
    attention = np.zeros_like(scores)
    bonus = float(np.asarray(head.continuation_bonus)) if head.continuation else 0.0
    penalty = float(np.asarray(head.coverage_penalty)) if head.coverage else 0.0
    for t in range(scores.shape[1]):
        if head.continuation and t > 0:
            matched = (prompt_ids == input_ids[:, t : t + 1]) & prompt_mask
            continuation[:, t, 1:] = (attention[:, t - 1] * matched)[:, :-1]
        coverage = attention[:, :t].sum(axis=1)
        attention[:, t] = _softmax(scores[:, t] + bonus * continuation[:, t] - penalty * coverage)
    contexts = [hidden, np.einsum("bts,bsd->btd", attention, keys)]
    if head.continuation:
        contexts.append(np.einsum("bts,bsd->btd", continuation, keys))
    gate = 1 / (1 + np.exp(-(np.concatenate(contexts, -1) @ w_g + b_g)))
    copied = np.zeros_like(logits)
    for b in range(copied.shape[0]):
        for s, token in enumerate(prompt_ids[b]):
            copied[b, :, token] += attention[b, :, s]
    return gate * _softmax(logits) + (1 - gate) * copied


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(2, 3, 8)).astype("float32")
    logits = rng.normal(size=(2, 3, 11)).astype("float32")
    prompt_hidden = rng.normal(size=(2, 5, 8)).astype("float32")
    prompt_ids = rng.integers(0, 11, size=(2, 5))
    prompt_ids[0, :2] = 7  # A token at two positions: their attention adds up.
    prompt_mask = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], bool)
    # The answer's inputs: the prompt's last token, then tokens copied from it.
    input_ids = np.stack([[prompt_ids[0, -1], 7, prompt_ids[0, 2]],
                          [prompt_ids[1, -1], prompt_ids[1, 2], prompt_ids[1, 3]]])
    return hidden, logits, prompt_hidden, prompt_ids, prompt_mask, input_ids


HEAD_KINDS = [dict(continuation=False, coverage=False), dict(continuation=True, coverage=False),
              dict(continuation=True, coverage=True), dict(continuation=False, coverage=True)]


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_copy_head_matches_numpy_reference(kind):
    hidden, logits, prompt_hidden, prompt_ids, prompt_mask, input_ids = _inputs()
    head = CopyHead(key_dim=4, **kind)
    keys = head.prompt_keys(prompt_hidden)
    head.gate_dense.bias.assign([0.3])
    if head.continuation:
        head.continuation_bonus.assign(3.0)
    if head.coverage:
        head.coverage_penalty.assign(1.5)
    out = head.log_probs(hidden, logits, keys, prompt_ids, prompt_mask,
                         input_token_ids=input_ids).numpy()
    expected = _numpy_copy_head(head, hidden, logits, prompt_hidden, prompt_ids, prompt_mask,
                                input_ids)
    np.testing.assert_allclose(np.exp(out), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_step_log_probs_equal_the_teacher_forced_sequence(kind):
    hidden, logits, prompt_hidden, prompt_ids, prompt_mask, input_ids = _inputs(1)
    head = CopyHead(key_dim=4, **kind)
    keys = head.prompt_keys(prompt_hidden)
    if head.continuation:
        head.continuation_bonus.assign(5.0)
    sequence = head.log_probs(hidden, logits, keys, prompt_ids, prompt_mask,
                              input_token_ids=input_ids).numpy()
    copy_state = head.initial_copy_state(*prompt_ids.shape)
    for t in range(hidden.shape[1]):
        step, copy_state = head.step_log_probs(
            hidden[:, t : t + 1], logits[:, t : t + 1], keys, prompt_ids, prompt_mask,
            input_ids[:, t], copy_state)
        np.testing.assert_allclose(step.numpy()[:, 0], sequence[:, t], rtol=1e-5, atol=1e-5)


def test_continuation_moves_the_copy_to_the_next_position():
    # Position 1 was copied at step 0 (its token 5 is step 1's input): with a
    # large bonus step 1 copies position 2, although its content scores are flat.
    head = CopyHead(key_dim=2, coverage=False)
    prompt_hidden = np.zeros((1, 4, 3), "float32")
    keys = head.prompt_keys(prompt_hidden)
    head.continuation_bonus.assign(20.0)
    head.gate_dense.bias.assign([-30.0])  # Copy only.
    prompt_ids = np.array([[4, 5, 6, 7]])
    mask = np.ones((1, 4), bool)
    state = np.array([[[0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]], "float32")
    _, next_state = head.step_log_probs(
        np.zeros((1, 1, 3), "float32"), np.zeros((1, 1, 9), "float32"), keys, prompt_ids,
        mask, np.array([7]), state)
    # Input 7 was not copied from position 1: no continuation, flat attention.
    np.testing.assert_allclose(next_state.numpy()[:, 0], [[0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(next_state.numpy()[:, 1], [[0.25, 1.25, 0.25, 0.25]])
    log_probs, _ = head.step_log_probs(
        np.zeros((1, 1, 3), "float32"), np.zeros((1, 1, 9), "float32"), keys, prompt_ids,
        mask, np.array([5]), state)
    assert int(np.argmax(log_probs.numpy()[0, 0])) == 6


def test_coverage_stops_copying_a_position_a_second_time():
    # Position 2 has the best content score at every step: without coverage
    # the head copies it twice ("ryry"), with it the second step moves on.
    prompt_ids = np.array([[4, 5, 6, 7]])
    mask = np.ones((1, 4), bool)
    hidden = np.zeros((1, 2, 3), "float32")
    hidden[..., 0] = 1.0
    # Query [1, 0] and keys [s_j √2, 0]: the content scores are s_j.
    prompt_hidden = np.zeros((1, 4, 3), "float32")
    prompt_hidden[0, :, 0] = np.array([0.0, 1.0, 3.0, 2.0]) * np.sqrt(2.0)
    logits = np.zeros((1, 2, 9), "float32")
    copied = {}
    for coverage in (False, True):
        head = CopyHead(key_dim=2, continuation=False, coverage=coverage)
        head.build([None, None, 3])
        for dense in (head.query_dense, head.key_dense):
            dense.kernel.assign(np.eye(3, 2, dtype="float32"))
        head.gate_dense.kernel.assign(np.zeros((3 + 2, 1), "float32"))
        head.gate_dense.bias.assign([-30.0])  # Copy only.
        log_probs = head.log_probs(hidden, logits, head.prompt_keys(prompt_hidden), prompt_ids,
                                   mask, input_token_ids=np.array([[7, 6]]))
        copied[coverage] = np.argmax(log_probs.numpy()[0], axis=-1).tolist()
    assert copied == {False: [6, 6], True: [6, 7]}


def _numpy_switch_loss(gate_logits, input_ids, answer_mask, prompt_ids, prompt_mask):
    total, count = 0.0, 0
    for b in range(input_ids.shape[0]):
        for t in range(input_ids.shape[1] - 1):
            if not answer_mask[b, t]:
                continue
            copyable_ids = prompt_ids[b][prompt_mask[b]]
            copyable = answer_mask[b, t + 1] and input_ids[b, t + 1] in copyable_ids
            generate = 1 / (1 + np.exp(-gate_logits[b, t]))
            total -= np.log(1 - generate if copyable else generate)
            count += 1
    return total / count


def test_switch_loss_matches_numpy_reference():
    rng = np.random.default_rng(3)
    gate_logits = rng.normal(size=(2, 4)).astype("float32")
    prompt_ids = np.array([[5, 6, 7, 9], [5, 6, 7, 9]])
    prompt_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
    # Row 0: copies 5 6, then the end (padding); 9 is masked in its prompt.
    # Row 1: 9 (copyable there), 8 (not in the prompt), a full answer.
    input_ids = np.array([[2, 5, 6, 0], [2, 9, 8, 6]])
    answer_mask = input_ids != 0
    expected = _numpy_switch_loss(gate_logits, input_ids, answer_mask, prompt_ids, prompt_mask)
    out = switch_loss(gate_logits, input_ids, answer_mask, prompt_ids, prompt_mask)
    np.testing.assert_allclose(float(out), expected, rtol=1e-5)
    nothing = switch_loss(gate_logits[:, :1], input_ids[:, :1], answer_mask[:, :1], prompt_ids,
                          prompt_mask)
    assert float(nothing) == 0.0


def test_gate_supervision_needs_the_inputs_and_leaves_the_mixture_alone():
    hidden, logits, prompt_hidden, prompt_ids, prompt_mask, input_ids = _inputs()
    plain = CopyHead(key_dim=4, continuation=False, coverage=False)
    supervised = CopyHead.from_config({**plain.get_config(), "gate_supervision": 1.0})
    keys = plain.prompt_keys(prompt_hidden)
    supervised.build(hidden.shape)
    supervised.set_weights(plain.get_weights())
    with pytest.raises(ValueError, match="Received: input_token_ids=None"):
        supervised.log_probs(hidden, logits, keys, prompt_ids, prompt_mask, training=True)
    answer_mask = np.ones(input_ids.shape, bool)
    out = supervised.log_probs(hidden, logits, keys, prompt_ids, prompt_mask,
                               input_token_ids=input_ids, answer_padding_mask=answer_mask,
                               training=True)
    np.testing.assert_allclose(out.numpy(), plain.log_probs(
        hidden, logits, keys, prompt_ids, prompt_mask).numpy(), atol=1e-6)


def test_copy_head_config_round_trip_and_heads_saved_before_continuation():
    head = CopyHead(key_dim=4, continuation=True, name="copy_head")
    assert CopyHead.from_config(head.get_config()).continuation is True
    old_config = {key: value for key, value in head.get_config().items()
                  if key not in ("continuation", "coverage")}
    assert CopyHead.from_config(old_config).continuation is False
    assert CopyHead.from_config(old_config).coverage is False
    covered = CopyHead(key_dim=4, coverage=True, gate_supervision=0.5)
    assert CopyHead.from_config(covered.get_config()).coverage is True
    assert CopyHead.from_config(covered.get_config()).gate_supervision == 0.5
    assert CopyHead.from_config(old_config).gate_supervision == 0.0


def test_log_mix_is_finite_with_gradients_where_copy_is_zero():
    vocabulary = tf.Variable(np.log([[0.7, 0.3, 1e-20]], dtype="float32"))
    copy_probs = tf.Variable([[0.0, 0.0, 1.0]])
    with tf.GradientTape() as tape:
        out = log_mix(np.log([[0.5]], dtype="float32"), vocabulary,
                      np.log([[0.5]], dtype="float32"), copy_probs)
        loss = -tf.reduce_sum(out * [[0.2, 0.3, 0.5]])
    gradients = tape.gradient(loss, [vocabulary, copy_probs])
    assert np.isfinite(out.numpy()).all()
    assert all(np.isfinite(g.numpy()).all() for g in gradients)
    np.testing.assert_allclose(np.exp(out.numpy()), [[0.35, 0.15, 0.5]], rtol=1e-5)


def test_copy_head_validation():
    with pytest.raises(ValueError, match="Received: key_dim=0"):
        CopyHead(key_dim=0)
    with pytest.raises(TypeError, match="Received: continuation=1"):
        CopyHead(continuation=1)
    with pytest.raises(TypeError, match="Received: coverage='yes'"):
        CopyHead(coverage="yes")
    with pytest.raises(ValueError, match="Received: gate_supervision=-1"):
        CopyHead(gate_supervision=-1)
    hidden, logits, prompt_hidden, prompt_ids, prompt_mask, _ = _inputs()
    head = CopyHead(key_dim=4)
    with pytest.raises(ValueError, match="Received: input_token_ids=None"):
        head.log_probs(hidden, logits, head.prompt_keys(prompt_hidden), prompt_ids, prompt_mask)
