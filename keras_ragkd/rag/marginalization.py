"""The RAG marginalisations over retrieved documents (Lewis et al. 2020).

`P(y|x) = sum_z P(z|x) P(y|x, z)` with `P(z|x) = softmax(doc_scores)`, computed
in float32 log space with `logsumexp`. Invalid documents (the retriever found
fewer than `num_docs` passages) get `P(z|x) = 0` and drop out of every sum.

- RAG-Token marginalises each output token:
  `log P(y_t|x, y_<t) = logsumexp_z(log P(z|x) + log P(y_t|x, z, y_<t))`.
- RAG-Sequence marginalises whole sequences:
  `log P(y|x) = logsumexp_z(log P(z|x) + sum_t log P(y_t|x, z, y_<t))`.
  `add_document_log_probs` folds `log P(z|x)` into the first decoding step, so
  summing a document's token log-probabilities over time gives its joint
  `log P(z|x) + log P(y|x, z)` (the layout HF's RAG-Sequence loss uses too).
"""

import tensorflow as tf

# Log-probability given to documents that are masked out. Finite, so that
# `0 * NEGATIVE_LOG_PROB` and gradients stay NaN-free.
NEGATIVE_LOG_PROB = -1e9


def document_log_probs(doc_scores, doc_mask=None):
    """Returns `log P(z|x)`, a masked log-softmax over the retrieved documents.

    Args:
        doc_scores: float tensor `(batch, num_docs)`, retrieval scores.
        doc_mask: optional bool tensor `(batch, num_docs)`, False for invalid
            documents.

    Returns:
        float32 tensor `(batch, num_docs)`; `NEGATIVE_LOG_PROB` where masked.

    Example:

    >>> import numpy as np
    >>> lp = document_log_probs(np.array([[1.0, 1.0, 5.0]]), np.array([[True, True, False]]))
    >>> np.round(np.exp(lp.numpy()), 3).tolist()
    [[0.5, 0.5, 0.0]]
    """
    doc_scores = tf.cast(doc_scores, "float32")
    if doc_mask is None:
        return tf.nn.log_softmax(doc_scores, axis=-1)
    doc_mask = tf.cast(doc_mask, "bool")
    masked_scores = tf.where(doc_mask, doc_scores, NEGATIVE_LOG_PROB)
    log_probs = tf.nn.log_softmax(masked_scores, axis=-1)
    return tf.where(doc_mask, log_probs, NEGATIVE_LOG_PROB)


def rag_token_marginal(doc_log_probs, token_log_probs):
    """Per-token marginal over documents (RAG-Token).

    Args:
        doc_log_probs: float tensor `(batch, num_docs)`, `log P(z|x)`.
        token_log_probs: float tensor `(batch, num_docs, time, vocab)`,
            `log P(y_t|x, z, y_<t)` (normalised over `vocab`).

    Returns:
        float32 tensor `(batch, time, vocab)` of log-probabilities.

    Example:

    >>> import numpy as np
    >>> doc = np.log([[0.25, 0.75]])
    >>> tokens = np.log([[[[0.2, 0.8]], [[0.6, 0.4]]]])
    >>> np.round(np.exp(rag_token_marginal(doc, tokens).numpy()), 3).tolist()
    [[[0.5, 0.5]]]
    """
    doc_log_probs = tf.cast(doc_log_probs, "float32")
    token_log_probs = tf.cast(token_log_probs, "float32")
    joint = doc_log_probs[:, :, None, None] + token_log_probs
    return tf.reduce_logsumexp(joint, axis=1)


def add_document_log_probs(doc_log_probs, token_log_probs):
    """Adds `log P(z|x)` to every entry of the first decoding step (RAG-Sequence).

    Args:
        doc_log_probs: float tensor `(batch, num_docs)`.
        token_log_probs: float tensor `(batch, num_docs, time, vocab)`.

    Returns:
        float32 tensor `(batch, num_docs, time, vocab)`.

    Example:

    >>> import numpy as np
    >>> out = add_document_log_probs(np.zeros((1, 2)), np.zeros((1, 2, 3, 4)))
    >>> out.shape
    TensorShape([1, 2, 3, 4])
    """
    doc_log_probs = tf.cast(doc_log_probs, "float32")
    token_log_probs = tf.cast(token_log_probs, "float32")
    first_step = token_log_probs[:, :, :1] + doc_log_probs[:, :, None, None]
    return tf.concat([first_step, token_log_probs[:, :, 1:]], axis=2)


def sequence_log_likelihood(labels, joint_log_probs, padding_id=0, label_smoothing=0.0):
    """Marginal sequence log-likelihood `log P(y|x)` (RAG-Sequence).

    Args:
        labels: int tensor `(batch, time)`, target ids; `padding_id` marks
            padding (the first step always counts: it holds `log P(z|x)`).
        joint_log_probs: float tensor `(batch, num_docs, time, vocab)` from
            `add_document_log_probs`.
        padding_id: int, the id of padding labels.
        label_smoothing: float in [0, 1): mixes in the document-marginal of
            the mean log-probability over the vocabulary.

    Returns:
        float32 tensor `(batch,)`.

    Example:

    >>> import numpy as np
    >>> lp = np.log(np.full((1, 2, 2, 4), 0.25, "float32"))
    >>> joint = add_document_log_probs(np.log([[0.5, 0.5]]), lp)
    >>> round(float(sequence_log_likelihood(np.array([[1, 2]]), joint)[0]), 4)
    -2.7726
    """
    joint_log_probs = tf.cast(joint_log_probs, "float32")
    labels = tf.cast(labels, "int32")
    num_docs = tf.shape(joint_log_probs)[1]
    valid = tf.not_equal(labels, padding_id)
    first_step = tf.one_hot(0, tf.shape(labels)[1], on_value=True, off_value=False)
    valid = tf.logical_or(valid, first_step[None, :])
    weights = tf.cast(valid, "float32")[:, None, :]
    tiled_labels = tf.tile(labels[:, None, :], [1, num_docs, 1])
    picked = tf.gather(joint_log_probs, tiled_labels, axis=-1, batch_dims=3)
    log_likelihood = tf.reduce_logsumexp(
        tf.reduce_sum(picked * weights, axis=-1), axis=1
    )
    if not label_smoothing:
        return log_likelihood
    mean_over_vocab = tf.reduce_mean(joint_log_probs, axis=-1)
    smooth = tf.reduce_logsumexp(tf.reduce_sum(mean_over_vocab * weights, axis=-1), axis=1)
    return (1.0 - label_smoothing) * log_likelihood + label_smoothing * smooth
