"""What a `TeacherCache` was built from: its data, teacher and index.

`data_fingerprint` hashes a dataset's inputs (not its labels) in order, so a
cache can refuse another dataset; `build_provenance` records the teacher
(name, class, parameter count, SHA-256 of its weights) and, for a RAG teacher
(a model with a `rag` layer whose `retriever` holds a `PassageIndex`), the
index (passages, dimension, encoder, SHA-256 of the passages and
embeddings) and `num_docs`.
"""

import hashlib
import json

import keras
import numpy as np
import tensorflow as tf


def inputs_of(batch):
    """The `x` of a `(x, y)` or `(x, y, sample_weight)` batch."""
    x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
    if y is None:
        raise ValueError(
            "TeacherCache datasets must yield `(x, y)` or "
            "`(x, y, sample_weight)` batches (labels are needed for the hard "
            "loss). Received: a batch without labels"
        )
    return x


def update_hash(digest, x):
    """Adds one batch of inputs (any nest of arrays) to `digest`."""
    for tensor in tf.nest.flatten(x):
        array = np.asarray(tensor)
        digest.update(f"{array.dtype.str}{array.shape[1:]}".encode())
        if array.dtype == object:
            digest.update(b"\0".join(bytes(v) for v in array.ravel()))
        else:
            digest.update(np.ascontiguousarray(array).tobytes())


def batch_size_of(x):
    """The leading dimension of a batch of inputs."""
    return int(np.shape(tf.nest.flatten(x)[0])[0])


def input_dataset(dataset):
    """The dataset's inputs only (labels and sample weights dropped)."""
    return dataset.map(lambda *batch: inputs_of(batch if len(batch) > 1 else batch[0]))


def data_fingerprint(dataset):
    """`(count, sha256 hex, batch_sizes)` of a batched dataset's inputs.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((5, 2)), np.zeros(5)))
    >>> count, fingerprint, sizes = data_fingerprint(ds.batch(2))
    >>> count, len(fingerprint), sizes
    (5, 64, [2, 2, 1])
    """
    digest = hashlib.sha256()
    batch_sizes = []
    for batch in input_dataset(dataset).as_numpy_iterator():
        update_hash(digest, batch)
        batch_sizes.append(batch_size_of(batch))
    return sum(batch_sizes), digest.hexdigest(), batch_sizes


def weights_fingerprint(model):
    """SHA-256 of a model's weight values (with dtypes and shapes), in order.

    Names are left out: two identical models built in one process get
    different automatic names but the same fingerprint.

    Example:

    >>> import keras
    >>> a = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> b = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> b.set_weights(a.get_weights())
    >>> weights_fingerprint(a) == weights_fingerprint(b)
    True
    """
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.asarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"{value.dtype.str}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def describe_teacher(teacher):
    """`{"name", "class", "parameters", "weights_sha256"}` of a model."""
    return {
        "name": teacher.name,
        "class": f"{type(teacher).__module__}.{type(teacher).__qualname__}",
        "parameters": int(teacher.count_params()),
        "weights_sha256": weights_fingerprint(teacher),
    }


def _rag_layer(teacher):
    return getattr(teacher, "rag", None)


def describe_index(index):
    """`{"passages", "dim", "encoder", "sha256", "directory"}` of an index."""
    digest = hashlib.sha256()
    for passage in index.passages:
        digest.update(json.dumps([passage.id, passage.title, passage.text]).encode())
    embeddings = np.ascontiguousarray(index.embeddings)
    digest.update(f"{embeddings.dtype.str}{embeddings.shape}".encode())
    digest.update(embeddings.tobytes())
    return {
        "passages": len(index),
        "dim": int(index.dim),
        "encoder": str(index.encoder_identity),
        "sha256": digest.hexdigest(),
        "directory": index.directory,
    }


def build_provenance(teacher, caller=None):
    """What built a cache: the teacher, its index and `num_docs` (RAG), `caller`.

    Args:
        teacher: the Keras model that produced the outputs.
        caller: optional JSON-serialisable dict the caller adds (e.g. the
            teacher's checkpoint path or preset name).

    Returns:
        A JSON-ready dict.
    """
    if caller is not None and not isinstance(caller, dict):
        raise TypeError(
            f"`provenance` must be a dict (JSON-serialisable) or None. "
            f"Received: provenance={caller!r:.80}"
        )
    try:
        caller = json.loads(json.dumps(caller or {}, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`provenance` must be JSON-serialisable ({error}). "
            f"Received: provenance={caller!r:.80}"
        ) from None
    rag = _rag_layer(teacher)
    index = getattr(getattr(rag, "retriever", None), "index", None)
    return {
        "teacher": describe_teacher(teacher),
        "index": None if index is None else describe_index(index),
        "num_docs": getattr(rag, "num_docs", None),
        "marginalization": getattr(rag, "marginalization", None),
        "caller": caller,
    }
