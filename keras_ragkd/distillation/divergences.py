"""Per-position divergences between teacher and student distributions.

Every function works in float32 over the last axis and returns one value per
position (the input shape without its last axis); reduction and masking are
the caller's (see `losses.DistillationLoss`). Terms where a probability is
exactly zero count as zero, so `-inf` log-probabilities (a token a model
rules out) stay finite.
"""

import numpy as np
from keras import ops

from keras_ragkd.distillation import top_k_tail
from keras_ragkd.validation import check_number


def tempered_log_probs(values, temperature):
    """`log_softmax(values / T)` in float32: logits or log-probabilities at `T`.

    Log-probabilities are logits whose normaliser is zero, so both give the
    same tempered distribution.

    Args:
        values: tensor `(..., vocab)` of logits or log-probabilities.
        temperature: positive scalar.

    Returns:
        A float32 tensor of log-probabilities, the shape of `values`.

    Example:

    >>> import numpy as np
    >>> lp = tempered_log_probs(np.log([[0.5, 0.25, 0.25]]), 1.0)
    >>> np.round(np.exp(np.asarray(lp, "float64")), 3).tolist()
    [[0.5, 0.25, 0.25]]
    """
    temperature = ops.cast(temperature, "float32")
    return ops.log_softmax(ops.cast(values, "float32") / temperature, axis=-1)


def _kl(log_p, log_q):
    """`KL(p ‖ q)` over the last axis from log-probabilities, 0 where `p = 0`."""
    p = ops.exp(log_p)
    terms = ops.where(p > 0.0, p * (log_p - log_q), 0.0)
    return ops.sum(terms, axis=-1)


def forward_kl(teacher_log_probs, student_log_probs):
    """`KL(teacher ‖ student)`: the classic distillation divergence (mode covering).

    Args:
        teacher_log_probs: `(..., vocab)` teacher log-probabilities.
        student_log_probs: `(..., vocab)` student log-probabilities.

    Returns:
        A float32 tensor `(...)`.

    Example:

    >>> import numpy as np
    >>> p, q = np.log([[0.5, 0.5]]), np.log([[0.9, 0.1]])
    >>> round(float(forward_kl(p, q)[0]), 4)
    0.5108
    """
    return _kl(ops.cast(teacher_log_probs, "float32"), ops.cast(student_log_probs, "float32"))


def reverse_kl(teacher_log_probs, student_log_probs):
    """`KL(student ‖ teacher)`, as in MiniLLM (mode seeking).

    Args:
        teacher_log_probs: `(..., vocab)` teacher log-probabilities.
        student_log_probs: `(..., vocab)` student log-probabilities.

    Returns:
        A float32 tensor `(...)`.

    Example:

    >>> import numpy as np
    >>> p, q = np.log([[0.5, 0.5]]), np.log([[0.9, 0.1]])
    >>> round(float(reverse_kl(p, q)[0]), 4)
    0.3681
    """
    return _kl(ops.cast(student_log_probs, "float32"), ops.cast(teacher_log_probs, "float32"))


def generalized_jsd(teacher_log_probs, student_log_probs, beta):
    """Generalised Jensen–Shannon divergence JSD(β) of GKD (Agarwal et al., 2024).

    With the mixture `m = β·p + (1 − β)·q` of the teacher `p` and the student
    `q`: `β·KL(p ‖ m) + (1 − β)·KL(q ‖ m)` for `0 < β < 1`. As in TRL's
    `GKDTrainer`, the end points are defined as the divergences the family
    interpolates between: `β = 0` is the forward `KL(p ‖ q)` and `β = 1` the
    reverse `KL(q ‖ p)`; `β = 0.5` is the symmetric Jensen–Shannon
    divergence.

    Args:
        teacher_log_probs: `(..., vocab)` teacher log-probabilities.
        student_log_probs: `(..., vocab)` student log-probabilities.
        beta: Python float in `[0, 1]`.

    Returns:
        A float32 tensor `(...)`.

    Example:

    >>> import numpy as np
    >>> p, q = np.log([[0.5, 0.5]]), np.log([[0.9, 0.1]])
    >>> round(float(generalized_jsd(p, q, 0.5)[0]), 4)
    0.1017
    >>> float(generalized_jsd(p, q, 0.0)[0]) == float(forward_kl(p, q)[0])
    True
    """
    beta = float(beta)
    if beta == 0.0:
        return forward_kl(teacher_log_probs, student_log_probs)
    if beta == 1.0:
        return reverse_kl(teacher_log_probs, student_log_probs)
    log_p = ops.cast(teacher_log_probs, "float32")
    log_q = ops.cast(student_log_probs, "float32")
    log_m = ops.logaddexp(log_p + _log(beta), log_q + _log(1.0 - beta))
    return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)


def _log(value):
    return ops.log(ops.convert_to_tensor(value, "float32"))


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
    if isinstance(temperature, (int, float)):
        check_temperature(temperature)
    check_same_vocabulary(_static_shape(teacher_logits), _static_shape(student_logits))
    temperature = ops.cast(temperature, "float32")
    divergence = forward_kl(
        tempered_log_probs(teacher_logits, temperature),
        tempered_log_probs(student_logits, temperature),
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
    likely tokens and one bucket for everything else (see `top_k_tail`). The
    teacher side comes from a cache (`TeacherCache(top_k=k)`) computed at the
    cache's temperature, so `temperature` must equal the cache's temperature
    for the rest bucket to be exact. The student side is exact: its rest
    bucket is the log of the student's probability mass outside the teacher's
    top-k.

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
    teacher_buckets = top_k_tail.teacher_buckets(
        teacher_top_logits, teacher_rest_log_mass, temperature
    )
    student_buckets = top_k_tail.student_buckets(
        tempered_log_probs(student_logits, temperature), teacher_top_indices
    )
    return ops.square(temperature) * forward_kl(teacher_buckets, student_buckets)


def check_temperature(temperature):
    """Refuses a temperature that is not a number `> 0`.

    Example:

    >>> check_temperature(2.0)
    """
    check_number("temperature", temperature, low=0, low_inclusive=False)


def check_same_vocabulary(teacher_shape, student_shape):
    """Refuses teacher and student outputs of different ranks or vocabularies.

    Args:
        teacher_shape: shape of the teacher's outputs.
        student_shape: shape of the student's outputs.

    Example:

    >>> check_same_vocabulary((None, 5), (None, 5))
    """
    teacher_shape, student_shape = tuple(teacher_shape), tuple(student_shape)
    if len(teacher_shape) != len(student_shape) or (
        teacher_shape[-1] is not None
        and student_shape[-1] is not None
        and teacher_shape[-1] != student_shape[-1]
    ):
        raise ValueError(
            "The teacher and student must output distributions over the same "
            "vocabulary (same rank and last-axis size; map one vocabulary "
            "onto the other first). Received: "
            f"teacher output shape={teacher_shape}, "
            f"student output shape={student_shape}"
        )


def _static_shape(x):
    """The shape known before running (`None` for dynamic dimensions)."""
    return tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
