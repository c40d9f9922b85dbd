import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.rag.marginalization import add_document_log_probs
from keras_ragkd.rag.marginalization import document_log_probs
from keras_ragkd.rag.marginalization import rag_token_marginal
from keras_ragkd.rag.marginalization import sequence_log_likelihood


def _log_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def _random_problem(seed, batch=3, docs=4, time=5, vocab=7):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(batch, docs)).astype("float32")
    token_log_probs = _log_softmax(rng.normal(size=(batch, docs, time, vocab))).astype("float32")
    labels = rng.integers(1, vocab, size=(batch, time))
    labels[0, 3:] = 0
    labels[1, 1:] = 0
    mask = np.ones((batch, docs), bool)
    mask[0, 2:] = False
    mask[2, 1] = False
    return scores, mask, token_log_probs, labels


def _reference_doc_probs(scores, mask):
    probs = np.where(mask, np.exp(scores - scores.max(-1, keepdims=True)), 0.0)
    return probs / probs.sum(-1, keepdims=True)


def test_document_log_probs_matches_masked_softmax():
    scores, mask, _, _ = _random_problem(0)
    got = np.exp(document_log_probs(scores, mask).numpy())
    np.testing.assert_allclose(got, _reference_doc_probs(scores, mask), atol=1e-6)
    assert np.all(got[~mask] == 0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rag_token_marginal_matches_numpy(seed):
    scores, mask, token_log_probs, _ = _random_problem(seed)
    doc_probs = _reference_doc_probs(scores, mask)
    expected = np.einsum("bk,bktv->btv", doc_probs, np.exp(token_log_probs))
    got = rag_token_marginal(document_log_probs(scores, mask), token_log_probs)
    np.testing.assert_allclose(np.exp(got.numpy()), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.exp(got.numpy()).sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sequence_log_likelihood_matches_numpy(seed):
    scores, mask, token_log_probs, labels = _random_problem(seed)
    doc_probs = _reference_doc_probs(scores, mask)
    batch, docs, time, _ = token_log_probs.shape
    expected = np.zeros(batch)
    for b in range(batch):
        total = 0.0
        for z in range(docs):
            steps = [t for t in range(time) if labels[b, t] != 0 or t == 0]
            seq = sum(token_log_probs[b, z, t, labels[b, t]] for t in steps)
            total += doc_probs[b, z] * np.exp(seq)
        expected[b] = np.log(total)
    joint = add_document_log_probs(document_log_probs(scores, mask), token_log_probs)
    got = sequence_log_likelihood(labels, joint).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_sequence_label_smoothing_matches_numpy():
    scores, mask, token_log_probs, labels = _random_problem(3)
    log_doc = np.log(np.maximum(_reference_doc_probs(scores, mask), 1e-30))
    valid = (labels != 0) | (np.arange(labels.shape[1]) == 0)[None]
    smooth_terms = (token_log_probs.mean(-1) * valid[:, None, :]).sum(-1) + log_doc
    smooth = np.log(np.exp(smooth_terms).sum(-1))
    joint = add_document_log_probs(document_log_probs(scores, mask), token_log_probs)
    plain = sequence_log_likelihood(labels, joint).numpy()
    smoothed = sequence_log_likelihood(labels, joint, label_smoothing=0.2).numpy()
    np.testing.assert_allclose(smoothed, 0.8 * plain + 0.2 * smooth, rtol=1e-4)


def test_masked_documents_do_not_change_the_marginal():
    scores, mask, token_log_probs, _ = _random_problem(4)
    changed = token_log_probs.copy()
    changed[~mask] = _log_softmax(np.random.default_rng(9).normal(size=changed[~mask].shape))
    doc_log_probs = document_log_probs(scores, mask)
    np.testing.assert_allclose(
        rag_token_marginal(doc_log_probs, token_log_probs).numpy(),
        rag_token_marginal(doc_log_probs, changed).numpy(),
        atol=1e-6,
    )


def test_marginal_is_finite_and_differentiable_with_masked_documents():
    scores, mask, token_log_probs, labels = _random_problem(5)
    scores = tf.Variable(scores)
    with tf.GradientTape() as tape:
        joint = add_document_log_probs(document_log_probs(scores, mask), token_log_probs)
        loss = -tf.reduce_sum(sequence_log_likelihood(labels, joint))
    gradient = tape.gradient(loss, scores).numpy()
    assert np.all(np.isfinite(gradient))
    assert np.all(gradient[~mask] == 0.0)
    assert np.abs(gradient[mask]).sum() > 0
