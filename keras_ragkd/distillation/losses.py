"""Per-example knowledge-distillation losses computed from logits."""

import keras
from keras import ops


def kd_divergence(teacher_logits, student_logits, temperature):
    """Temperature-scaled KL divergence between teacher and student logits.

    Computes `T² · KL(softmax(t / T) ‖ softmax(s / T))` over the last axis
    with `log_softmax` in float32 (no clipping), one value per position: the
    result has the shape of the logits without their last axis, so
    `(batch,)` for `(batch, vocab)` logits and `(batch, time)` for
    `(batch, time, vocab)` logits. Reduction (and masking) is left to the
    caller.

    Args:
        teacher_logits: tensor `(..., vocab)`, the teacher's logits.
        student_logits: tensor `(..., vocab)`, the student's logits.
        temperature: positive scalar (Python number or tensor).

    Returns:
        A float32 tensor with the logits' shape minus the last axis.

    Example:

    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]], "float32")
    >>> s = np.array([[0.5, 0.2, 0.1]], "float32")
    >>> loss = kd_divergence(t, s, temperature=2.0)
    >>> tuple(loss.shape)
    (1,)
    """
    temperature = ops.cast(temperature, "float32")
    teacher_log_probs = ops.log_softmax(
        ops.cast(teacher_logits, "float32") / temperature, axis=-1
    )
    student_log_probs = ops.log_softmax(
        ops.cast(student_logits, "float32") / temperature, axis=-1
    )
    teacher_probs = ops.exp(teacher_log_probs)
    divergence = ops.sum(
        teacher_probs * (teacher_log_probs - student_log_probs), axis=-1
    )
    return ops.square(temperature) * divergence


def topk_kd_divergence(
    teacher_top_logits,
    teacher_top_indices,
    teacher_rest_log_mass,
    student_logits,
    temperature,
):
    """KD divergence against a teacher stored as its top-k logits + rest mass.

    The vocabulary is collapsed into `k + 1` buckets: the teacher's `k` most
    likely tokens and one bucket for everything else. The teacher side comes
    from a cache (`TeacherCache(top_k=k)`) computed at the cache's
    temperature, so `temperature` must equal the cache's temperature for the
    rest bucket to be exact. The student side is exact: its rest bucket is the
    log of the student's probability mass outside the teacher's top-k.

    Args:
        teacher_top_logits: `(..., k)` teacher logits of its top-k tokens.
        teacher_top_indices: `(..., k)` int token ids of those logits.
        teacher_rest_log_mass: `(...)` log of the teacher's probability mass
            outside its top-k, at the cache temperature.
        student_logits: `(..., vocab)` the student's logits.
        temperature: positive scalar.

    Returns:
        A float32 tensor `(...)`: `T² · KL` over the `k + 1` buckets.

    Example:

    >>> import numpy as np
    >>> logits = np.array([[3.0, 1.0, 0.0, -1.0]], "float32")
    >>> top = np.array([[3.0, 1.0]], "float32")
    >>> idx = np.array([[0, 1]], "int32")
    >>> rest = np.log(1 - np.exp(top / 2 - np.log(np.exp(logits / 2).sum())).sum(-1))
    >>> loss = topk_kd_divergence(top, idx, rest, logits, temperature=2.0)
    >>> float(loss[0]) < 1e-5
    True
    """
    temperature = ops.cast(temperature, "float32")
    teacher_top_logits = ops.cast(teacher_top_logits, "float32")
    teacher_rest_log_mass = ops.cast(teacher_rest_log_mass, "float32")
    rest_mass = ops.exp(teacher_rest_log_mass)
    # Teacher log-probabilities of the top-k tokens: the k logits share the
    # normaliser whose rest is `rest_mass`, i.e.
    # log p_i = z_i/T - log(sum_top exp(z/T)) + log(1 - rest_mass).
    scaled_top = teacher_top_logits / temperature
    teacher_top_log_probs = (
        scaled_top
        - ops.logsumexp(scaled_top, axis=-1, keepdims=True)
        + ops.expand_dims(ops.log1p(-rest_mass), -1)
    )
    student_log_probs = ops.log_softmax(
        ops.cast(student_logits, "float32") / temperature, axis=-1
    )
    student_top_log_probs = ops.take_along_axis(
        student_log_probs, ops.cast(teacher_top_indices, "int32"), axis=-1
    )
    student_top_mass = ops.minimum(
        ops.sum(ops.exp(student_top_log_probs), axis=-1), 1.0 - 1e-7
    )
    student_rest_log_mass = ops.log1p(-student_top_mass)
    top_term = ops.sum(
        ops.exp(teacher_top_log_probs)
        * (teacher_top_log_probs - student_top_log_probs),
        axis=-1,
    )
    rest_term = rest_mass * (teacher_rest_log_mass - student_rest_log_mass)
    return ops.square(temperature) * (top_term + rest_term)


def hard_loss_values(loss, y_true, y_pred):
    """Unreduced values of a Keras loss: one per example (or per token).

    Args:
        loss: a `keras.losses.Loss` instance or a loss function
            `fn(y_true, y_pred)`.
        y_true: labels.
        y_pred: predictions (the student's logits).

    Returns:
        A float32 tensor, `(batch,)` or `(batch, time)`.

    Example:

    >>> import numpy as np, keras
    >>> values = hard_loss_values(
    ...     keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ...     np.array([0, 1]), np.zeros((2, 3), "float32"))
    >>> tuple(values.shape)
    (2,)
    """
    if isinstance(loss, keras.losses.Loss):
        values = loss.call(y_true, y_pred)
    else:
        values = loss(y_true, y_pred)
    return ops.cast(values, "float32")
