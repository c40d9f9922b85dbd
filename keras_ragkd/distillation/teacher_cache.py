"""`TeacherCache`: a teacher's logits computed once and stored on disk."""

import hashlib
import json
import numbers
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.distillation import cached_batch
from keras_ragkd.io_utils import file_record
from keras_ragkd.io_utils import fsync_directory
from keras_ragkd.io_utils import is_inside
from keras_ragkd.io_utils import is_member_name
from keras_ragkd.io_utils import remove_dead_staging
from keras_ragkd.io_utils import replace_directory
from keras_ragkd.io_utils import sha256_of
from keras_ragkd.io_utils import stage_beside

METADATA_FILE = "metadata.json"
# 2: `metadata.json` records each array file's size and SHA-256.
FORMAT_VERSION = 2
# The arrays a cache may hold (one `<field>.npy` each).
FIELDS = (
    cached_batch.TEACHER_LOGITS,
    cached_batch.TEACHER_TOP_LOGITS,
    cached_batch.TEACHER_TOP_INDICES,
    cached_batch.TEACHER_REST_LOG_MASS,
)
_MIN_REST_MASS = 1e-30
# Caches up to this size are served from memory (in-graph), larger ones are
# read batch by batch from the memory-mapped `.npy` files.
IN_MEMORY_BYTES = 1 << 30


