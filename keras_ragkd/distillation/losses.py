"""Distillation losses: serialisable objects comparing teacher and student outputs.

Each loss turns teacher and student outputs (logits, or log-probabilities:
both give the same tempered distribution) into `log_softmax(· / T)` in
float32 and returns `T² · D(teacher, student)` per position, for a divergence
`D`. The teacher may also be a cached batch's dict of top-k fields (see
`top_k_tail`): both sides are then compared over the `k + 1` buckets.

Called on its own, a loss is a weighted mean over the valid positions of the
global batch (sample weights, Keras masks, `ignore_class`; the count summed
over replicas). Inside the `Distiller`, the same per-position values are
weighted with the positions the hard loss counts.
"""

import keras
import tensorflow as tf
from keras import ops

from keras_ragkd.distillation import cached_batch
from keras_ragkd.distillation import divergences
from keras_ragkd.distillation import top_k_tail
from keras_ragkd.validation import check_integer
from keras_ragkd.validation import check_number
from keras_ragkd.distillation.divergences import check_same_vocabulary  # noqa: F401 (API)
from keras_ragkd.distillation.divergences import check_temperature  # noqa: F401 (API)
from keras_ragkd.distillation.position_weights import combine_masks
from keras_ragkd.distillation.position_weights import global_weighted_mean
from keras_ragkd.distillation.position_weights import valid_weights


