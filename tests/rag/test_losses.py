import keras
import numpy as np
import pytest

from keras_ragkd.rag.losses import RagSequenceLoss
from keras_ragkd.rag.losses import RagTokenLoss
from keras_ragkd.rag.marginalization import add_document_log_probs
from keras_ragkd.rag.marginalization import document_log_probs
from keras_ragkd.rag.marginalization import sequence_log_likelihood


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_token_loss_is_mean_of_per_sequence_masked_nll():
    rng = np.random.default_rng(0)
    log_probs = _log_softmax(rng.normal(size=(3, 4, 6))).astype("float32")
    labels = np.array([[1, 2, 0, 0], [3, 4, 5, 0], [1, 0, 0, 0]])
    valid = labels != 0
    nll = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    expected = np.mean([nll[b][valid[b]].mean() for b in range(3)])
    np.testing.assert_allclose(float(RagTokenLoss()(labels, log_probs)), expected, rtol=1e-5)
    # Equal-length targets: identical to Keras' sparse cross-entropy on log-probs.
    full = np.array([[1, 2], [3, 4], [5, 1]])
    reference = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    np.testing.assert_allclose(
        float(RagTokenLoss()(full, log_probs[:, :2])),
        float(reference(full, log_probs[:, :2])),
        rtol=1e-5,
    )


def test_token_loss_label_smoothing_matches_numpy():
    rng = np.random.default_rng(1)
    log_probs = _log_softmax(rng.normal(size=(2, 3, 5))).astype("float32")
    labels = np.array([[1, 2, 0], [3, 4, 1]])
    valid = labels != 0
    nll = -np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    per_token = 0.9 * nll - 0.1 * log_probs.mean(-1)
    expected = np.mean([per_token[b][valid[b]].mean() for b in range(2)])
    got = float(RagTokenLoss(label_smoothing=0.1)(labels, log_probs))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_sequence_loss_is_mean_negative_marginal_likelihood():
    rng = np.random.default_rng(2)
    token_log_probs = _log_softmax(rng.normal(size=(2, 3, 4, 6))).astype("float32")
    doc_log_probs = document_log_probs(rng.normal(size=(2, 3)).astype("float32"))
    joint = add_document_log_probs(doc_log_probs, token_log_probs)
    labels = np.array([[1, 2, 3, 0], [4, 0, 0, 0]])
    expected = -sequence_log_likelihood(labels, joint).numpy()
    np.testing.assert_allclose(float(RagSequenceLoss()(labels, joint)), expected.mean(), rtol=1e-5)
    by_length = float(RagSequenceLoss(normalize_by_length=True)(labels, joint))
    np.testing.assert_allclose(by_length, (expected / np.array([3, 1])).mean(), rtol=1e-5)


def test_losses_round_trip_config_and_validate():
    loss = RagSequenceLoss(label_smoothing=0.1, normalize_by_length=True)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, RagSequenceLoss)
    assert restored.get_config() == loss.get_config()
    with pytest.raises(ValueError, match="Received: label_smoothing=1.5"):
        RagTokenLoss(label_smoothing=1.5)
