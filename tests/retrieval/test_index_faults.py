"""A saved index under faults: damaged files, hostile manifests, other users,
many threads. (Kills during `save`: `tests/test_faults.py`.)"""

import json
import multiprocessing
import os
import shutil
import stat
import tempfile
import threading

import faiss
import numpy as np
import pytest

from keras_ragkd.retrieval import PassageIndex


def _index(factory="Flat", count=300, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    passages = [{"id": f"p{i}", "text": f"passage {i}"} for i in range(count)]
    return PassageIndex.from_embeddings(passages, rng.normal(size=(count, dim)), factory)


@pytest.fixture
def saved(tmp_path):
    directory = tmp_path / "kb"
    _index().save(directory)
    manifest = json.loads((directory / "manifest.json").read_text())
    return directory, manifest, directory / manifest["data_folder"]


@pytest.mark.parametrize("name", ["index.faiss", "passages.jsonl", "embeddings.npy"])
def test_truncated_file_is_refused_by_name(saved, name):
    directory, _, data = saved
    path = data / name
    path.write_bytes(path.read_bytes()[:-7])
    expected = rf"truncated.*Received: file='.*{name}' of \d+ bytes"
    with pytest.raises(ValueError, match=expected):
        PassageIndex.load(directory)


@pytest.mark.parametrize("name", ["index.faiss", "passages.jsonl", "embeddings.npy"])
def test_corrupted_file_is_refused_by_name(saved, name):
    directory, _, data = saved
    path = data / name
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=rf"SHA-256 mismatch.*Received: file='.*{name}'"):
        PassageIndex.load(directory)
    assert PassageIndex.describe(directory)["checksums"] == "damaged"


def test_unverified_load_still_refuses_unreadable_files(saved):
    directory, _, data = saved
    path = data / "passages.jsonl"
    content = bytearray(path.read_bytes())
    content[5] = 0xFF  # Not UTF-8; same size.
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=r"not UTF-8. Received: '.*passages.jsonl'"):
        PassageIndex.load(directory, verify_checksums=False)


def test_truncated_manifest_is_refused_by_name(saved):
    directory, _, _ = saved
    manifest = directory / "manifest.json"
    manifest.write_bytes(manifest.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"not valid JSON.*Received: file='.*manifest.json'"):
        PassageIndex.load(directory)


@pytest.mark.parametrize("where", ["data_folder", "files"])
def test_manifest_naming_files_outside_the_folder_is_refused(saved, tmp_path, where):
    directory, manifest, data = saved
    # A complete, valid index next door that the manifest points to.
    outside = tmp_path / "outside"
    shutil.copytree(data, outside)
    if where == "data_folder":
        manifest["data_folder"] = "../outside"
    else:
        manifest["files"]["embeddings"]["path"] = "../../outside/embeddings.npy"
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"naming files of its data folder. Received: manifest="):
        PassageIndex.load(directory)
    with pytest.raises(ValueError, match=r"Received: manifest="):
        PassageIndex.describe(directory)


def test_data_file_linked_outside_the_folder_is_refused(saved, tmp_path):
    directory, _, data = saved
    outside = tmp_path / "embeddings.npy"
    shutil.move(data / "embeddings.npy", outside)
    os.symlink(outside, data / "embeddings.npy")  # Same bytes, same checksum.
    with pytest.raises(ValueError, match=r"link to a file outside.*Received: file="):
        PassageIndex.load(directory)


def _modes(directory):
    modes = {}
    for root, folders, files in os.walk(directory):
        modes[os.path.relpath(root, directory)] = stat.S_IMODE(os.stat(root).st_mode)
        for name in files:
            path = os.path.join(root, name)
            modes[os.path.relpath(path, directory)] = stat.S_IMODE(os.stat(path).st_mode)
    return modes


def _with_umask(mask, function):
    previous = os.umask(mask)
    try:
        return function()
    finally:
        os.umask(previous)


@pytest.mark.parametrize("mask, file_mode, folder_mode",
                         [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_saved_index_has_the_modes_of_plain_user_files(tmp_path, mask, file_mode, folder_mode):
    directory = str(tmp_path / "kb")
    _with_umask(mask, lambda: _index().save(directory))
    _with_umask(mask, lambda: _index(seed=1).save(directory))  # Over an existing one.
    modes = _modes(directory)
    assert len(modes) == 6  # ., manifest.json, data-*/ and its three files
    for name, mode in modes.items():
        expected = folder_mode if os.path.isdir(os.path.join(directory, name)) else file_mode
        assert mode == expected, (name, oct(mode))


def _load_as_nobody(directory, queue):
    os.setgid(65534)
    os.setuid(65534)
    try:
        queue.put(len(PassageIndex.load(directory)))
    except Exception as error:  # Reported to the test.
        queue.put(repr(error))


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_another_user_loads_a_shared_index():
    shared = tempfile.mkdtemp(prefix="shared-index-", dir="/tmp")
    try:
        os.chmod(shared, 0o755)
        directory = os.path.join(shared, "kb")
        _with_umask(0o022, lambda: _index().save(directory))
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        process = context.Process(target=_load_as_nobody, args=(directory, queue))
        process.start()
        result = queue.get(timeout=60)
        process.join(30)
        assert result == 300
    finally:
        shutil.rmtree(shared)


def _serial(index, queries, sizes):
    # One OpenMP thread: FAISS's per-call thread team makes 10k tiny searches
    # 10-30x slower on a busy 2-core machine; results do not depend on it.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return [index.search_arrays(queries[i : i + n], k=5)[:2]
                for i, n in zip(range(len(queries)), sizes)]
    finally:
        faiss.omp_set_num_threads(threads)


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_eight_threads_search_like_one(factory):
    """10k searches (1-3 queries each, `search` and `search_arrays`) by 8
    threads at once on one index give what one thread gets."""
    index = _index(factory, count=2000, dim=32)
    queries = np.random.default_rng(1).normal(size=(10_000, 32)).astype("float32")
    sizes = np.random.default_rng(2).integers(1, 4, size=10_000)
    serial = _serial(index, queries, sizes)
    results = [None] * 10_000
    barrier = threading.Barrier(8)
    errors = []

    def work(thread):
        barrier.wait()
        try:
            for i in range(thread, 10_000, 8):
                if i % 2:
                    found = index.search(queries[i : i + sizes[i]], k=5)
                    results[i] = (found.rows, found.scores)
                else:
                    results[i] = index.search_arrays(queries[i : i + sizes[i]], k=5)[:2]
        except Exception as error:  # Reported below.
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for i, ((rows, scores), (expected_rows, expected_scores)) in enumerate(
        zip(results, serial)
    ):
        np.testing.assert_array_equal(rows, expected_rows, err_msg=f"search {i}")
        np.testing.assert_array_equal(scores, expected_scores, err_msg=f"search {i}")
