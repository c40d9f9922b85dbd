"""`TeacherCache`: a teacher's outputs computed once and stored on disk."""

import math
import os

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.distillation import cached_batch
from keras_ragkd.distillation.teacher_cache_format import FORMAT_VERSION
from keras_ragkd.distillation.teacher_cache_format import METADATA_FILE
from keras_ragkd.distillation.teacher_cache_format import STORAGE_DTYPES
from keras_ragkd.distillation.teacher_cache_format import check_array_files
from keras_ragkd.distillation.teacher_cache_format import read_metadata
from keras_ragkd.distillation.teacher_cache_provenance import build_provenance
from keras_ragkd.distillation.teacher_cache_provenance import data_fingerprint
from keras_ragkd.distillation.teacher_cache_writer import write_cache
from keras_ragkd.io_utils import remove_dead_staging
from keras_ragkd.validation import is_integer

# Caches up to this size are served from memory (in-graph), larger ones are
# read batch by batch from the memory-mapped `.npy` files.
IN_MEMORY_BYTES = 1 << 30


class TeacherCache:
    """A teacher's outputs over a dataset, computed once, stored as `.npy`.

    `TeacherCache.build` runs the teacher over a batched `tf.data` dataset
    (`(x, y)` or `(x, y, sample_weight)` elements, in a fixed order), batch by
    batch with a progress bar, straight into memory-mapped `.npy` files
    (never pickle): no array of the whole dataset is held in memory, so
    `(batch, time, 49152)` outputs of an LLM or a RAG-Token marginal fit.
    `metadata.json` records the dataset's example count and a SHA-256
    fingerprint of its inputs, what built the cache (`provenance`: the
    teacher's name, parameter count and weights fingerprint; for a RAG
    teacher its index and `num_docs`; anything the caller adds) and each
    file's size and SHA-256.

    The folder is written in a staging folder beside it and swapped in at
    the end, so a previous cache there stays loadable until then. A build
    killed midway (even by SIGKILL) is continued by the next `build` with the
    same arguments (`resume=True`): only the batches after its last
    checkpoint are computed again, and the result is the same, bit for bit,
    as an uninterrupted build's (a build with other data, teacher weights or
    arguments starts over; a failed build leaves its staging folder,
    `.<name>.partial`, for the next one). `load` checks `metadata.json` before opening
    any file it names, then the files' sizes, checksums and shapes, and
    refuses a damaged cache (or another format version) with a `ValueError`.

    `cache.attach(dataset)` checks that `dataset` is the one the cache was
    built from (same count, same input fingerprint) and returns it with the
    teacher's outputs added to the labels, ready for `Distiller.fit`: the
    teacher is not run again. Shuffle only after attaching (e.g.
    `cache.attach(ds).shuffle(8)` shuffles whole batches).

    For large vocabularies, `top_k=k` stores only the `k` largest logits per
    position (descending), their indices (uint16 for vocabularies up to
    65,536) and the log of the remaining probability mass at the cache
    `temperature`; the soft loss is then computed over `k + 1` buckets and is
    exact only at that temperature. `cache.bytes_per_token` gives the size
    on disk per cached position.

    Args:
        directory: the cache folder.
        metadata: the parsed `metadata.json` (use `build` or `load`).

    Example:

    >>> import keras, numpy as np, tensorflow as tf, tempfile
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> ds = tf.data.Dataset.from_tensor_slices(
    ...     (np.random.rand(10, 4).astype("float32"), np.arange(10) % 3)
    ... ).batch(4)
    >>> folder = tempfile.mkdtemp() + "/cache"
    >>> cache = TeacherCache.build(teacher, ds, folder, verbose=0)
    >>> cache.count, cache.bytes_per_token
    (10, 24.8)
    >>> batch = next(iter(cache.attach(ds)))
    >>> sorted(batch[1])
    ['labels', 'teacher_logits']
    >>> cache.provenance["teacher"]["parameters"]
    15
    """

    def __init__(self, directory, metadata):
        self.directory = str(directory)
        self.metadata = metadata

    @property
    def count(self):
        """Number of examples in the cached dataset."""
        return self.metadata["count"]

    @property
    def fingerprint(self):
        """SHA-256 of the dataset's inputs, in order."""
        return self.metadata["fingerprint"]

    @property
    def top_k(self):
        """`k` for a top-k cache, `None` when full logits are stored."""
        return self.metadata["top_k"]

    @property
    def temperature(self):
        """The temperature of a top-k cache's rest mass (`None` if full)."""
        return self.metadata["temperature"]

    @property
    def vocabulary_size(self):
        """The size of the teacher's output vocabulary (its last axis)."""
        return self.metadata["vocabulary_size"]

    @property
    def provenance(self):
        """What built the cache: `teacher`, `index`, `num_docs`, `caller`, ..."""
        return self.metadata["provenance"]

    @property
    def nbytes(self):
        """Size of the cached arrays on disk, in bytes (`.npy` headers included)."""
        return sum(entry["bytes"] for entry in self.metadata["files"].values())

    @property
    def num_tokens(self):
        """Number of cached positions: examples times positions per example."""
        name = cached_batch.TEACHER_LOGITS if self.top_k is None else (
            cached_batch.TEACHER_TOP_LOGITS
        )
        return self.count * math.prod(self._array(name).shape[1:-1])

    @property
    def bytes_per_token(self):
        """Size on disk per cached position (`nbytes / num_tokens`)."""
        return self.nbytes / self.num_tokens

    @classmethod
    def build(
        cls,
        teacher,
        dataset,
        directory,
        top_k=None,
        temperature=None,
        dtype="float32",
        overwrite=False,
        resume=True,
        provenance=None,
        verbose="auto",
    ):
        """Runs `teacher` once over `dataset` and stores its outputs.

        Args:
            teacher: a built Keras model producing logits (or log-
                probabilities, e.g. a RAG-Token marginal) `(batch, vocab)` or
                `(batch, time, vocab)`.
            dataset: a batched `tf.data.Dataset` of `(x, y)` or
                `(x, y, sample_weight)`, in a deterministic order (it is read
                twice: once to fingerprint the inputs, once for the teacher).
            directory: folder to create.
            top_k: if set, store only the `top_k` largest logits per position
                plus the remaining probability mass.
            temperature: the temperature of the remaining mass; required with
                `top_k` (use the distiller's temperature).
            dtype: storage dtype of logits (`"float32"` or `"float16"`).
            overwrite: replace an existing cache at `directory`.
            resume: continue a killed build of the same cache (same data,
                teacher weights, index and arguments) from its last
                checkpoint; `False` starts over.
            provenance: optional JSON-serialisable dict recorded in the
                cache's `provenance["caller"]` (e.g. the teacher's preset).
            verbose: `0` for silence, otherwise a progress bar and the size.

        Returns:
            The `TeacherCache`.
        """
        directory = os.path.abspath(os.fspath(directory))
        _check_build_args(teacher, dataset, directory, top_k, temperature, dtype, overwrite)
        os.makedirs(os.path.dirname(directory), exist_ok=True)
        remove_dead_staging(directory)  # Left by builds of older versions.
        count, fingerprint, batch_sizes = data_fingerprint(dataset)
        if count == 0:
            raise ValueError(
                f"The dataset to cache is empty. Received: dataset={dataset!r}"
            )
        metadata = {
            "format_version": FORMAT_VERSION,
            "count": count,
            "fingerprint": fingerprint,
            "batch_sizes": batch_sizes,
            "top_k": None if top_k is None else int(top_k),
            "temperature": None if temperature is None else float(temperature),
            "dtype": _dtype_name(dtype),
            "provenance": build_provenance(teacher, provenance),
        }
        metadata = write_cache(teacher, dataset, directory, metadata, resume, verbose)
        cache = cls(directory, metadata)
        if verbose != 0:
            print(
                f"TeacherCache: {cache.count} examples, {cache.num_tokens} tokens, "
                f"{cache.nbytes:,} bytes on disk, {cache.bytes_per_token:.1f} bytes/token."
            )
        return cache

    @classmethod
    def load(cls, directory, verify_checksums=True):
        """Opens an existing cache folder, refusing a damaged one.

        `metadata.json` is checked first (its format version and keys, and
        that every file it names is a plain file name inside the folder),
        then each array file's size, SHA-256 (unless
        `verify_checksums=False`) and shape.

        Args:
            directory: a folder written by `TeacherCache.build`.
            verify_checksums: bool, hash every array file (sizes and shapes
                are always checked).

        Returns:
            The `TeacherCache`.
        """
        directory = os.fspath(directory)
        metadata = read_metadata(directory)
        check_array_files(directory, metadata, verify_checksums)
        cache = cls(directory, metadata)
        cache.arrays()  # Checks each file's `.npy` header against the metadata.
        return cache

    def arrays(self):
        """The cached arrays, memory-mapped read-only, by field name."""
        return {name: self._array(name) for name in self.metadata["fields"]}

    def _array(self, name):
        path = os.path.join(self.directory, f"{name}.npy")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, EOFError, OSError) as error:
            raise ValueError(
                f"A TeacherCache file cannot be read as a `.npy` array ({error}). "
                f"Received: file={path!r}"
            ) from None
        min_rank = 1 if name == cached_batch.TEACHER_REST_LOG_MASS else 2
        top_k_field = name in (cached_batch.TEACHER_TOP_LOGITS,
                               cached_batch.TEACHER_TOP_INDICES)
        if (
            array.ndim < min_rank
            or array.shape[0] != self.count
            or (top_k_field and array.shape[-1] != self.top_k)
            or array.dtype.kind not in "fiu"
        ):
            raise ValueError(
                f"A TeacherCache file does not hold the {self.count} examples its "
                f"{METADATA_FILE} records (or holds no numbers). Received: "
                f"file={path!r} with shape={array.shape}, dtype={array.dtype}"
            )
        return array

    def validate(self, dataset):
        """Raises `ValueError` unless `dataset` is the one this cache holds.

        Args:
            dataset: the batched dataset to check (same order as at build).
        """
        count, fingerprint, batch_sizes = data_fingerprint(dataset)
        if count == self.count and batch_sizes != self.metadata["batch_sizes"]:
            raise ValueError(
                "The dataset is batched differently from the one the cache "
                "was built on. Expected batch sizes starting with "
                f"{self.metadata['batch_sizes'][:3]}. Received: "
                f"batch_sizes={batch_sizes[:3]}..."
            )
        if count != self.count or fingerprint != self.fingerprint:
            teacher = self.provenance.get("teacher", {}).get("name")
            raise ValueError(
                f"The dataset does not match this TeacherCache (of teacher {teacher!r}, "
                f"in {self.directory!r}): expected {self.count} examples with input "
                f"fingerprint {self.fingerprint}, in the same order as at build time "
                "(attach the cache before shuffling; rebuild it for other data). "
                f"Received: dataset with count={count}, fingerprint={fingerprint}"
            )

    def attach(self, dataset, validate=True):
        """Adds the cached teacher outputs to each batch of `dataset`.

        Args:
            dataset: the batched dataset the cache was built from.
            validate: check the count and input fingerprint first (one pass
                over the inputs, no teacher).

        Returns:
            A `tf.data.Dataset` of `(x, {"labels": y, "teacher_logits": t})`
            (or `(x, labels_dict, sample_weight)`), for `Distiller.fit`; top-k
            indices come as int32.
        """
        if validate:
            self.validate(dataset)
        teacher_outputs = self._teacher_dataset()

        def merge(batch, cached):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
            labels = {cached_batch.LABELS: y, **cached}
            if sample_weight is None:
                return x, labels
            return x, labels, sample_weight

        merged = tf.data.Dataset.zip(dataset, teacher_outputs).map(
            merge, num_parallel_calls=tf.data.AUTOTUNE
        )
        return merged.prefetch(tf.data.AUTOTUNE)

    def _teacher_dataset(self):
        arrays = self.arrays()
        if self.temperature is not None:
            arrays[cached_batch.CACHE_TEMPERATURE] = np.full(
                (self.count,), self.temperature, "float32"
            )
        batch_sizes = self.metadata["batch_sizes"]
        uniform = all(size == batch_sizes[0] for size in batch_sizes[:-1])
        nbytes = sum(a.nbytes for a in arrays.values())
        if uniform and batch_sizes[-1] <= batch_sizes[0] and nbytes <= IN_MEMORY_BYTES:
            # Small caches with `.batch(n)`-style batching: in-graph slicing.
            in_memory = {name: np.asarray(a) for name, a in arrays.items()}
            outputs = tf.data.Dataset.from_tensor_slices(in_memory)
            return outputs.batch(batch_sizes[0]).map(_indices_as_int32)
        return _memmap_batches(arrays, batch_sizes)