class TeacherCache:
    """A teacher's outputs over a dataset, computed once, stored as `.npy`.

    `TeacherCache.build` runs the teacher over a batched `tf.data` dataset
    (`(x, y)` or `(x, y, sample_weight)` elements, in a fixed order) and writes
    its logits to memory-mapped `.npy` files (never pickle), together with the
    dataset's example count, a SHA-256 fingerprint of its inputs and each
    file's size and SHA-256. The directory appears atomically: it is written
    under a temporary name in the same folder and swapped in at the end, so a
    build killed midway leaves any previous cache as it was. `load` checks
    `metadata.json` before opening any file it names, then the files' sizes,
    checksums and shapes, and refuses a damaged cache with a `ValueError`.

    `cache.attach(dataset)` checks that `dataset` is the one the cache was
    built from (same count, same input fingerprint) and returns it with the
    teacher's outputs added to the labels, ready for `Distiller.fit`: the
    teacher is not run again. Shuffle only after attaching (e.g.
    `cache.attach(ds).shuffle(8)` shuffles whole batches).

    For large vocabularies, `top_k=k` stores only the `k` largest logits per
    position, their indices and the log of the remaining probability mass at
    the cache `temperature`; the soft loss is then computed over `k + 1`
    buckets and is exact only at that temperature.

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
    >>> cache.count
    10
    >>> batch = next(iter(cache.attach(ds)))
    >>> sorted(batch[1])
    ['labels', 'teacher_logits']
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
        verbose="auto",
    ):
        """Runs `teacher` once over `dataset` and stores its logits.

        Args:
            teacher: a built Keras model producing logits `(batch, vocab)` or
                `(batch, time, vocab)`.
            dataset: a batched `tf.data.Dataset` of `(x, y)` or
                `(x, y, sample_weight)`, in a deterministic order.
            directory: folder to create.
            top_k: if set, store only the `top_k` largest logits per position
                plus the remaining probability mass.
            temperature: the temperature of the remaining mass; required with
                `top_k` (use the distiller's temperature).
            dtype: storage dtype of logits (`"float32"` or `"float16"`).
            overwrite: replace an existing cache at `directory`.
            verbose: `0` for silence, otherwise a progress bar.

        Returns:
            The `TeacherCache`.
        """
        directory = os.path.abspath(os.fspath(directory))
        _check_build_args(teacher, dataset, directory, top_k, temperature, overwrite)
        parent = os.path.dirname(directory)
        os.makedirs(parent, exist_ok=True)
        remove_dead_staging(directory)  # Left by builds that were killed.
        staging = stage_beside(directory, "build")
        try:
            metadata = _write_teacher_outputs(
                teacher, dataset, staging, top_k, temperature, dtype, verbose
            )
            metadata["files"] = {
                name: {"path": f"{name}.npy",
                       **file_record(os.path.join(staging, f"{name}.npy"))}
                for name in metadata["fields"]
            }
            _write_json(os.path.join(staging, METADATA_FILE), metadata)
            fsync_directory(staging)
            replace_directory(staging, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(directory, metadata)

    @classmethod
    def load(cls, directory, verify_checksums=True):
        """Opens an existing cache folder, refusing a damaged one.

        `metadata.json` is checked first (its keys, and that every file it
        names is a plain file name inside the folder), then each array file's
        size, SHA-256 (unless `verify_checksums=False`) and shape.

        Args:
            directory: a folder written by `TeacherCache.build`.
            verify_checksums: bool, hash every array file (sizes and shapes
                are always checked).

        Returns:
            The `TeacherCache`.
        """
        directory = os.fspath(directory)
        path = os.path.join(directory, METADATA_FILE)
        if not os.path.isfile(path):
            raise ValueError(
                "Expected a TeacherCache folder containing "
                f"{METADATA_FILE}. Received: directory={directory!r}"
            )
        metadata = _read_metadata(path)
        for name in metadata["fields"]:
            _check_array_file(directory, metadata, name, verify_checksums)
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
            or array.dtype.kind not in "fi"
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
        count, fingerprint, batch_sizes = _fingerprint(dataset)
        if count == self.count and batch_sizes != self.metadata["batch_sizes"]:
            raise ValueError(
                "The dataset is batched differently from the one the cache "
                "was built on. Expected batch sizes starting with "
                f"{self.metadata['batch_sizes'][:3]}. Received: "
                f"batch_sizes={batch_sizes[:3]}..."
            )
        if count != self.count or fingerprint != self.fingerprint:
            raise ValueError(
                "The dataset does not match this TeacherCache: expected "
                f"{self.count} examples with input fingerprint "
                f"{self.fingerprint[:16]}... in the same order as at build "
                "time (attach the cache before shuffling). Received: dataset "
                f"with count={count}, fingerprint={fingerprint[:16]}..."
            )

    def attach(self, dataset, validate=True):
        """Adds the cached teacher outputs to each batch of `dataset`.

        Args:
            dataset: the batched dataset the cache was built from.
            validate: check the count and input fingerprint first (one pass
                over the inputs, no teacher).

        Returns:
            A `tf.data.Dataset` of `(x, {"labels": y, "teacher_logits": t})`
            (or `(x, labels_dict, sample_weight)`), for `Distiller.fit`.
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
            return outputs.batch(batch_sizes[0])
        return _memmap_batches(arrays, batch_sizes)


def _memmap_batches(arrays, batch_sizes):
    """Batches read lazily from memory-mapped arrays (large caches)."""
    offsets = np.cumsum([0] + list(batch_sizes))

    def generate():
        for start, stop in zip(offsets[:-1], offsets[1:]):
            yield {name: np.asarray(a[start:stop]) for name, a in arrays.items()}

    signature = {
        name: tf.TensorSpec((None,) + a.shape[1:], a.dtype)
        for name, a in arrays.items()
    }
    outputs = tf.data.Dataset.from_generator(generate, output_signature=signature)
    return outputs.apply(tf.data.experimental.assert_cardinality(len(batch_sizes)))


def _check_build_args(teacher, dataset, directory, top_k, temperature, overwrite):
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
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
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
    if os.path.exists(directory) and not overwrite:
        raise ValueError(
            "The cache folder already exists; pass `overwrite=True` to "
            f"replace it. Received: directory={directory!r}"
        )


def _inputs_of(batch):
    x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
    if y is None:
        raise ValueError(
            "TeacherCache datasets must yield `(x, y)` or "
            "`(x, y, sample_weight)` batches (labels are needed for the hard "
            "loss). Received: a batch without labels"
        )
    return x


def _update_hash(digest, x):
    for tensor in tf.nest.flatten(x):
        array = np.asarray(tensor)
        digest.update(f"{array.dtype.str}{array.shape[1:]}".encode())
        if array.dtype == object:
            digest.update(b"\0".join(bytes(v) for v in array.ravel()))
        else:
            digest.update(np.ascontiguousarray(array).tobytes())


def _batch_size(x):
    return int(tf.shape(tf.nest.flatten(x)[0])[0])


def _fingerprint(dataset):
    digest = hashlib.sha256()
    batch_sizes = []
    inputs = dataset.map(lambda *batch: _inputs_of(batch if len(batch) > 1 else batch[0]))
    for batch in inputs.as_numpy_iterator():
        _update_hash(digest, batch)
        batch_sizes.append(_batch_size(batch))
    return sum(batch_sizes), digest.hexdigest(), batch_sizes


def _teacher_fields(logits, top_k, temperature):
    logits = tf.cast(logits, "float32")
    if top_k is None:
        return {cached_batch.TEACHER_LOGITS: logits}
    top_logits, top_indices = tf.math.top_k(logits, k=top_k)
    log_probs = tf.nn.log_softmax(logits / temperature, axis=-1)
    top_log_mass = tf.reduce_logsumexp(
        tf.gather(log_probs, top_indices, batch_dims=len(logits.shape) - 1), axis=-1
    )
    rest_mass = tf.maximum(-tf.math.expm1(top_log_mass), _MIN_REST_MASS)
    return {
        cached_batch.TEACHER_TOP_LOGITS: top_logits,
        cached_batch.TEACHER_TOP_INDICES: top_indices,
        cached_batch.TEACHER_REST_LOG_MASS: tf.math.log(rest_mass),
    }


def _write_teacher_outputs(teacher, dataset, folder, top_k, temperature, dtype, verbose):
    digest = hashlib.sha256()
    batch_sizes = []
    raw_files, specs = {}, {}
    total = dataset.cardinality().numpy()
    progbar = keras.utils.Progbar(
        total if total > 0 else None, verbose=0 if verbose == 0 else 1, unit_name="batch"
    )
    predict = tf.function(lambda x: teacher(x, training=False))
    try:
        for batch in dataset:
            x = _inputs_of(batch)
            _update_hash(digest, x)
            batch_sizes.append(_batch_size(x))
            fields = _teacher_fields(predict(x), top_k, temperature)
            for name, value in fields.items():
                array = value.numpy()
                if name != cached_batch.TEACHER_TOP_INDICES:
                    array = array.astype(dtype)
                if name not in raw_files:
                    raw_files[name] = open(os.path.join(folder, f"{name}.raw"), "wb")
                    specs[name] = (array.dtype, array.shape[1:])
                _check_consistent_shape(name, specs[name][1], array.shape[1:])
                raw_files[name].write(np.ascontiguousarray(array).tobytes())
            progbar.add(1)
    finally:
        for file in raw_files.values():
            file.close()
    count = sum(batch_sizes)
    for name, (array_dtype, shape) in specs.items():
        _raw_to_npy(folder, name, array_dtype, (count,) + shape)
    return {
        "format_version": FORMAT_VERSION,
        "count": count,
        "fingerprint": digest.hexdigest(),
        "batch_sizes": batch_sizes,
        "fields": sorted(specs),
        "top_k": top_k,
        "temperature": None if temperature is None else float(temperature),
        "dtype": str(np.dtype(dtype)),
        "teacher": teacher.name,
    }


def _check_consistent_shape(name, expected, received):
    if tuple(expected) != tuple(received):
        raise ValueError(
            "Every batch must give teacher outputs of the same per-example "
            f"shape (pad sequences to a fixed length). Expected {name} shape "
            f"{tuple(expected)}. Received: shape={tuple(received)}"
        )


def _raw_to_npy(folder, name, dtype, shape):
    raw_path = os.path.join(folder, f"{name}.raw")
    source = np.memmap(raw_path, dtype=dtype, mode="r", shape=shape)
    target = np.lib.format.open_memmap(
        os.path.join(folder, f"{name}.npy"), mode="w+", dtype=dtype, shape=shape
    )
    rows = max(1, (64 << 20) // max(1, source[:1].nbytes))
    for start in range(0, shape[0], rows):
        target[start : start + rows] = source[start : start + rows]
    target.flush()
    del source, target
    os.remove(raw_path)


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=1)
        file.flush()
        os.fsync(file.fileno())


def _is_count(value, minimum=0):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and (
        value >= minimum
    )


def _read_metadata(path):
    """Parses and checks `metadata.json` before any file it names is opened."""
    try:
        with open(path, encoding="utf-8") as file:
            metadata = json.load(file)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"The TeacherCache metadata is not valid JSON ({error}). "
            f"Received: file={path!r}"
        ) from None
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(
            f"Unsupported TeacherCache format; expected version {FORMAT_VERSION} "
            "(rebuild caches written by earlier versions). Received: "
            f"format_version={version!r} in {path!r}"
        )
    required = {"count", "fingerprint", "batch_sizes", "fields", "top_k",
                "temperature", "files"}
    missing = sorted(required - set(metadata))
    if missing:
        raise ValueError(
            f"The TeacherCache metadata lacks keys. Received: missing={missing} "
            f"in {path!r}"
        )
    fields, files = metadata["fields"], metadata["files"]
    batch_sizes = metadata["batch_sizes"]
    problems = []
    if not _is_count(metadata["count"]):
        problems.append(f"count={metadata['count']!r}")
    if not (isinstance(batch_sizes, list) and all(_is_count(b, 1) for b in batch_sizes)
            and sum(batch_sizes) == metadata["count"]):
        problems.append(f"batch_sizes={batch_sizes!r:.80}")
    if not isinstance(metadata["fingerprint"], str):
        problems.append(f"fingerprint={metadata['fingerprint']!r:.80}")
    if not (isinstance(fields, list) and fields and set(fields) <= set(FIELDS)
            and len(set(fields)) == len(fields)):
        problems.append(f"fields={fields!r:.200}")
    elif not isinstance(files, dict) or set(files) != set(fields) or not all(
        isinstance(entry, dict)
        and entry.get("path") == f"{name}.npy"
        and is_member_name(entry["path"])
        and _is_count(entry.get("bytes"))
        and isinstance(entry.get("sha256"), str)
        for name, entry in files.items()
    ):
        problems.append(
            "files (expected one {\"path\": \"<field>.npy\", \"bytes\", "
            f"\"sha256\"}} entry per field)={files!r:.200}"
        )
    top_k, temperature = metadata["top_k"], metadata["temperature"]
    if not (top_k is None or _is_count(top_k, 1)):
        problems.append(f"top_k={top_k!r}")
    if not (temperature is None or (
        isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
        and temperature > 0
    )) or (top_k is None) != (temperature is None):
        problems.append(f"temperature={temperature!r}")
    if problems:
        raise ValueError(
            f"The TeacherCache metadata is malformed. Received: {', '.join(problems)} "
            f"in {path!r}"
        )
    return metadata


def _check_array_file(directory, metadata, name, verify_checksums):
    entry = metadata["files"][name]
    path = os.path.join(directory, entry["path"])
    if not os.path.isfile(path):
        raise ValueError(
            f"The TeacherCache in {directory!r} is incomplete. "
            f"Received: missing file={path!r}"
        )
    if not is_inside(path, directory):
        raise ValueError(
            f"A TeacherCache file is a link to a file outside the cache folder "
            f"{directory!r}. Received: file={path!r} -> {os.path.realpath(path)!r}"
        )
    size = os.path.getsize(path)
    if size != entry["bytes"]:
        raise ValueError(
            f"A TeacherCache file is truncated or overwritten (expected "
            f"{entry['bytes']} bytes). Received: file={path!r} of {size} bytes"
        )
    if verify_checksums and sha256_of(path) != entry["sha256"]:
        raise ValueError(
            "A TeacherCache file is corrupted (SHA-256 mismatch). "
            f"Received: file={path!r}"
        )
