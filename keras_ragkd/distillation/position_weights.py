"""Mask and weight arithmetic: which positions count in a loss, and how much.

A position is an example of `(batch, classes)` outputs or a token of
`(batch, time, vocab)` outputs. Its weight is the product of the sample
weight, the Keras mask and `label != ignore_class`; a loss is the weighted
sum divided by the global (all-replica) sum of weights.
"""

from keras import ops

from keras_ragkd.distillation import cached_batch
from keras_ragkd.distillation.replicas import sum_over_replicas


def valid_weights(y, outputs, sample_weight=None, mask=None, ignore_class=None):
    """Float32 weights, one per position (`outputs.shape[:-1]`), 0 = ignored.

    Args:
        y: labels (`None` when there are none).
        outputs: `(..., vocab)` model outputs, for the position shape.
        sample_weight: optional per-example or per-position weights.
        mask: optional boolean mask of the positions.
        ignore_class: optional label value of ignored positions.

    Returns:
        A float32 tensor `outputs.shape[:-1]`.

    Example:

    >>> import numpy as np
    >>> w = valid_weights(np.array([[1, 0]]), np.zeros((1, 2, 3)), ignore_class=0)
    >>> np.asarray(w).tolist()
    [[1.0, 0.0]]
    """
    position_shape = ops.shape(outputs)[:-1]
    rank = len(outputs.shape) - 1
    weights = ops.ones(position_shape, "float32")
    if sample_weight is not None:
        sample_weight = ops.cast(sample_weight, "float32")
        while len(sample_weight.shape) > rank and sample_weight.shape[-1] == 1:
            sample_weight = ops.squeeze(sample_weight, -1)
        while len(sample_weight.shape) < rank:
            sample_weight = ops.expand_dims(sample_weight, -1)
        weights = weights * sample_weight
    if mask is not None:
        weights = weights * ops.cast(mask, "float32")
    if ignore_class is not None and y is not None:
        labels = ops.convert_to_tensor(y)
        if len(labels.shape) > rank:
            labels = ops.squeeze(labels, -1)
        weights = weights * ops.cast(ops.not_equal(labels, ignore_class), "float32")
    return weights


def weighted_mean(values, weights, global_count):
    """`Σ weights·values / global_count`; non-finite values at weight 0 add nothing.

    Args:
        values: per-position float32 values.
        weights: per-position weights of the same shape.
        global_count: the sum of weights over all replicas.

    Returns:
        A float32 scalar: this replica's share of the global weighted mean.

    Example:

    >>> import numpy as np
    >>> float(weighted_mean(np.array([1.0, np.inf]), np.array([1.0, 0.0]), 1.0))
    1.0
    """
    values = ops.cast(values, "float32")
    values = ops.where(weights > 0, values, 0.0)
    return ops.divide_no_nan(ops.sum(values * weights), global_count)


def global_weighted_mean(values, weights):
    """`weighted_mean` over the global batch: the count is summed over replicas.

    Example:

    >>> import numpy as np
    >>> float(global_weighted_mean(np.array([1.0, 3.0]), np.array([1.0, 1.0])))
    2.0
    """
    weights = ops.cast(weights, "float32")
    return weighted_mean(values, weights, sum_over_replicas(ops.sum(weights)))


def combine_masks(mask, other):
    """The logical and of two optional masks (`None` = everything valid).

    Example:

    >>> combine_masks(None, None) is None
    True
    """
    if mask is None:
        return other
    if other is None:
        return mask
    return ops.logical_and(mask, other)


def stop_gradient_keep_mask(outputs):
    """`stop_gradient` that keeps the Keras mask attached to `outputs`."""
    mask = getattr(outputs, "_keras_mask", None)
    outputs = ops.stop_gradient(outputs)
    if mask is not None:
        outputs._keras_mask = mask
    return outputs


def replace_ignored_labels(y, ignore_class):
    """Labels with `ignore_class` replaced by 0, so losses stay finite there.

    Example:

    >>> import numpy as np
    >>> np.asarray(replace_ignored_labels(np.array([3, -1]), -1)).tolist()
    [3, 0]
    """
    if ignore_class is None or y is None:
        return y
    labels = ops.convert_to_tensor(y)
    return ops.where(ops.equal(labels, ignore_class), ops.zeros_like(labels), labels)


def teacher_is_right(labels, teacher_outputs):
    """1.0 where the teacher's most likely class is the label, else 0.0.

    Args:
        labels: class ids, or one-hot labels.
        teacher_outputs: a dict of live or cached teacher outputs
            (`cached_batch` keys).

    Returns:
        A float32 tensor, one value per position.
    """
    if cached_batch.TEACHER_TOP_INDICES in teacher_outputs:
        # A TeacherCache stores the top-k in descending order.
        top_class = teacher_outputs[cached_batch.TEACHER_TOP_INDICES][..., 0]
    else:
        top_class = ops.argmax(teacher_outputs[cached_batch.TEACHER_LOGITS], axis=-1)
    labels = ops.convert_to_tensor(labels)
    if len(labels.shape) > len(top_class.shape):
        if labels.shape[-1] == 1:
            labels = ops.squeeze(labels, -1)
        else:  # One-hot labels.
            labels = ops.argmax(labels, axis=-1)
    agree = ops.equal(ops.cast(top_class, "int32"), ops.cast(labels, "int32"))
    return ops.cast(agree, "float32")
