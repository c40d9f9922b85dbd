"""A distribution kept as its top-k tokens plus one tail bucket for the rest.

A `TeacherCache(top_k=k)` stores, per position, the teacher's `k` largest
logits, their token ids and the log of the probability mass outside them (at
the cache's temperature). Both distributions are then compared over `k + 1`
buckets: the teacher's top-k tokens and the tail. With `k` equal to the
vocabulary (an empty tail) this is the full distribution.
"""

import math

import tensorflow as tf
from keras import ops

# The smallest tail mass kept (an empty tail stays finite), as `TeacherCache`.
MIN_REST_MASS = 1e-30
_LOG_MIN_REST_MASS = math.log(MIN_REST_MASS)


def teacher_buckets(top_logits, rest_log_mass, temperature):
    """Teacher log-probabilities `(..., k + 1)` of its top-k tokens and its tail.

    The `k` logits share the normaliser whose remainder is the rest mass:
    `log p_i = z_i/T − logsumexp(z/T) + log(1 − rest)`.

    Args:
        top_logits: `(..., k)` the teacher's top-k logits.
        rest_log_mass: `(...)` log of its mass outside the top-k at `T`.
        temperature: the temperature the rest mass was computed at.

    Returns:
        A float32 tensor `(..., k + 1)`, the tail last.

    Example:

    >>> import numpy as np
    >>> buckets = teacher_buckets(np.zeros((1, 2)), np.log([0.5]), 1.0)
    >>> np.round(np.exp(np.asarray(buckets, "float64")), 3).tolist()
    [[0.25, 0.25, 0.5]]
    """
    rest_log_mass = ops.cast(rest_log_mass, "float32")
    scaled = ops.cast(top_logits, "float32") / ops.cast(temperature, "float32")
    top = (
        scaled
        - ops.logsumexp(scaled, axis=-1, keepdims=True)
        + ops.expand_dims(ops.log1p(-ops.exp(rest_log_mass)), -1)
    )
    return ops.concatenate([top, ops.expand_dims(rest_log_mass, -1)], axis=-1)


def student_buckets(log_probs, top_indices):
    """Student log-probabilities `(..., k + 1)` of the teacher's top-k and the rest.

    The rest is the log-sum-exp of the student's log-probabilities outside
    the top-k, not `log(1 − Σ top)`: float32 rounding turns the latter into a
    spurious mass of ~1e-7 when the top-k hold almost everything, which a
    reverse KL against an empty teacher tail would charge for.

    Args:
        log_probs: `(..., vocab)` the student's (tempered) log-probabilities.
        top_indices: `(..., k)` the teacher's top-k token ids.

    Returns:
        A float32 tensor `(..., k + 1)`, the tail last.

    Example:

    >>> import numpy as np
    >>> buckets = student_buckets(np.log([[0.5, 0.3, 0.2]]), np.array([[1]]))
    >>> np.round(np.exp(np.asarray(buckets, "float64")), 3).tolist()
    [[0.3, 0.7]]
    """
    log_probs = ops.cast(log_probs, "float32")
    top_indices = ops.cast(top_indices, "int32")
    top = ops.take_along_axis(log_probs, top_indices, axis=-1)
    outside = ops.where(_is_top(top_indices, tf.shape(log_probs)), -float("inf"), log_probs)
    rest = ops.maximum(ops.logsumexp(outside, axis=-1), _LOG_MIN_REST_MASS)
    return ops.concatenate([top, ops.expand_dims(rest, -1)], axis=-1)


def _is_top(top_indices, shape):
    """Boolean `(..., vocab)` of `shape`, true at each position's `top_indices`."""
    flat = tf.reshape(top_indices, [-1, tf.shape(top_indices)[-1]])
    positions, k = tf.shape(flat)[0], tf.shape(flat)[1]
    rows = tf.repeat(tf.range(positions), k)
    pairs = tf.stack([rows, tf.reshape(flat, [-1])], axis=1)
    hits = tf.scatter_nd(pairs, tf.ones_like(rows), tf.stack([positions, shape[-1]]))
    return tf.reshape(hits > 0, shape)


def _rest_log_mass(top_log_probs):
    """`log(1 − Σ exp(top))` floored at `MIN_REST_MASS`, as `TeacherCache` stores it."""
    top_log_mass = ops.logsumexp(top_log_probs, axis=-1)
    return ops.log(ops.maximum(-ops.expm1(top_log_mass), MIN_REST_MASS))


def from_logits(logits, k, temperature):
    """The top-k fields a cache would store for `logits`: `(top, indices, rest)`.

    Lets a live teacher be compared through the same `k + 1` buckets as a
    cached one (e.g. to measure what a top-k cache loses).

    Args:
        logits: `(..., vocab)` teacher logits (or log-probabilities).
        k: number of tokens kept, `1 <= k <= vocab`.
        temperature: positive scalar; the rest mass is taken at it.

    Returns:
        `(top_logits (..., k), top_indices (..., k) int32, rest_log_mass (...))`.

    Example:

    >>> import numpy as np
    >>> top, idx, rest = from_logits(np.log([[0.2, 0.5, 0.3]]), 2, 1.0)
    >>> np.asarray(idx).tolist(), round(float(np.exp(rest[0])), 3)
    ([[1, 2]], 0.2)
    """
    logits = ops.cast(logits, "float32")
    top, indices = ops.top_k(logits, k)
    log_probs = ops.log_softmax(logits / ops.cast(temperature, "float32"), axis=-1)
    rest = _rest_log_mass(ops.take_along_axis(log_probs, indices, axis=-1))
    return top, ops.cast(indices, "int32"), rest
