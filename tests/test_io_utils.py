import os

import pytest

from keras_ragkd import io_utils


def _folder_with(path, text):
    os.makedirs(path)
    with open(os.path.join(path, "data.txt"), "w") as f:
        f.write(text)
    return path


def _read(path):
    with open(os.path.join(path, "data.txt")) as f:
        return f.read()


def test_replace_directory_creates_then_swaps(tmp_path):
    target = str(tmp_path / "artifact")
    io_utils.replace_directory(_folder_with(str(tmp_path / "a"), "one"), target)
    assert _read(target) == "one"
    io_utils.replace_directory(_folder_with(str(tmp_path / "b"), "two"), target)
    assert _read(target) == "two"
    assert sorted(os.listdir(tmp_path)) == ["artifact"]


def test_exchange_is_atomic_on_linux(tmp_path):
    first = _folder_with(str(tmp_path / "first"), "1")
    second = _folder_with(str(tmp_path / "second"), "2")
    assert io_utils._exchange(first, second)
    assert (_read(first), _read(second)) == ("2", "1")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = str(tmp_path / "manifest.json")
    io_utils.atomic_write(path, lambda f: f.write("old"), mode="w")

    def crash(f):
        f.write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        io_utils.atomic_write(path, crash, mode="w")
    assert open(path).read() == "old"
    assert os.listdir(tmp_path) == ["manifest.json"]
