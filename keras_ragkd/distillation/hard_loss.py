"""The hard (student vs. labels) term of distillation: a Keras loss from logits."""

import keras
from keras import ops

_LOGIT_LOSSES = {
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
    "binary_crossentropy": keras.losses.BinaryCrossentropy,
}
_CLASS_LABEL_LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy")


def resolve_hard_loss(loss):
    """The hard loss for a student that outputs logits (or log-probabilities).

    `None` is `SparseCategoricalCrossentropy(from_logits=True)`; the names of
    the cross-entropies resolve to their `from_logits=True` versions; a loss
    configured with `from_logits=False` is refused.

    Args:
        loss: `None`, a loss name, a `keras.losses.Loss` or a function.

    Returns:
        A `keras.losses.Loss` or a loss function.

    Example:

    >>> resolve_hard_loss("categorical_crossentropy").get_config()["from_logits"]
    True
    """
    if loss is None:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if isinstance(loss, str) and loss in _LOGIT_LOSSES:
        return _LOGIT_LOSSES[loss](from_logits=True)
    resolved = keras.losses.get(loss)
    if config_value(resolved, "from_logits") is False:
        raise ValueError(
            "The student outputs logits, so the hard loss must be computed "
            "from logits, e.g. "
            "`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`. "
            f"Received: loss={loss!r} with from_logits=False"
        )
    return resolved


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


def has_class_labels(loss):
    """Whether `loss` takes class-index or one-hot labels (a cross-entropy).

    Example:

    >>> has_class_labels(resolve_hard_loss(None)), has_class_labels(keras.losses.get("mse"))
    (True, False)
    """
    classes = tuple(_LOGIT_LOSSES[name] for name in _CLASS_LABEL_LOSSES)
    if isinstance(loss, classes):
        return True
    return getattr(loss, "__name__", "") in _CLASS_LABEL_LOSSES


def config_value(loss, key):
    """`loss.get_config()[key]` for a `keras.losses.Loss`, else `None`.

    Example:

    >>> config_value(keras.losses.SparseCategoricalCrossentropy(ignore_class=0), "ignore_class")
    0
    """
    if isinstance(loss, keras.losses.Loss):
        return loss.get_config().get(key)
    return None
