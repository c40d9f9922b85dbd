"""Writes a `TeacherCache` folder in batches, resumably.

The folder is written in a staging folder beside the target,
`.<name>.partial`, straight into preallocated memory-mapped `.npy` files (no
array of the whole dataset is ever held in memory). After each flushed chunk
of batches `progress.json` records, atomically, how many batches are on disk
and what build they belong to (data fingerprint, teacher weights, index,
reduction). A build killed at any moment is continued by the next build with
the same arguments, which recomputes only the batches after the last
checkpoint; a build with other arguments starts the staging folder over.
Only the finished folder is swapped in at the target, so a previous cache
there stays loadable until then. An exclusive `flock` on the staging folder
keeps two live builds of one target apart.
"""

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from keras_ragkd.distillation import cached_batch
from keras_ragkd.distillation import top_k_tail
from keras_ragkd.distillation.teacher_cache_format import FIELDS
from keras_ragkd.distillation.teacher_cache_format import FORMAT_VERSION
from keras_ragkd.distillation.teacher_cache_format import METADATA_FILE
from keras_ragkd.distillation.teacher_cache_provenance import input_dataset
from keras_ragkd.distillation.teacher_cache_provenance import update_hash
from keras_ragkd.io_utils import file_record
from keras_ragkd.io_utils import fsync_directory
from keras_ragkd.io_utils import read_json_record
from keras_ragkd.io_utils import replace_directory
from keras_ragkd.io_utils import write_json
from keras_ragkd.validation import is_integer

PROGRESS_FILE = "progress.json"
# A checkpoint (flush + progress record) at most this often, and after the
# last batch: a kill loses at most this much teacher time.
CHECKPOINT_SECONDS = 2.0
_UINT16_VOCABULARY = 1 << 16


def staging_path(directory):
    """The staging folder of a build of `directory`: `.<name>.partial`.

    Example:

    >>> staging_path("/data/caches/smollm2")
    '/data/caches/.smollm2.partial'
    """
    parent, name = os.path.split(os.path.abspath(directory))
    return os.path.join(parent, f".{name}.partial")


def reduce_logits(logits, top_k, temperature):
    """The cached fields of float32 `logits` (`(..., vocab)`), in TensorFlow.

    Full logits, or the `top_k` largest logits (descending), their indices
    and the log of the probability mass outside them at `temperature`.

    Args:
        logits: float32 tensor `(..., vocab)`.
        top_k: `None` (keep every logit) or the number of logits to keep.
        temperature: the temperature of the rest mass (with `top_k`).

    Returns:
        A dict of tensors keyed by the `cached_batch` field names.

    Example:

    >>> import numpy as np
    >>> logits = np.log(np.array([[0.5, 0.3, 0.2]], "float32"))
    >>> fields = reduce_logits(logits, top_k=1, temperature=1.0)
    >>> fields["teacher_top_indices"].numpy().tolist()
    [[0]]
    >>> round(float(np.exp(fields["teacher_rest_log_mass"][0])), 4)
    0.5
    """
    if top_k is None:
        return {cached_batch.TEACHER_LOGITS: logits}
    vocabulary_size = logits.shape[-1]
    if vocabulary_size is not None and top_k > vocabulary_size:
        raise ValueError(
            f"`top_k` cannot exceed the teacher's vocabulary ({vocabulary_size}). "
            f"Received: top_k={top_k}"
        )
    top_logits, top_indices, rest_log_mass = top_k_tail.from_logits(logits, top_k, temperature)
    return {
        cached_batch.TEACHER_TOP_LOGITS: top_logits,
        cached_batch.TEACHER_TOP_INDICES: top_indices,
        cached_batch.TEACHER_REST_LOG_MASS: rest_log_mass,
    }


def _batch_free_signature(dataset):
    """The inputs' `TensorSpec`s with a `None` batch dimension, or `None`."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        return None
    leaves = tf.nest.flatten(spec[0])
    if not leaves or not all(isinstance(s, tf.TensorSpec) and s.shape.rank for s in leaves):
        return None
    return tf.nest.map_structure(
        lambda s: tf.TensorSpec([None] + s.shape[1:], s.dtype), spec[0]
    )


def teacher_function(teacher, dataset, top_k, temperature):
    """`x -> (fields, vocabulary_size)`, traced once for all batch sizes."""

    def outputs(x):
        logits = tf.cast(teacher(x, training=False), "float32")
        return reduce_logits(logits, top_k, temperature), tf.shape(logits)[-1]

    signature = _batch_free_signature(dataset)
    if signature is None:
        return tf.function(outputs, reduce_retracing=True)
    return tf.function(outputs, input_signature=[signature])


def resume_key(metadata):
    """What must match for a build to continue another's staging folder."""
    provenance = dict(metadata["provenance"])
    # The teacher's weights, not its (automatic) name or class, identify it.
    teacher = {k: v for k, v in provenance.pop("teacher").items()
               if k not in ("name", "class")}
    index = provenance.pop("index")
    if index is not None:
        index = {k: v for k, v in index.items() if k != "directory"}
    keys = ("count", "fingerprint", "batch_sizes", "top_k", "temperature", "dtype")
    return {**{k: metadata[k] for k in keys}, "teacher": teacher, "index": index,
            **provenance}


