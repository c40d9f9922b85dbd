"""A `TeacherCache` under faults: damaged files, hostile metadata, file modes.
(Kills during `build`: `tests/test_faults.py`; resuming after one:
`tests/distillation/test_teacher_cache_resume.py`.)"""

import json
import os
import shutil
import stat

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ragkd.distillation import TeacherCache


@pytest.fixture(scope="module")
def teacher_and_data():
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(5)])
    x = np.random.default_rng(0).random((40, 8), dtype="float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, np.arange(40) % 5)).batch(16)
    return teacher, dataset


@pytest.fixture
def built(teacher_and_data, tmp_path):
    teacher, dataset = teacher_and_data
    directory = tmp_path / "cache"
    TeacherCache.build(teacher, dataset, directory, top_k=2, temperature=2.0, verbose=0)
    return directory


NAMES = ["teacher_top_logits.npy", "teacher_top_indices.npy", "teacher_rest_log_mass.npy"]


@pytest.mark.parametrize("name", NAMES)
def test_truncated_file_is_refused_by_name(built, name):
    path = built / name
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match=rf"truncated.*Received: file='.*{name}' of \d+ bytes"):
        TeacherCache.load(built)


@pytest.mark.parametrize("name", NAMES)
def test_corrupted_file_is_refused_by_name(built, name):
    path = built / name
    content = bytearray(path.read_bytes())
    content[-1] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=rf"SHA-256 mismatch\). Received: file='.*{name}'"):
        TeacherCache.load(built)
    TeacherCache.load(built, verify_checksums=False)  # Sizes and shapes still agree.


def test_damaged_header_is_refused_without_checksums(built):
    path = built / "teacher_top_logits.npy"
    content = bytearray(path.read_bytes())
    content[:6] = b"garbag"  # Not a `.npy` file any more, same size.
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=r"cannot be read as a `.npy` array.*Received: file="):
        TeacherCache.load(built, verify_checksums=False)


def test_array_of_another_shape_is_refused(built):
    path = built / "teacher_top_logits.npy"
    np.save(path, np.zeros((39, 2), "float32"))
    metadata = json.loads((built / "metadata.json").read_text())
    metadata["files"]["teacher_top_logits"]["bytes"] = os.path.getsize(path)
    (built / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=r"does not hold the 40 examples.*shape=\(39, 2\)"):
        TeacherCache.load(built, verify_checksums=False)


def test_truncated_metadata_is_refused_by_name(built):
    path = built / "metadata.json"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"not valid JSON.*Received: file='.*metadata.json'"):
        TeacherCache.load(built)


@pytest.mark.parametrize("edit, received", [
    (lambda m: m["fields"].append("../../outside"), "fields="),
    (lambda m: m["files"]["teacher_top_logits"].update(path="../outside.npy"), "files"),
    (lambda m: m.update(count=-1), "count=-1"),
    (lambda m: m.update(batch_sizes=[16, 16]), "batch_sizes="),
    (lambda m: m.update(format_version=1), "format_version=1"),
    (lambda m: m.pop("files"), "missing=['files']"),
])
def test_metadata_naming_files_outside_or_malformed_is_refused(built, tmp_path, edit, received):
    # A valid array next door that a hostile metadata could point to.
    shutil.copy(built / "teacher_top_logits.npy", tmp_path / "outside.npy")
    metadata = json.loads((built / "metadata.json").read_text())
    edit(metadata)
    (built / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=r"Received: .*" + received.replace("[", r"\[")):
        TeacherCache.load(built)


def test_array_linked_outside_the_folder_is_refused(built, tmp_path):
    outside = tmp_path / "outside.npy"
    shutil.move(built / "teacher_top_logits.npy", outside)
    os.symlink(outside, built / "teacher_top_logits.npy")
    with pytest.raises(ValueError, match=r"link to a file outside.*Received: file="):
        TeacherCache.load(built)


def test_cache_has_the_modes_of_plain_user_files(teacher_and_data, tmp_path):
    teacher, dataset = teacher_and_data
    previous = os.umask(0o022)
    try:
        TeacherCache.build(teacher, dataset, tmp_path / "cache", verbose=0)
        TeacherCache.build(teacher, dataset, tmp_path / "cache", overwrite=True, verbose=0)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "cache").st_mode) == 0o755
    for name in os.listdir(tmp_path / "cache"):
        assert stat.S_IMODE(os.stat(tmp_path / "cache" / name).st_mode) == 0o644, name
    assert os.listdir(tmp_path) == ["cache"]
