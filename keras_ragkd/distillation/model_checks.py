"""What the `Distiller` requires of its teacher and student, checked up front.

The contract with task models (e.g. `RagQuestionAnswerer`): a model may
declare what it outputs with an `output_kind` attribute (`"logits"` or
`"log_probabilities"`, as RAG-Token marginals are) and the label id of its
padding with `padding_id` (on the model or its `preprocessor`); the
`Distiller` reads both instead of relying on magic numbers.
"""

import keras

from keras_ragkd.distillation.divergences import check_same_vocabulary
from keras_ragkd.validation import check_number

LOGITS = "logits"
LOG_PROBABILITIES = "log_probabilities"
OUTPUT_KINDS = (LOGITS, LOG_PROBABILITIES)

_PROBABILITY_ACTIVATIONS = (keras.activations.softmax, keras.activations.sigmoid)


def check_alpha(alpha):
    """Refuses a hard-loss weight outside `[0, 1]`.

    Example:

    >>> check_alpha(0.5)
    """
    check_number("alpha", alpha, 0, 1)


def output_kind(model, declared="auto", role="model"):
    """What `model` outputs: `"logits"` or `"log_probabilities"`.

    Args:
        model: a Keras model (or `None`).
        declared: `"auto"` reads the model's `output_kind` attribute (logits
            if it has none); otherwise one of `OUTPUT_KINDS`.
        role: `"teacher"` or `"student"`, for error messages.

    Returns:
        One of `OUTPUT_KINDS`.

    Example:

    >>> output_kind(keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)]))
    'logits'
    """
    if declared == "auto":
        declared = getattr(model, "output_kind", None) or LOGITS
    if declared not in OUTPUT_KINDS:
        raise ValueError(
            f"The {role}'s outputs must be declared as one of "
            f"{('auto',) + OUTPUT_KINDS}. Received: {role}_outputs={declared!r}"
        )
    return declared


def padding_id(model):
    """The padding label id `model` declares (itself or its preprocessor), else `None`.

    Example:

    >>> padding_id(keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])) is None
    True
    """
    for owner in (model, getattr(model, "preprocessor", None)):
        value = getattr(owner, "padding_id", None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def check_models(teacher, student, teacher_kind=LOGITS, student_kind=LOGITS):
    """Refuses a teacher and student the `Distiller` cannot compare.

    Both must be Keras models (the teacher may be `None` with a
    `TeacherCache`), the teacher built, both outputs logits (or declared
    log-probabilities, not probabilities), over the same vocabulary.

    Example:

    >>> check_models(None, keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)]))
    """
    if not isinstance(student, keras.Model):
        raise TypeError(
            f"`student` must be a keras.Model. Received: student={student!r}"
        )
    check_outputs_are_not_probabilities(student, "student", student_kind)
    if teacher is None:
        return
    if not isinstance(teacher, keras.Model):
        raise TypeError(
            "`teacher` must be a keras.Model (or None with a TeacherCache). "
            f"Received: teacher={teacher!r}"
        )
    if not teacher.built:
        raise ValueError(
            "The teacher must be built and trained before distillation; an "
            "unbuilt teacher has random weights. Build it by calling it on a "
            f"batch or training it. Received: teacher.built={teacher.built}"
        )
    check_outputs_are_not_probabilities(teacher, "teacher", teacher_kind)
    teacher_shape = _output_shape(teacher)
    student_shape = _output_shape(student)
    if teacher_shape is not None and student_shape is not None:
        check_same_vocabulary(teacher_shape, student_shape)


def check_outputs_are_not_probabilities(model, role, kind=LOGITS):
    """Refuses a final softmax/sigmoid (and log-softmax, unless so declared)."""
    layer = _output_layer(model)
    if layer is None:
        return
    activation = getattr(layer, "activation", None)
    refused = _PROBABILITY_ACTIVATIONS
    if kind == LOGITS:
        refused = refused + (keras.activations.log_softmax,)
    if isinstance(layer, keras.layers.Softmax) or activation in refused:
        name = getattr(activation, "__name__", layer.__class__.__name__)
        raise ValueError(
            f"The {role} must output logits, not probabilities: remove the "
            "final softmax/sigmoid activation (e.g. `Dense(n)` instead of "
            "`Dense(n, activation='softmax')`); a model that outputs "
            f"log-probabilities is declared with `{role}_outputs="
            f"'log_probabilities'`. Received: {role} output "
            f"layer={layer.name!r} with activation={name}"
        )


def _output_shape(model):
    outputs = getattr(model, "outputs", None)
    if not outputs:
        return None
    return tuple(outputs[0].shape)


def _output_layer(model):
    outputs = getattr(model, "outputs", None)
    if outputs:
        history = getattr(outputs[0], "_keras_history", None)
        if history is not None:
            return history.operation
    layers = getattr(model, "layers", None)
    if isinstance(model, keras.Sequential) and layers:
        return layers[-1]
    return None