@contextlib.contextmanager
def claimed_staging(directory):
    """The staging folder of `directory`, locked against other builds."""
    staging = staging_path(directory)
    descriptor = _lock_staging(staging)
    try:
        yield staging
    finally:
        os.close(descriptor)


def _lock_staging(staging):
    """A descriptor holding `flock` on the folder now named `staging`."""
    while True:
        with contextlib.suppress(FileExistsError):
            os.mkdir(staging)  # 0o777 minus the umask
        try:
            descriptor = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue  # Swapped in by a build that just finished.
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(descriptor)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise ValueError(
                "Another live process is building this TeacherCache; wait for it "
                f"or build elsewhere. Received: staging={staging!r}"
            ) from None
        # The holder may have swapped this folder in before we locked it.
        current = _stat_or_none(staging)
        if current is not None and os.path.samestat(os.fstat(descriptor), current):
            return descriptor
        os.close(descriptor)


def _stat_or_none(path):
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _clear(folder):
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


class _FieldFiles:
    """The preallocated, memory-mapped `.npy` file of each cached field."""

    def __init__(self, folder, count):
        self.folder, self.count = folder, count
        self.arrays = {}

    def specs(self):
        return {name: {"dtype": a.dtype.str, "shape": list(a.shape[1:])}
                for name, a in self.arrays.items()}

    def path(self, name):
        return os.path.join(self.folder, f"{name}.npy")

    def create(self, name, dtype, shape):
        self.arrays[name] = np.lib.format.open_memmap(
            self.path(name), mode="w+", dtype=dtype, shape=(self.count,) + tuple(shape)
        )

    def reopen(self, specs):
        """Opens the files a checkpoint names; False (none open) if any is
        not as recorded."""
        for name, spec in specs.items():
            array = self._recorded_array(name, spec)
            if array is None:
                self.arrays.clear()
                return False
            self.arrays[name] = array
        return bool(self.arrays)

    def _recorded_array(self, name, spec):
        if name not in FIELDS:  # Before joining it to a path.
            return None
        try:
            array = np.lib.format.open_memmap(self.path(name), mode="r+")
            shape_matches = list(array.shape) == [self.count] + list(spec["shape"])
            return array if shape_matches and array.dtype.str == spec["dtype"] else None
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def write(self, start, fields):
        for name, array in fields.items():
            if name not in self.arrays:
                self.create(name, array.dtype, array.shape[1:])
            target = self.arrays[name]
            if target.shape[1:] != array.shape[1:]:
                raise ValueError(
                    "Every batch must give teacher outputs of the same per-example "
                    f"shape (pad sequences to a fixed length). Expected {name} shape "
                    f"{target.shape[1:]}. Received: shape={array.shape[1:]}"
                )
            target[start : start + len(array)] = array

    def flush(self):
        for array in self.arrays.values():
            array.flush()

    def close(self):
        self.flush()
        self.arrays.clear()


def _resume(staging, files, key, num_batches):
    """`(batches on disk, vocabulary size)` in `staging` for this build.

    `(0, None)` when nothing there belongs to it (or no readable progress
    record of this format): the build starts over.
    """
    try:
        progress = read_json_record(os.path.join(staging, PROGRESS_FILE),
                                    "TeacherCache progress record", "`TeacherCache.build`",
                                    FORMAT_VERSION)
    except ValueError:
        return 0, None
    if progress.get("resume_key") != key:
        return 0, None
    done, specs = progress.get("batches_done"), progress.get("fields")
    vocabulary_size = progress.get("vocabulary_size")
    if not (is_integer(done) and done <= num_batches and isinstance(specs, dict)
            and is_integer(vocabulary_size) and files.reopen(specs)):
        return 0, None
    return done, vocabulary_size