class DistillationLoss:
    """Base class: `T² · D(teacher, student)` over tempered output distributions.

    Subclasses implement `divergence(teacher_log_probs, student_log_probs)`,
    one value per position. The method names of `keras.distillation`'s
    `DistillationLoss` (`compute_loss`, `validate_outputs`,
    `validate_model_compatibility`) are provided too.

    Args:
        temperature: the softmax temperature `T > 0` of this loss, or `None`
            (default) to use the `Distiller`'s (schedulable) temperature;
            `1.0` when called on its own.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> class TotalVariation(DistillationLoss):
    ...     def divergence(self, teacher_log_probs, student_log_probs):
    ...         gap = ops.exp(teacher_log_probs) - ops.exp(student_log_probs)
    ...         return 0.5 * ops.sum(ops.abs(gap), axis=-1)
    >>> t, s = np.log([[0.5, 0.5]]), np.log([[0.9, 0.1]])
    >>> round(float(TotalVariation()(t, s)), 4)
    0.4
    """

    def __init__(self, temperature=None):
        if temperature is not None:
            check_temperature(temperature)
        self.temperature = temperature

    def divergence(self, teacher_log_probs, student_log_probs):
        """Per-position divergence of two log-probability tensors `(..., vocab)`."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement `divergence`. "
            f"Received: loss={self!r}"
        )

    def per_position(self, teacher_outputs, student_outputs, temperature=None):
        """`T² · D` per position (the outputs' shape without the last axis).

        Args:
            teacher_outputs: `(..., vocab)` teacher logits or log-probabilities,
                or a dict of cached teacher fields (`cached_batch` keys).
            student_outputs: `(..., vocab)` student logits or log-probabilities.
            temperature: the temperature to use when the loss has none.

        Returns:
            A float32 tensor.
        """
        temperature = self._temperature(temperature)
        student_log_probs = divergences.tempered_log_probs(student_outputs, temperature)
        teacher_log_probs, student_log_probs = self._compared_log_probs(
            teacher_outputs, student_log_probs, temperature
        )
        divergence = self.divergence(teacher_log_probs, student_log_probs)
        return ops.square(temperature) * divergence

    def __call__(self, teacher_outputs, student_outputs, sample_weight=None, mask=None,
                 labels=None, ignore_class=None, temperature=None):
        """The weighted mean of `per_position` over the valid positions.

        Args:
            teacher_outputs: as in `per_position`.
            student_outputs: as in `per_position`.
            sample_weight: optional per-example or per-position weights.
            mask: optional boolean mask of the valid positions; Keras masks
                attached to the outputs count too.
            labels: optional labels, with `ignore_class`.
            ignore_class: label value of positions that do not count.
            temperature: the temperature to use when the loss has none.

        Returns:
            A float32 scalar: `Σ w·values / Σ w`, the count summed over the
            replicas of a `tf.distribute` strategy (so each replica returns
            its share and the shares add up to the global mean).
        """
        values = self.per_position(teacher_outputs, student_outputs, temperature)
        mask = combine_masks(mask, getattr(student_outputs, "_keras_mask", None))
        if not isinstance(teacher_outputs, dict):
            mask = combine_masks(mask, getattr(teacher_outputs, "_keras_mask", None))
        weights = valid_weights(labels, student_outputs, sample_weight, mask, ignore_class)
        return global_weighted_mean(values, weights)

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """`keras.distillation.DistillationLoss` API: the scalar loss."""
        return self(teacher_outputs, student_outputs, **kwargs)

    def validate_outputs(self, teacher_outputs, student_outputs):
        """Refuses outputs of different structures or vocabularies."""
        keras.tree.assert_same_structure(teacher_outputs, student_outputs)
        for teacher, student in zip(
            keras.tree.flatten(teacher_outputs), keras.tree.flatten(student_outputs)
        ):
            check_same_vocabulary(teacher.shape, student.shape)

    def validate_model_compatibility(self, teacher, student):
        """Nothing to check beyond what the `Distiller` checks."""

    def get_config(self):
        return {"temperature": self.temperature}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({arguments})"

    def _temperature(self, temperature):
        if self.temperature is not None:
            return ops.convert_to_tensor(self.temperature, "float32")
        if temperature is None:
            return ops.ones((), "float32")
        return ops.cast(temperature, "float32")

    def _compared_log_probs(self, teacher_outputs, student_log_probs, temperature):
        if isinstance(teacher_outputs, dict) and cached_batch.TEACHER_TOP_LOGITS in teacher_outputs:
            return _cached_top_k_buckets(teacher_outputs, student_log_probs, temperature)
        if isinstance(teacher_outputs, dict):
            teacher_outputs = teacher_outputs[cached_batch.TEACHER_LOGITS]
        teacher_log_probs = divergences.tempered_log_probs(teacher_outputs, temperature)
        return teacher_log_probs, student_log_probs


def _cached_top_k_buckets(teacher_outputs, student_log_probs, temperature):
    if cached_batch.CACHE_TEMPERATURE in teacher_outputs:
        tf.debugging.assert_near(
            ops.reshape(teacher_outputs[cached_batch.CACHE_TEMPERATURE], (-1,))[:1],
            ops.reshape(temperature, (1,)),
            message=(
                "A top-k TeacherCache is exact only at the temperature it "
                "was built with; build the cache at the distiller's "
                "temperature (or use top_k=None to schedule it)."
            ),
        )
    teacher = top_k_tail.teacher_buckets(
        teacher_outputs[cached_batch.TEACHER_TOP_LOGITS],
        teacher_outputs[cached_batch.TEACHER_REST_LOG_MASS],
        temperature,
    )
    student = top_k_tail.student_buckets(
        student_log_probs, teacher_outputs[cached_batch.TEACHER_TOP_INDICES]
    )
    return teacher, student


@keras.saving.register_keras_serializable(package="keras_ragkd")
class ForwardKL(DistillationLoss):
    """`T² · KL(softmax(t/T) ‖ softmax(s/T))`: classic (Hinton) distillation.

    Args:
        temperature: `None` (the Distiller's) or a number `> 0`.

    Example:

    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]], "float32")
    >>> s = np.array([[0.5, 0.2, 0.1]], "float32")
    >>> round(float(ForwardKL(temperature=2.0)(t, s)), 4)
    0.5695
    """

    def divergence(self, teacher_log_probs, student_log_probs):
        return divergences.forward_kl(teacher_log_probs, student_log_probs)


@keras.saving.register_keras_serializable(package="keras_ragkd")
class ReverseKL(DistillationLoss):
    """`T² · KL(softmax(s/T) ‖ softmax(t/T))`, MiniLLM's mode-seeking divergence.

    Args:
        temperature: `None` (the Distiller's) or a number `> 0`.

    Example:

    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]], "float32")
    >>> s = np.array([[0.5, 0.2, 0.1]], "float32")
    >>> round(float(ReverseKL(temperature=2.0)(t, s)), 4)
    0.5961
    """

    def divergence(self, teacher_log_probs, student_log_probs):
        return divergences.reverse_kl(teacher_log_probs, student_log_probs)


@keras.saving.register_keras_serializable(package="keras_ragkd")
class GeneralizedJSD(DistillationLoss):
    """`T² · JSD(β)` of GKD: `β = 0` forward KL, `β = 1` reverse KL.

    See `divergences.generalized_jsd` for the definition (as in TRL's
    `GKDTrainer`, which applies no `T²`).

    Args:
        beta: float in `[0, 1]`, the weight of the teacher in the mixture.
        temperature: `None` (the Distiller's) or a number `> 0`.

    Example:

    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]], "float32")
    >>> s = np.array([[0.5, 0.2, 0.1]], "float32")
    >>> round(float(GeneralizedJSD(beta=0.5, temperature=2.0)(t, s)), 4)
    0.1433
    """

    def __init__(self, beta=0.5, temperature=None):
        super().__init__(temperature=temperature)
        # The teacher's weight in the JSD mixture.
        self.beta = check_number("beta", beta, 0, 1)

    def divergence(self, teacher_log_probs, student_log_probs):
        return divergences.generalized_jsd(teacher_log_probs, student_log_probs, self.beta)

    def get_config(self):
        return {"beta": self.beta, **super().get_config()}


@keras.saving.register_keras_serializable(package="keras_ragkd")
class TopKTailKL(ForwardKL):
    """Forward KL over the teacher's top-k tokens plus one tail bucket.

    With a `TeacherCache(top_k=k)` this is what the `Distiller` computes
    from the cached fields (as every loss here does). With a live teacher's
    full logits it keeps only their top `top_k` and the tail, as such a cache
    would: a way to measure what a top-k cache costs. With `top_k` equal to
    the vocabulary it is the full forward KL.

    Args:
        top_k: number of teacher tokens kept from full logits; `None` only
            with cached top-k teachers (which set `k` themselves).
        temperature: `None` (the Distiller's) or a number `> 0`.

    Example:

    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]], "float32")
    >>> s = np.array([[0.5, 0.2, 0.1]], "float32")
    >>> full = float(ForwardKL(temperature=2.0)(t, s))
    >>> abs(float(TopKTailKL(top_k=3, temperature=2.0)(t, s)) - full) < 1e-5
    True
    """

    def __init__(self, top_k=None, temperature=None):
        super().__init__(temperature=temperature)
        self.top_k = None if top_k is None else check_integer("top_k", top_k)

    def _compared_log_probs(self, teacher_outputs, student_log_probs, temperature):
        if isinstance(teacher_outputs, dict) and cached_batch.TEACHER_TOP_LOGITS in teacher_outputs:
            return _cached_top_k_buckets(teacher_outputs, student_log_probs, temperature)
        if isinstance(teacher_outputs, dict):
            teacher_outputs = teacher_outputs[cached_batch.TEACHER_LOGITS]
        if self.top_k is None:
            raise ValueError(
                f"`{type(self).__name__}(top_k=None)` reads k from a top-k TeacherCache; "
                "with full teacher logits, give `top_k`. "
                "Received: top_k=None with full teacher logits"
            )
        top, indices, rest = top_k_tail.from_logits(teacher_outputs, self.top_k, temperature)
        fields = {
            cached_batch.TEACHER_TOP_LOGITS: top,
            cached_batch.TEACHER_TOP_INDICES: indices,
            cached_batch.TEACHER_REST_LOG_MASS: rest,
        }
        return _cached_top_k_buckets(fields, student_log_probs, temperature)

    def get_config(self):
        return {"top_k": self.top_k, **super().get_config()}


@keras.saving.register_keras_serializable(package="keras_ragkd")
class TopKKL(TopKTailKL):
    """Forward KL over the teacher's top-k tokens alone, renormalised, no tail.

    What a cache that keeps only the top-k log-probabilities allows: both
    distributions are restricted to the teacher's `k` tokens and renormalised
    there, so the student is told nothing about the mass outside them (the
    tail bucket of `TopKTailKL` is dropped). Kept to measure what the tail
    buys; with `k` equal to the vocabulary it is the full forward KL.
    Its arguments are `TopKTailKL`'s.

    Example:

    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -9.0]], "float32")
    >>> s = np.array([[2.0, 0.0, 5.0]], "float32")
    >>> float(TopKKL(top_k=2)(t, s)) < 1e-6  # equal on the top 2, tail ignored
    True
    >>> float(TopKTailKL(top_k=2)(t, s)) > 1.0
    True
    """

    def _compared_log_probs(self, teacher_outputs, student_log_probs, temperature):
        teacher, student = super()._compared_log_probs(
            teacher_outputs, student_log_probs, temperature)
        return (ops.log_softmax(teacher[..., :-1], axis=-1),
                ops.log_softmax(student[..., :-1], axis=-1))


_NAMES = {
    "forward_kl": ForwardKL,
    "kl_divergence": ForwardKL,
    "reverse_kl": ReverseKL,
    "jsd": GeneralizedJSD,
    "generalized_jsd": GeneralizedJSD,
    "top_k_tail_kl": TopKTailKL,
    "top_k_kl": TopKKL,
}


def get(identifier):
    """A distillation loss from an instance, a name or a serialized config.

    Names: `"forward_kl"` (also `"kl_divergence"`), `"reverse_kl"`, `"jsd"`
    (`β = 0.5`; also `"generalized_jsd"`), `"top_k_tail_kl"` (for cached
    top-k teachers) and `"top_k_kl"` (the same without the tail).

    Args:
        identifier: a `DistillationLoss`, one of the names, or the dict of
            `keras.saving.serialize_keras_object(loss)`.

    Returns:
        A `DistillationLoss`.

    Example:

    >>> get("reverse_kl")
    ReverseKL(temperature=None)
    """
    if isinstance(identifier, DistillationLoss):
        return identifier
    if isinstance(identifier, str) and identifier in _NAMES:
        return _NAMES[identifier]()
    if isinstance(identifier, dict):
        loss = keras.saving.deserialize_keras_object(identifier)
        if isinstance(loss, DistillationLoss):
            return loss
    raise ValueError(
        "A distillation loss must be a `DistillationLoss` (e.g. `ForwardKL()`, "
        f"`GeneralizedJSD(beta=0.5)`) or one of the names {sorted(_NAMES)}. "
        f"Received: distillation_loss={identifier!r}"
    )
