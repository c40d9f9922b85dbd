"""Property-based tests (hypothesis) of the KD and RAG marginalisation losses.

For any finite logits: the losses are finite, divergences and negative
log-likelihoods are non-negative, and the results do not depend on what
padded positions or masked-out documents hold, nor on the order of the
retrieved passages.
"""

import numpy as np
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from keras_ragkd.distillation import kd_divergence
from keras_ragkd.distillation import topk_kd_divergence
from keras_ragkd.rag import RagSequenceLoss
from keras_ragkd.rag import RagTokenLoss
from keras_ragkd.rag import document_log_probs
from keras_ragkd.rag import rag_token_marginal
from keras_ragkd.rag import sequence_log_likelihood
from keras_ragkd.rag.marginalization import add_document_log_probs

PROPERTIES = settings(max_examples=20, deadline=None, derandomize=True)
# Float32 losses of O(10) values agree to this much.
ATOL = 1e-4

LOGIT = st.floats(-20.0, 20.0, width=32)
TEMPERATURE = st.floats(0.25, 8.0)


def logits(shape):
    return hnp.arrays("float32", shape, elements=LOGIT)


def log_softmax(z, axis=-1):
    z = np.asarray(z, "float64")
    z = z - z.max(axis, keepdims=True)
    return (z - np.log(np.exp(z).sum(axis, keepdims=True))).astype("float32")


@st.composite
def teacher_student(draw, max_vocab=12):
    batch, time, vocab = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(
        st.integers(2, max_vocab))
    shape = (batch, time, vocab)
    return draw(logits(shape)), draw(logits(shape)), draw(TEMPERATURE)


@st.composite
def rag_batch(draw):
    """Doc scores, a doc mask with at least one valid doc per example, token
    log-probabilities and labels (0 = padding after the first step)."""
    batch, num_docs = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    time, vocab = draw(st.integers(1, 4)), draw(st.integers(2, 6))
    scores = draw(logits((batch, num_docs)))
    mask = draw(hnp.arrays(bool, (batch, num_docs)))
    mask[:, draw(st.integers(0, num_docs - 1))] = True
    token_log_probs = log_softmax(draw(logits((batch, num_docs, time, vocab))))
    labels = draw(hnp.arrays("int32", (batch, time), elements=st.integers(1, vocab - 1)))
    lengths = draw(hnp.arrays("int32", (batch,), elements=st.integers(1, time)))
    labels[np.arange(time)[None, :] >= lengths[:, None]] = 0
    permutation = np.asarray(draw(st.permutations(range(num_docs))))
    return scores, mask, token_log_probs, labels, permutation


def _other_values(draw, shape):
    return log_softmax(draw(logits(shape)))


# --- Knowledge distillation ---


@PROPERTIES
@given(teacher_student())
def test_kd_divergence_is_finite_and_non_negative(case):
    teacher, student, temperature = case
    values = kd_divergence(teacher, student, temperature).numpy()
    assert values.shape == teacher.shape[:-1]
    assert np.isfinite(values).all() and (values >= -ATOL).all()


@PROPERTIES
@given(teacher_student(), st.floats(-50, 50), st.floats(-50, 50))
def test_kd_divergence_is_zero_for_equal_and_shifted_logits(case, shift_t, shift_s):
    teacher, student, temperature = case
    same = kd_divergence(teacher, teacher + np.float32(shift_s), temperature).numpy()
    np.testing.assert_allclose(same, 0.0, atol=ATOL)
    np.testing.assert_allclose(
        kd_divergence(teacher + np.float32(shift_t), student, temperature).numpy(),
        kd_divergence(teacher, student, temperature).numpy(), atol=ATOL, rtol=1e-4,
    )


@PROPERTIES
@given(teacher_student(), st.data())
def test_kd_divergence_ignores_vocabulary_order_and_other_positions(case, data):
    teacher, student, temperature = case
    expected = kd_divergence(teacher, student, temperature).numpy()
    order = np.asarray(data.draw(st.permutations(range(teacher.shape[-1]))))
    np.testing.assert_allclose(
        kd_divergence(teacher[..., order], student[..., order], temperature).numpy(),
        expected, atol=ATOL, rtol=1e-4,
    )
    # A padded position's content changes only that position's value.
    changed = student.copy()
    changed[:, -1] = data.draw(logits(student[:, -1].shape))
    np.testing.assert_array_equal(
        kd_divergence(teacher, changed, temperature).numpy()[:, :-1], expected[:, :-1]
    )


def _top_k_teacher(teacher, k, temperature):
    """What a top-k `TeacherCache` holds: top-k logits, their ids, log rest mass."""
    indices = np.argsort(-teacher, axis=-1, kind="stable")[..., :k].astype("int32")
    top = np.take_along_axis(teacher, indices, -1)
    log_probs = log_softmax(np.asarray(teacher, "float64") / temperature).astype("float64")
    rest = np.ones(teacher.shape, bool)
    np.put_along_axis(rest, indices, False, -1)
    rest_log_mass = np.log(np.where(rest, np.exp(log_probs), 0.0).sum(-1))
    return top, indices, rest_log_mass.astype("float32")


