"""A `TeacherCache` build killed with SIGKILL continues where it stopped.

A writer process (forked from a fork server that imported `keras_ragkd`
once, as in `tests/test_faults.py`) builds a top-k cache of `(batch, 8,
49152)` logits over an existing cache; the test kills it once its progress
record reaches a random batch, checks that the previous cache is still the
one at the target, and runs the same build again. The rerun computes only
the batches the progress record did not hold (counted in the teacher), and
its folder equals an uninterrupted build's byte for byte.
"""

import json
import multiprocessing
import os
import random
import signal
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.distillation import TeacherCache
from keras_ragkd.distillation import teacher_cache_writer

_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(["keras_ragkd"])

SETUP = """
import keras
import numpy as np
import tensorflow as tf

EXAMPLES, TIME, VOCAB, BATCH = 64, 8, 49152, 2
TOP_K, TEMPERATURE = 32, 2.0

def make_teacher(seed=0):
    inputs = keras.Input((TIME,), dtype="int32")
    hidden = keras.layers.Embedding(100, 16)(inputs)
    teacher = keras.Model(inputs, keras.layers.Dense(VOCAB)(hidden), name="teacher")
    rng = np.random.default_rng(seed)
    teacher.set_weights(
        [rng.normal(size=w.shape).astype("float32") for w in teacher.get_weights()]
    )
    return teacher

def make_dataset():
    x = np.random.default_rng(1).integers(0, 100, (EXAMPLES, TIME)).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, x)).batch(BATCH)
"""

WRITER = SETUP + """
import sys
from keras_ragkd.distillation import TeacherCache
from keras_ragkd.distillation import teacher_cache_writer

sys.stdout = open(LOG, "w", buffering=1)
teacher_cache_writer.CHECKPOINT_SECONDS = 0.0  # A checkpoint after every batch.
TeacherCache.build(make_teacher(), make_dataset(), TARGET, top_k=TOP_K,
                   temperature=TEMPERATURE, overwrite=True, verbose=1)
"""

_SHARED = {}
exec(textwrap.dedent(SETUP), _SHARED)
NUM_BATCHES = _SHARED["EXAMPLES"] // _SHARED["BATCH"]
_TEACHER_CALLS = tf.Variable(0)  # Not a weight of the teacher.


class _CountedTeacher(keras.Model):
    """The writer's teacher, counting its calls (one per batch)."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner
        self.built = True

    def call(self, x, training=False):
        _TEACHER_CALLS.assign_add(1)
        return self.inner(x, training=training)


def _counted_build(directory, **kwargs):
    """Builds in this process; returns the number of teacher calls."""
    _TEACHER_CALLS.assign(0)
    arguments = dict(top_k=_SHARED["TOP_K"], temperature=_SHARED["TEMPERATURE"],
                     overwrite=True, verbose=0)
    teacher = _CountedTeacher(_SHARED["make_teacher"](), name="teacher")
    TeacherCache.build(teacher, _SHARED["make_dataset"](), directory, **{**arguments, **kwargs})
    return int(_TEACHER_CALLS.numpy())


def _batches_done(target):
    path = os.path.join(teacher_cache_writer.staging_path(target), "progress.json")
    try:
        with open(path) as file:
            return json.load(file)["batches_done"]
    except FileNotFoundError:
        return 0


def _kill_at_random_batch(tmp_path, target, after, name):
    """Starts a writer, SIGKILLs it once it has checkpointed a random batch
    past `after`; returns `(batches on disk, writer log)`."""
    log = str(tmp_path / f"{name}.log")
    namespace = {"TARGET": target, "LOG": log}
    process = _CONTEXT.Process(target=exec, args=(textwrap.dedent(WRITER), namespace),
                               daemon=True)
    process.start()
    kill_at = random.randint(after + 1, after + NUM_BATCHES // 4)
    deadline = time.monotonic() + 120
    try:
        while _batches_done(target) < kill_at:
            assert process.is_alive(), f"the writer exited by itself ({process.exitcode})"
            assert time.monotonic() < deadline, "the writer made no progress"
            time.sleep(0.001)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.join(30)
    assert process.exitcode == -signal.SIGKILL
    done = _batches_done(target)
    assert kill_at <= done < NUM_BATCHES
    return done, open(log).read()


def _folder_bytes(directory):
    return {name: open(os.path.join(directory, name), "rb").read()
            for name in sorted(os.listdir(directory))}


@pytest.mark.slow
def test_killed_build_resumes_and_equals_an_uninterrupted_build(tmp_path):
    reference = str(tmp_path / "reference")
    assert _counted_build(reference) == NUM_BATCHES
    target = str(tmp_path / "artifact")
    _counted_build(target, top_k=4)  # A previous cache at the target.
    previous = _folder_bytes(target)

    first, _ = _kill_at_random_batch(tmp_path, target, 0, "first")
    assert _folder_bytes(target) == previous
    second, log = _kill_at_random_batch(tmp_path, target, first, "second")
    assert f"Resuming the TeacherCache build at batch {first}/{NUM_BATCHES}." in log
    assert _folder_bytes(target) == previous and TeacherCache.load(target).top_k == 4

    assert _counted_build(target) == NUM_BATCHES - second
    assert _folder_bytes(target) == _folder_bytes(reference)
    assert sorted(os.listdir(tmp_path)) == ["artifact", "first.log", "reference", "second.log"]
    cache = TeacherCache.load(target)
    np.testing.assert_array_equal(
        cache.arrays()["teacher_top_indices"][:, :, 0],
        np.argmax(_SHARED["make_teacher"]().predict(_SHARED["make_dataset"](), verbose=0), -1),
    )


def _truncate_progress_record(target):
    path = os.path.join(teacher_cache_writer.staging_path(target), "progress.json")
    with open(path, "r+") as file:
        file.truncate(10)


def _point_progress_record_outside(target):
    path = os.path.join(teacher_cache_writer.staging_path(target), "progress.json")
    progress = json.loads(open(path).read())
    progress["fields"]["../outside"] = progress["fields"].pop("teacher_top_logits")
    open(path, "w").write(json.dumps(progress))


@pytest.mark.parametrize("change, damage", [
    ({"temperature": 3.0}, None),
    ({"resume": False}, None),
    ({}, _truncate_progress_record),
    ({}, _point_progress_record_outside),
])
def test_killed_build_of_other_arguments_or_damaged_starts_over(tmp_path, change, damage):
    target = str(tmp_path / "artifact")
    _kill_at_random_batch(tmp_path, target, 0, "writer")
    if damage is not None:
        damage(target)
    assert _counted_build(target, **change) == NUM_BATCHES
    fresh = str(tmp_path / "fresh")
    _counted_build(fresh, **change)
    assert _folder_bytes(target) == _folder_bytes(fresh)


def test_a_second_live_build_of_the_same_target_is_refused(tmp_path):
    target = str(tmp_path / "artifact")
    with teacher_cache_writer.claimed_staging(target) as staging:
        with pytest.raises(ValueError, match=r"Another live process.*Received: staging="):
            _counted_build(target)
        assert os.path.isdir(staging)
