"""On-disk format of a `PassageIndex`: atomic writes and verified reads.

A saved index is a folder:

```
manifest.json            # the commit record, replaced atomically
data-<hex>/index.faiss   # faiss.write_index
data-<hex>/passages.jsonl
data-<hex>/embeddings.npy
data-<hex>/tfidf_encoder.json  # only for some encoders: their fitted state
data-<hex>/tfidf_encoder.npz   # (see `encoder_records`)
```

The manifest names the data folder and holds each file's size and SHA-256,
and records how to rebuild the encoder (`"encoder"`, optional). Nothing is
pickled: JSON, `.npy`/`.npz` (read with `allow_pickle=False`) and FAISS's own
format only.
"""

import json
import os
import shutil

import faiss
import numpy as np

from keras_ragkd.io_utils import check_files
from keras_ragkd.io_utils import file_record
from keras_ragkd.io_utils import file_state
from keras_ragkd.io_utils import is_member_name
from keras_ragkd.io_utils import read_json_record

MANIFEST_FILE = "manifest.json"
DATA_FILES = {
    "index": "index.faiss",
    "passages": "passages.jsonl",
    "embeddings": "embeddings.npy",
}
# Manifest keys of further data files (an encoder's fitted state).
EXTRA_PREFIX = "encoder:"


def write_data_files(folder, faiss_index, passages, embeddings, extra_files=()):
    """Writes the three data files into `folder`; returns the manifest entries
    of those and of `extra_files` (names of files already in `folder`)."""
    paths = {key: os.path.join(folder, name) for key, name in DATA_FILES.items()}
    faiss.write_index(faiss_index, paths["index"])
    with open(paths["passages"], "w", encoding="utf-8") as f:
        for passage in passages:
            f.write(json.dumps(passage, ensure_ascii=False) + "\n")
    with open(paths["embeddings"], "wb") as f:
        np.save(f, np.ascontiguousarray(embeddings, dtype=np.float32))
    for name in extra_files:
        paths[EXTRA_PREFIX + name] = os.path.join(folder, name)
    return {
        key: {"path": os.path.basename(path), **file_record(path)}
        for key, path in paths.items()
    }


def remove_stale_data(directory, keep):
    """Deletes data folders and leftovers of earlier or interrupted saves."""
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        # `write_folder`'s staging folders are `.data-<hex>.staging.*`.
        stale_folder = name.startswith(("data-", ".data-")) and name != keep
        # `atomic_write`'s temporary manifests of interrupted saves.
        stale_manifest = name.startswith(f".{MANIFEST_FILE}.") and name.endswith(".tmp")
        if stale_folder and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif stale_manifest:
            os.remove(path)


def read_index_files(directory, format_version, mmap, verify_checksums, attempts=5,
                     read_extra=None):
    """Reads manifest and data files; returns `(manifest, faiss_index,
    embeddings, passages, extra)`, where `extra` is
    `read_extra(manifest, data_folder)` (None without `read_extra`).

    A save running at the same time (another process) may replace the
    manifest and delete the data folder it named while this reads it; the
    read then starts again from the new manifest.
    """
    for attempt in range(attempts):
        manifest = read_manifest(directory, format_version)
        try:
            paths = check_data_files(directory, manifest, verify_checksums)
            folder = os.path.join(directory, manifest["data_folder"])
            return (
                manifest,
                read_faiss_index(paths["index"], mmap),
                read_embeddings(paths["embeddings"], mmap),
                read_passages(paths["passages"]),
                None if read_extra is None else read_extra(manifest, folder),
            )
        except (ValueError, OSError):
            replaced = (
                read_manifest(directory, format_version)["data_folder"]
                != manifest["data_folder"]
            )
            if not replaced or attempt == attempts - 1:
                raise


def read_manifest(directory, format_version):
    path = os.path.join(directory, MANIFEST_FILE)
    manifest = read_json_record(path, "index manifest", "`PassageIndex.save`", format_version)
    required = {
        "format_version",
        "dim",
        "metric",
        "count",
        "encoder_identity",
        "index_factory",
        "search_parameters",
        "data_folder",
        "files",
    }
    if not required <= set(manifest):
        raise ValueError(
            f"The index manifest must have the keys {sorted(required)}. "
            f"Received: manifest={path!r}"
        )
    files = manifest["files"]
    if not isinstance(files, dict) or not all(
        isinstance(entry, dict)
        and {"path", "bytes", "sha256"} <= set(entry)
        and is_member_name(entry["path"])
        and entry["path"] == DATA_FILES.get(key, entry["path"])
        for key, entry in files.items()
    ) or not set(DATA_FILES) <= set(files) or not is_member_name(manifest["data_folder"]):
        raise ValueError(
            "The index manifest's `files` must map keys to "
            '{"path", "bytes", "sha256"} entries naming files of its data '
            f"folder. Received: manifest={path!r}"
        )
    return manifest


def check_data_files(directory, manifest, verify_checksums):
    """Checks presence, sizes (and checksums) of the data files; returns paths
    by manifest key (the three data files and any encoder files)."""
    folder = os.path.join(directory, manifest["data_folder"])
    files = manifest["files"]
    paths = check_files(
        folder, {entry["path"]: entry for entry in files.values()}, "index", verify_checksums
    )
    return {key: paths[entry["path"]] for key, entry in files.items()}


def file_states(directory, manifest, verify_checksums=True):
    """Each data file's state (see `io_utils.file_state`), by file name."""
    folder = os.path.join(directory, manifest["data_folder"])
    return {
        entry["path"]: {
            "bytes": entry["bytes"],
            "sha256": entry["sha256"],
            "state": file_state(os.path.join(folder, entry["path"]), entry, verify_checksums),
        }
        for _, entry in sorted(manifest["files"].items())
    }


def read_faiss_index(path, mmap):
    flags = faiss.IO_FLAG_MMAP if mmap else 0
    try:
        return faiss.read_index(path, flags)
    except RuntimeError as error:
        raise ValueError(
            f"FAISS cannot read the index file ({error}). Received: file={path!r}"
        ) from None


def read_embeddings(path, mmap):
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, EOFError) as error:
        raise ValueError(
            f"Cannot read the embeddings file ({error}). Received: file={path!r}"
        ) from None


def read_passages(path):
    passages = []
    for line_number, line in enumerate(_utf8_lines(path), start=1):
        try:
            passages.append(json.loads(line))
        except json.JSONDecodeError:
            raise ValueError(
                "The passages file is corrupted. "
                f"Received: {path!r} line {line_number}"
            ) from None
    return passages


def _utf8_lines(path):
    with open(path, "rb") as f:
        for line in f:
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(
                    f"The passages file is not UTF-8. Received: {path!r}"
                ) from None
