"""Raw inputs to batched, preprocessed `tf.data` pipelines (keras-hub's task convention).

keras-hub tasks (`PipelineModel`) map their `preprocessor` over whatever
`fit`/`evaluate`/`predict` receive; the task model here and the `Distiller`
(for a student that is such a task) do the same through this one function.
"""

import keras
import numpy as np
import tensorflow as tf


def is_preprocessed(dataset):
    """Whether a dataset's inputs are already model inputs (a dict of tensors)."""
    spec = dataset.element_spec
    first = spec[0] if isinstance(spec, tuple) else spec
    return isinstance(first, dict)


def is_raw_text(x):
    """Whether `x` is raw text for a task's preprocessor.

    True for strings, lists or arrays of strings, tuples of those (e.g.
    `(questions, answers)`) and datasets whose inputs are string tensors;
    False for numbers and for already preprocessed (dict) inputs.
    """
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        first = spec[0] if isinstance(spec, tuple) else spec
        return isinstance(first, tf.TensorSpec) and first.dtype == tf.string
    if isinstance(x, tuple):
        return bool(x) and all(is_raw_text(part) for part in x)
    if isinstance(x, (str, bytes)):
        return True
    if isinstance(x, (list, np.ndarray)):
        array = np.asarray(x, dtype=object)
        return array.size > 0 and all(isinstance(v, (str, bytes)) for v in array.flat)
    return isinstance(x, tf.Tensor) and x.dtype == tf.string


def preprocessed_dataset(preprocessor, x, y=None, sample_weight=None, batch_size=None,
                         shuffle=False, seed=None):
    """A batched `tf.data.Dataset` of `preprocessor(x, y, sample_weight)` batches.

    Args:
        preprocessor: a callable `(x, y=None, sample_weight=None)` → model
            inputs, e.g. a keras-hub preprocessor or `RagPreprocessor`.
        x: raw inputs (e.g. a list of strings), or a batched `tf.data.Dataset`
            of raw `x` / `(x, y)` / `(x, y, sample_weight)` elements; a dataset
            whose inputs are already dicts (preprocessed) is returned as is.
        y: optional raw targets, with array-like `x` only.
        sample_weight: optional weights, with array-like `x` only.
        batch_size: int, for array-like `x` (default 32).
        shuffle: bool, reshuffle array-like inputs each epoch.
        seed: optional int, the shuffle seed.

    Returns:
        A `tf.data.Dataset`.

    Example:

    >>> import tensorflow as tf
    >>> def lengths(x, y=None, sample_weight=None):
    ...     return keras.utils.pack_x_y_sample_weight(
    ...         {"length": tf.strings.length(x)}, y, sample_weight)
    >>> dataset = preprocessed_dataset(lengths, ["ab", "abc"], [0, 1])
    >>> x, y = next(iter(dataset))
    >>> x["length"].numpy().tolist(), y.numpy().tolist()
    ([2, 3], [0, 1])
    """
    if isinstance(x, tf.data.Dataset):
        if y is not None or sample_weight is not None:
            raise ValueError(
                "Pass the targets (and weights) inside the dataset, not as `y` or "
                f"`sample_weight`. Received: y={y!r:.80}, sample_weight={sample_weight!r:.80}"
            )
        if is_preprocessed(x):
            return x
        dataset = x
    else:
        inputs = keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
        dataset = tf.data.Dataset.from_tensor_slices(inputs)
        if shuffle:
            count = int(dataset.cardinality())
            dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size or 32)
    return dataset.map(
        lambda *element: preprocessor(*element), num_parallel_calls=1
    ).prefetch(2)