def _indices_as_int32(fields):
    name = cached_batch.TEACHER_TOP_INDICES
    if name not in fields:
        return fields
    return {**fields, name: tf.cast(fields[name], "int32")}


def _memmap_batches(arrays, batch_sizes):
    """Batches read lazily from memory-mapped arrays (large caches)."""
    offsets = np.cumsum([0] + list(batch_sizes))
    dtypes = {name: "int32" if name == cached_batch.TEACHER_TOP_INDICES else a.dtype
              for name, a in arrays.items()}

    def generate():
        for start, stop in zip(offsets[:-1], offsets[1:]):
            yield {name: np.asarray(a[start:stop], dtypes[name]) for name, a in arrays.items()}

    signature = {
        name: tf.TensorSpec((None,) + a.shape[1:], dtypes[name])
        for name, a in arrays.items()
    }
    outputs = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return outputs.apply(tf.data.experimental.assert_cardinality(len(batch_sizes)))


def _check_build_args(teacher, dataset, directory, top_k, temperature, dtype, overwrite):
    if not isinstance(teacher, keras.Model) or not teacher.built:
        raise ValueError(
            "`teacher` must be a built (trained) keras.Model. Received: "
            f"teacher={teacher!r}"
        )
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            "`dataset` must be a batched tf.data.Dataset. Received: "
            f"dataset={type(dataset).__name__}"
        )
    if top_k is not None and not is_integer(top_k):
        raise ValueError(f"`top_k` must be a positive int or None. Received: top_k={top_k!r}")
    if top_k is not None and (temperature is None or not temperature > 0):
        raise ValueError(
            "A top-k cache stores the remaining probability mass at a fixed "
            "temperature: pass `temperature` > 0 (the distiller's). "
            f"Received: temperature={temperature!r}"
        )
    if top_k is None and temperature is not None:
        raise ValueError(
            "`temperature` only applies to top-k caches (full logits work at "
            f"any temperature). Received: temperature={temperature!r}"
        )
    if _dtype_name(dtype) not in STORAGE_DTYPES:
        raise ValueError(
            f"`dtype` must be one of {STORAGE_DTYPES}. Received: dtype={dtype!r}"
        )
    if os.path.exists(directory) and not overwrite:
        raise ValueError(
            "The cache folder already exists; pass `overwrite=True` to "
            f"replace it. Received: directory={directory!r}"
        )


def _dtype_name(dtype):
    try:
        return np.dtype(dtype).name
    except TypeError:
        return None
