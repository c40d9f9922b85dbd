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


def test_write_folder_leaves_the_previous_version_when_writing_fails(tmp_path):
    target = str(tmp_path / "artifact")
    io_utils.write_folder(target, lambda staging: _folder_with(staging + "/sub", "one"), "test")

    def crash(staging):
        _folder_with(staging + "/sub", "half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        io_utils.write_folder(target, crash, "test")
    assert _read(target + "/sub") == "one"
    assert os.listdir(tmp_path) == ["artifact"]


def test_check_files_names_the_missing_or_linked_file(tmp_path):
    folder = _folder_with(str(tmp_path / "artifact"), "data")
    records = {"data.txt": io_utils.file_record(os.path.join(folder, "data.txt"))}
    assert io_utils.check_files(folder, records, "cache") == {
        "data.txt": os.path.join(folder, "data.txt")
    }
    os.rename(os.path.join(folder, "data.txt"), str(tmp_path / "outside.txt"))
    with pytest.raises(ValueError, match=r"incomplete. Received: missing file='.*data.txt'"):
        io_utils.check_files(folder, records, "cache")
    os.symlink(str(tmp_path / "outside.txt"), os.path.join(folder, "data.txt"))
    with pytest.raises(ValueError, match=r"A cache file is a link.*Received: file="):
        io_utils.check_files(folder, records, "cache")


@pytest.mark.parametrize("content, message", [
    (None, r"Expected a folder written by `Writer.save`: .* is not a readable thing manifest"),
    (b"{", r"The thing manifest is not valid JSON .*Received: file="),
    (b"\xff", r"The thing manifest is not valid JSON .*Received: file="),
    (b"[1]", r"must hold a JSON object. Received: file="),
    (b'{"format_version": 1}', r"rebuild it with `Writer.save`. Received: format_version=1"),
    (b'{"format_version": 3}', r"newer keras_ragkd.*Received: format_version=3 in"),
])
def test_read_json_record_refuses_what_it_cannot_read(tmp_path, content, message):
    path = tmp_path / "manifest.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        io_utils.read_json_record(str(path), "thing manifest", "`Writer.save`", 2)
