"""Keras losses for RAG-Token and RAG-Sequence models."""

import keras
import tensorflow as tf

from keras_ragkd.rag.marginalization import sequence_log_likelihood


def _check_smoothing(label_smoothing):
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise ValueError(
            "`label_smoothing` must be a float in [0, 1). "
            f"Received: label_smoothing={label_smoothing}"
        )
    return float(label_smoothing)


@keras.saving.register_keras_serializable(package="keras_ragkd")
class RagTokenLoss(keras.losses.Loss):
    """Masked negative log-likelihood of RAG-Token marginal log-probabilities.

    `y_pred` are log-probabilities `(batch, time, vocab)` (the output of a
    `RetrievalAugmentedGenerator` with `marginalization="token"`); labels equal
    to `padding_id` are ignored. Each example's loss is the mean NLL over its
    non-padding tokens (`keras.losses.SparseCategoricalCrossentropy(
    from_logits=True, ignore_class=padding_id)` instead averages over all
    tokens of the batch), with optional label smoothing.

    Args:
        padding_id: int, label id ignored in the loss.
        label_smoothing: float in [0, 1), weight of the uniform target.
        name: str, name of the loss.
        reduction: Keras reduction.

    Example:

    >>> import numpy as np
    >>> loss = RagTokenLoss()
    >>> log_probs = np.log(np.full((1, 2, 4), 0.25, "float32"))
    >>> round(float(loss(np.array([[3, 0]]), log_probs)), 4)
    1.3863
    """

    def __init__(
        self,
        padding_id=0,
        label_smoothing=0.0,
        name="rag_token_loss",
        reduction="sum_over_batch_size",
    ):
        super().__init__(name=name, reduction=reduction)
        self.padding_id = int(padding_id)
        self.label_smoothing = _check_smoothing(label_smoothing)

    def call(self, y_true, y_pred):
        labels = tf.cast(y_true, "int32")
        log_probs = tf.nn.log_softmax(tf.cast(y_pred, "float32"), axis=-1)
        valid = tf.not_equal(labels, self.padding_id)
        safe_labels = tf.where(valid, labels, 0)
        nll = -tf.gather(log_probs, safe_labels, axis=-1, batch_dims=2)
        if self.label_smoothing:
            smooth = -tf.reduce_mean(log_probs, axis=-1)
            nll = (1.0 - self.label_smoothing) * nll + self.label_smoothing * smooth
        weights = tf.cast(valid, "float32")
        return tf.reduce_sum(nll * weights, axis=-1) / tf.maximum(
            tf.reduce_sum(weights, axis=-1), 1.0
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {"padding_id": self.padding_id, "label_smoothing": self.label_smoothing}
        )
        return config


@keras.saving.register_keras_serializable(package="keras_ragkd")
class RagSequenceLoss(keras.losses.Loss):
    """Marginal sequence negative log-likelihood for RAG-Sequence models.

    `y_pred` are per-document token log-probabilities with `log P(z|x)` folded
    into the first step, `(batch, num_docs, time, vocab)` (the output of a
    `RetrievalAugmentedGenerator` with `marginalization="sequence"`).
    The loss of an example is `-logsumexp_z(log P(z|x) + log P(y|x, z))`,
    optionally divided by the number of target tokens.

    Args:
        padding_id: int, label id marking padding.
        label_smoothing: float in [0, 1).
        normalize_by_length: bool, divide each example's NLL by its number
            of target tokens.
        name: str, name of the loss.
        reduction: Keras reduction.

    Example:

    >>> import numpy as np
    >>> from keras_ragkd.rag.marginalization import add_document_log_probs
    >>> lp = np.log(np.full((1, 2, 2, 4), 0.25, "float32"))
    >>> joint = add_document_log_probs(np.log([[0.5, 0.5]]), lp)
    >>> round(float(RagSequenceLoss()(np.array([[1, 2]]), joint)), 4)
    2.7726
    """

    def __init__(
        self,
        padding_id=0,
        label_smoothing=0.0,
        normalize_by_length=False,
        name="rag_sequence_loss",
        reduction="sum_over_batch_size",
    ):
        super().__init__(name=name, reduction=reduction)
        self.padding_id = int(padding_id)
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.normalize_by_length = bool(normalize_by_length)

    def call(self, y_true, y_pred):
        labels = tf.cast(y_true, "int32")
        nll = -sequence_log_likelihood(
            labels,
            y_pred,
            padding_id=self.padding_id,
            label_smoothing=self.label_smoothing,
        )
        if self.normalize_by_length:
            lengths = tf.reduce_sum(
                tf.cast(tf.not_equal(labels, self.padding_id), "float32"), axis=-1
            )
            nll = nll / tf.maximum(lengths, 1.0)
        return nll

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "padding_id": self.padding_id,
                "label_smoothing": self.label_smoothing,
                "normalize_by_length": self.normalize_by_length,
            }
        )
        return config
