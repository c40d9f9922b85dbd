"""`keras.distillation`'s loss names, with this package's numerics.

Code written for `keras.distillation.Distiller` runs on our `Distiller` by
changing the import: `LogitsDistillation` and `FeatureDistillation` take the
same arguments. `LogitsDistillation(temperature, loss="kl_divergence")` is
the forward KL of the softmax at `T`, times `T²` (Keras' own divides by `T`
but applies its `"kl_divergence"` to the raw logits without a softmax unless
the loss is a `keras.losses.KLDivergence` instance); `FeatureDistillation` is
the mean squared error of hidden states, averaged over the valid positions
like every other term.
"""

import keras

from keras_ragkd.distillation import losses

_MEAN_SQUARED_ERROR_NAMES = ("mse", "mean_squared_error")


@keras.saving.register_keras_serializable(package="keras_ragkd")
class LogitsDistillation(losses.DistillationLoss):
    """Distillation of the final outputs at a temperature (Keras' name).

    Args:
        temperature: softmax temperature `T > 0` (this loss keeps its own,
            as in Keras; the Distiller's `temperature` does not change it).
        loss: the divergence: `"kl_divergence"` (forward KL, the default),
            a `keras.losses.KLDivergence` instance, or any name or object of
            `losses.get` (`"reverse_kl"`, `GeneralizedJSD(beta=0.5)`, ...).

    Example:

    >>> import numpy as np
    >>> t = np.array([[2.0, 0.0, -1.0]], "float32")
    >>> s = np.array([[0.5, 0.2, 0.1]], "float32")
    >>> round(float(LogitsDistillation(temperature=2.0).compute_loss(t, s)), 4)
    0.5695
    """

    def __init__(self, temperature=3.0, loss="kl_divergence"):
        losses.check_temperature(temperature)
        super().__init__(temperature=temperature)
        if isinstance(loss, keras.losses.KLDivergence):
            loss = "kl_divergence"
        self.loss = losses.get(loss)

    def per_position(self, teacher_outputs, student_outputs, temperature=None):
        return self.loss.per_position(teacher_outputs, student_outputs, self.temperature)

    def divergence(self, teacher_log_probs, student_log_probs):
        return self.loss.divergence(teacher_log_probs, student_log_probs)

    def get_config(self):
        return {
            "temperature": self.temperature,
            "loss": keras.saving.serialize_keras_object(self.loss),
        }


@keras.saving.register_keras_serializable(package="keras_ragkd")
class FeatureDistillation:
    """Mean squared error between a teacher and a student layer (Keras' name).

    The `Distiller` extracts both layers' outputs in the same forward passes
    as the logits; when their widths differ, a trainable `Dense` projection
    maps the student's to the teacher's.

    Args:
        loss: `"mse"` (the only one: hidden-state distillation here is the
            mean squared error).
        teacher_layer_name: name of the teacher layer (functional or
            Sequential teacher).
        student_layer_name: name of the student layer.

    Example:

    >>> FeatureDistillation(teacher_layer_name="hidden", student_layer_name="h")
    FeatureDistillation(teacher_layer_name='hidden', student_layer_name='h')
    """

    def __init__(self, loss="mse", teacher_layer_name=None, student_layer_name=None):
        if isinstance(loss, keras.losses.MeanSquaredError):
            loss = "mse"
        if loss not in _MEAN_SQUARED_ERROR_NAMES:
            raise ValueError(
                "Feature distillation here is the mean squared error of the "
                'hidden states: use `loss="mse"`. Received: '
                f"loss={loss!r}"
            )
        if teacher_layer_name is None or student_layer_name is None:
            raise ValueError(
                "FeatureDistillation needs both layer names; to distil the "
                "final outputs use `LogitsDistillation`. Received: "
                f"teacher_layer_name={teacher_layer_name!r}, "
                f"student_layer_name={student_layer_name!r}"
            )
        self.loss = "mse"
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name

    def validate_outputs(self, teacher_outputs, student_outputs):
        """Refuses outputs of different structures."""
        keras.tree.assert_same_structure(teacher_outputs, student_outputs)

    def validate_model_compatibility(self, teacher, student):
        """Refuses models without symbolic outputs or without the named layers."""
        for model, role, name in (
            (teacher, "teacher", self.teacher_layer_name),
            (student, "student", self.student_layer_name),
        ):
            if getattr(model, "inputs", None) is None:
                raise ValueError(
                    "Feature distillation needs functional (or Sequential) "
                    f"teacher and student models. Received: {role}={model!r}"
                )
            model.get_layer(name)

    def get_config(self):
        return {
            "loss": self.loss,
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return (
            f"FeatureDistillation(teacher_layer_name={self.teacher_layer_name!r}, "
            f"student_layer_name={self.student_layer_name!r})"
        )


def hard_loss_weight(alpha, student_loss_weight):
    """`alpha`, or Keras' `student_loss_weight`; 0.5 when neither is given.

    Example:

    >>> hard_loss_weight(None, 0.7)
    0.7
    """
    if alpha is None and student_loss_weight is None:
        return 0.5
    if alpha is None:
        return student_loss_weight
    if student_loss_weight is not None and student_loss_weight != alpha:
        raise ValueError(
            "`alpha` and `student_loss_weight` are the same weight (of the "
            "hard loss); pass one of them. Received: "
            f"alpha={alpha!r}, student_loss_weight={student_loss_weight!r}"
        )
    return alpha


def distillation_terms(distillation_loss, distillation_losses, weights):
    """The distillation losses and their weights, from ours or Keras' arguments.

    Example:

    >>> distillation_terms(None, [LogitsDistillation(2.0), "jsd"], [0.5, 0.5])
    ([LogitsDistillation(temperature=2.0, loss={...}), GeneralizedJSD(beta=0.5, temperature=None)], [0.5, 0.5])
    """
    if distillation_losses is None:
        if weights is not None:
            raise ValueError(
                "`distillation_loss_weights` weighs the losses of "
                "`distillation_losses`. Received: distillation_losses=None, "
                f"distillation_loss_weights={weights!r}"
            )
        return [losses.get(distillation_loss or "forward_kl")], [1.0]
    if distillation_loss is not None:
        raise ValueError(
            "Pass `distillation_loss` (one loss) or `distillation_losses` "
            f"(Keras' list), not both. Received: distillation_loss={distillation_loss!r}, "
            f"distillation_losses={distillation_losses!r}"
        )
    if not isinstance(distillation_losses, (list, tuple)):
        distillation_losses, weights = [distillation_losses], [1.0]
    if not distillation_losses:
        raise ValueError(
            "`distillation_losses` needs at least one loss. "
            f"Received: distillation_losses={distillation_losses!r}"
        )
    if weights is None:
        weights = [1.0] * len(distillation_losses)
    if len(weights) != len(distillation_losses):
        raise ValueError(
            "`distillation_loss_weights` needs one weight per loss of "
            f"`distillation_losses`. Received: {len(weights)} weights for "
            f"{len(distillation_losses)} losses"
        )
    return [distillation_term(term) for term in distillation_losses], [float(w) for w in weights]


def distillation_term(term):
    if isinstance(term, dict):
        term = keras.saving.deserialize_keras_object(term)
    if isinstance(term, FeatureDistillation):
        return term
    return losses.get(term)