def _checkpoint(staging, files, key, done, vocabulary_size):
    files.flush()
    record = {"format_version": FORMAT_VERSION, "resume_key": key, "batches_done": done,
              "vocabulary_size": vocabulary_size, "fields": files.specs()}
    write_json(os.path.join(staging, PROGRESS_FILE), record)


def _as_stored(fields, dtype, vocabulary_size):
    index_dtype = "uint16" if vocabulary_size <= _UINT16_VOCABULARY else "int32"
    return {
        name: value.numpy().astype(
            index_dtype if name == cached_batch.TEACHER_TOP_INDICES else dtype
        )
        for name, value in fields.items()
    }


def write_cache(teacher, dataset, directory, metadata, resume, verbose):
    """Writes the cache folder `directory`; returns its complete metadata.

    Args:
        teacher: the Keras model.
        dataset: the batched dataset.
        directory: the absolute target folder.
        metadata: the build's metadata so far (data, reduction, provenance).
        resume: continue a killed build's staging folder if it matches.
        verbose: `0` for silence, otherwise a progress bar.
    """
    key = json.loads(json.dumps(resume_key(metadata)))
    num_batches = len(metadata["batch_sizes"])
    with claimed_staging(directory) as staging:
        files = _FieldFiles(staging, metadata["count"])
        done, vocabulary_size = (
            _resume(staging, files, key, num_batches) if resume else (0, None)
        )
        if done == 0:
            _clear(staging)
        elif verbose:
            print(f"Resuming the TeacherCache build at batch {done}/{num_batches}.")
        run = _Run(staging, files, key, metadata, done, vocabulary_size)
        try:
            vocabulary_size = run.compute(teacher, dataset, verbose)
        except BaseException:
            if not os.path.exists(os.path.join(staging, PROGRESS_FILE)):
                shutil.rmtree(staging, ignore_errors=True)  # Nothing to resume.
            raise
        fields = sorted(files.arrays)
        files.close()
        metadata = dict(
            metadata,
            fields=fields,
            vocabulary_size=vocabulary_size,
            files={name: {"path": f"{name}.npy", **file_record(files.path(name))}
                   for name in fields},
        )
        write_json(os.path.join(staging, METADATA_FILE), metadata)
        os.remove(os.path.join(staging, PROGRESS_FILE))
        fsync_directory(staging)
        replace_directory(staging, directory)
    return metadata


class _Run:
    """One pass of a build over the dataset, from batch `done` on."""

    def __init__(self, staging, files, key, metadata, done, vocabulary_size):
        self.staging, self.files, self.key, self.metadata = staging, files, key, metadata
        self.done, self.vocabulary_size = done, vocabulary_size
        self.offsets = np.cumsum([0] + metadata["batch_sizes"])

    def compute(self, teacher, dataset, verbose):
        """Runs the teacher on the batches not on disk; returns the vocabulary size."""
        metadata = self.metadata
        predict = teacher_function(teacher, dataset, metadata["top_k"], metadata["temperature"])
        num_batches = len(self.offsets) - 1
        progbar = keras.utils.Progbar(num_batches, verbose=0 if verbose == 0 else 1,
                                      unit_name="batch")
        digest, seen = hashlib.sha256(), 0
        last_checkpoint = time.monotonic()
        for step, x in enumerate(input_dataset(dataset)):
            update_hash(digest, x)
            seen = step + 1
            if step < self.done:
                if seen == self.done:
                    progbar.update(seen)
                continue
            fields, vocabulary_size = predict(x)
            self.vocabulary_size = int(vocabulary_size)
            start = int(self.offsets[step])
            self.files.write(start, _as_stored(fields, metadata["dtype"], self.vocabulary_size))
            now = time.monotonic()
            if seen < num_batches and now - last_checkpoint >= CHECKPOINT_SECONDS:
                self.checkpoint(seen)
                last_checkpoint = now
            progbar.update(seen)
        if seen != num_batches or digest.hexdigest() != metadata["fingerprint"]:
            raise ValueError(
                "The dataset gave other inputs on a second pass: a TeacherCache needs "
                "a deterministic dataset (no unseeded shuffle or random augmentation). "
                f"Expected {num_batches} batches with input fingerprint "
                f"{metadata['fingerprint']}. Received: {seen} batches with "
                f"fingerprint={digest.hexdigest()}"
            )
        if self.done < num_batches:
            self.checkpoint(num_batches)  # The inputs checked: all on disk.
        return self.vocabulary_size

    def checkpoint(self, done):
        """Flushes the files, then records `done` batches atomically."""
        _checkpoint(self.staging, self.files, self.key, done, self.vocabulary_size)
