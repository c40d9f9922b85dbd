"""The pointer head of decoder-only RAG generators (`CopyHead`)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.rag.copy_head import CopyHead
from keras_ragkd.rag.copy_head import log_mix


def _numpy_copy_head(head, hidden, logits, prompt_hidden, prompt_ids, prompt_mask):
    """The pointer-generator mixture written out in NumPy."""
    w_q, w_k = (np.asarray(d.kernel) for d in (head.query_dense, head.key_dense))
    w_g, b_g = np.asarray(head.gate_dense.kernel), np.asarray(head.gate_dense.bias)
    keys = prompt_hidden @ w_k
    scores = np.einsum("btd,bsd->bts", hidden @ w_q, keys) / np.sqrt(head.key_dim)
    scores = np.where(prompt_mask[:, None, :], scores, -np.inf)
    attention = np.exp(scores - scores.max(-1, keepdims=True))
    attention /= attention.sum(-1, keepdims=True)
    context = np.einsum("bts,bsd->btd", attention, keys)
    gate = 1 / (1 + np.exp(-(np.concatenate([hidden, context], -1) @ w_g + b_g)))
    vocabulary = np.exp(logits - logits.max(-1, keepdims=True))
    vocabulary /= vocabulary.sum(-1, keepdims=True)
    copied = np.zeros_like(vocabulary)
    for b in range(copied.shape[0]):
        for s, token in enumerate(prompt_ids[b]):
            copied[b, :, token] += attention[b, :, s]
    return gate * vocabulary + (1 - gate) * copied


def test_copy_head_matches_numpy_reference():
    rng = np.random.default_rng(0)
    head = CopyHead(key_dim=4)
    hidden = rng.normal(size=(2, 3, 8)).astype("float32")
    logits = rng.normal(size=(2, 3, 11)).astype("float32")
    prompt_hidden = rng.normal(size=(2, 5, 8)).astype("float32")
    prompt_ids = rng.integers(0, 11, size=(2, 5))
    prompt_ids[0, :2] = 7  # A token at two positions: their attention adds up.
    prompt_mask = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], bool)
    keys = head.prompt_keys(prompt_hidden)
    head.gate_dense.bias.assign([0.3])
    out = head.log_probs(hidden, logits, keys, prompt_ids, prompt_mask).numpy()
    expected = _numpy_copy_head(head, hidden, logits, prompt_hidden, prompt_ids, prompt_mask)
    np.testing.assert_allclose(np.exp(out), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.exp(out).sum(-1), 1.0, rtol=1e-5)


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