@PROPERTIES
@given(teacher_student(), st.data())
def test_topk_kd_divergence_is_finite_and_bounded_by_the_full_divergence(case, data):
    """Collapsing the vocabulary into k + 1 buckets can only lose divergence
    (data-processing inequality): 0 <= top-k KD <= full KD."""
    teacher, student, temperature = case
    k = data.draw(st.integers(1, teacher.shape[-1] - 1))
    top, indices, rest_log_mass = _top_k_teacher(teacher, k, temperature)
    if not np.isfinite(rest_log_mass).all():
        return  # The rest mass underflows float64: no cache can store it.
    values = topk_kd_divergence(top, indices, rest_log_mass, student, temperature).numpy()
    full = kd_divergence(teacher, student, temperature).numpy()
    assert np.isfinite(values).all()
    assert (values >= -ATOL).all()
    assert (values <= full + ATOL * (1 + np.abs(full))).all()


# --- RAG marginalisation ---


@PROPERTIES
@given(rag_batch(), st.data())
def test_document_log_probs_are_normalised_over_valid_documents_only(case, data):
    scores, mask, _, _, permutation = case
    log_probs = document_log_probs(scores, mask).numpy()
    assert np.isfinite(log_probs).all()
    np.testing.assert_allclose(np.where(mask, np.exp(log_probs), 0).sum(-1), 1.0, atol=1e-5)
    assert (np.exp(log_probs)[~mask] == 0).all()
    # Masked documents' scores (anything, NaN included) change nothing.
    other = np.where(mask, scores, data.draw(st.sampled_from([np.nan, 1e30, -7.0])))
    np.testing.assert_array_equal(document_log_probs(other, mask).numpy(), log_probs)
    np.testing.assert_allclose(
        document_log_probs(scores[:, permutation], mask[:, permutation]).numpy(),
        log_probs[:, permutation], atol=1e-5,
    )


@PROPERTIES
@given(rag_batch(), st.data())
def test_rag_token_marginal_is_normalised_and_order_and_mask_invariant(case, data):
    scores, mask, token_log_probs, labels, permutation = case
    doc_log_probs = document_log_probs(scores, mask)
    marginal = rag_token_marginal(doc_log_probs, token_log_probs).numpy()
    assert np.isfinite(marginal).all()
    np.testing.assert_allclose(np.exp(marginal).sum(-1), 1.0, atol=1e-4)
    permuted = rag_token_marginal(
        document_log_probs(scores[:, permutation], mask[:, permutation]),
        token_log_probs[:, permutation],
    ).numpy()
    np.testing.assert_allclose(permuted, marginal, atol=ATOL)
    other = np.where(mask[:, :, None, None], token_log_probs,
                     _other_values(data.draw, token_log_probs.shape))
    np.testing.assert_allclose(
        rag_token_marginal(doc_log_probs, other).numpy(), marginal, atol=ATOL
    )
    loss = RagTokenLoss()(labels, marginal).numpy()
    assert np.isfinite(loss) and loss >= -ATOL
    # What the marginal holds at padded label positions does not count.
    padded = labels == 0
    noise = _other_values(data.draw, marginal.shape)
    np.testing.assert_allclose(
        RagTokenLoss()(labels, np.where(padded[..., None], noise, marginal)).numpy(),
        loss, atol=ATOL,
    )


@PROPERTIES
@given(rag_batch(), st.data(), st.sampled_from([0.0, 0.1]), st.booleans())
def test_rag_sequence_loss_is_non_negative_and_order_padding_and_mask_invariant(
    case, data, label_smoothing, normalize_by_length
):
    scores, mask, token_log_probs, labels, permutation = case
    loss_fn = RagSequenceLoss(label_smoothing=label_smoothing,
                              normalize_by_length=normalize_by_length, reduction=None)

    def loss_of(scores, mask, token_log_probs):
        joint = add_document_log_probs(document_log_probs(scores, mask), token_log_probs)
        return loss_fn(labels, joint).numpy()

    loss = loss_of(scores, mask, token_log_probs)
    assert np.isfinite(loss).all() and (loss >= -ATOL).all()
    log_likelihood = sequence_log_likelihood(
        labels, add_document_log_probs(document_log_probs(scores, mask), token_log_probs)
    ).numpy()
    assert (log_likelihood <= ATOL).all()
    np.testing.assert_allclose(
        loss_of(scores[:, permutation], mask[:, permutation], token_log_probs[:, permutation]),
        loss, atol=ATOL, rtol=1e-5,
    )
    noise = _other_values(data.draw, token_log_probs.shape)
    padded = (labels == 0)[:, None, :, None]
    np.testing.assert_allclose(
        loss_of(scores, mask, np.where(padded, noise, token_log_probs)), loss,
        atol=ATOL, rtol=1e-5,
    )
    np.testing.assert_allclose(
        loss_of(scores, mask, np.where(mask[:, :, None, None], token_log_probs, noise)),
        loss, atol=ATOL, rtol=1e-5,
    )
