"""The on-disk format of a `TeacherCache` folder and the checks that read it.

A cache folder holds one `<field>.npy` per cached array and `metadata.json`,
which records the format version, the dataset (count, batch sizes, input
fingerprint), how the outputs were reduced (`top_k`, `temperature`, `dtype`),
what built them (`provenance`) and each array file's size and SHA-256.
`read_metadata` checks all of it before any file it names is opened.
"""

import json
import numbers
import os

from keras_ragkd.distillation import cached_batch
from keras_ragkd.io_utils import is_inside
from keras_ragkd.io_utils import is_member_name
from keras_ragkd.io_utils import sha256_of

METADATA_FILE = "metadata.json"
# 2: `metadata.json` records each array file's size and SHA-256.
# 3: `provenance` (teacher weights, index, num_docs); top-k indices may be
#    stored as uint16 when the vocabulary allows; `.npy` files written in place.
FORMAT_VERSION = 3
# The arrays a cache may hold (one `<field>.npy` each).
FIELDS = (
    cached_batch.TEACHER_LOGITS,
    cached_batch.TEACHER_TOP_LOGITS,
    cached_batch.TEACHER_TOP_INDICES,
    cached_batch.TEACHER_REST_LOG_MASS,
)
STORAGE_DTYPES = ("float32", "float16")
_REQUIRED_KEYS = ("count", "fingerprint", "batch_sizes", "fields", "top_k",
                  "temperature", "dtype", "vocabulary_size", "provenance", "files")


def check_format_version(version, path):
    """Raises `ValueError` unless `version` is the one this code reads.

    Example:

    >>> check_format_version(FORMAT_VERSION, "metadata.json")
    >>> check_format_version(2, "metadata.json")
    Traceback (most recent call last):
    ...
    ValueError: Unsupported TeacherCache format... Received: format_version=2 in 'metadata.json'
    """
    if version == FORMAT_VERSION:
        return
    advice = (
        "rebuild it with `TeacherCache.build`"
        if isinstance(version, int) and not isinstance(version, bool) and version < FORMAT_VERSION
        else "it was written by a newer keras_ragkd, or is not a TeacherCache"
    )
    raise ValueError(
        f"Unsupported TeacherCache format: this keras_ragkd reads version "
        f"{FORMAT_VERSION} only; {advice}. Received: format_version={version!r} in {path!r}"
    )


def is_count(value, minimum=0):
    """Whether `value` is an int (not a bool) `>= minimum`."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and (
        value >= minimum
    )


def read_metadata(path):
    """Parses and checks `metadata.json` before any file it names is opened.

    Args:
        path: the `metadata.json` file.

    Returns:
        The metadata dict.
    """
    try:
        with open(path, encoding="utf-8") as file:
            metadata = json.load(file)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"The TeacherCache metadata is not valid JSON ({error}). "
            f"Received: file={path!r}"
        ) from None
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    check_format_version(version, path)
    missing = [key for key in _REQUIRED_KEYS if key not in metadata]
    if missing:
        raise ValueError(
            f"The TeacherCache metadata lacks keys. Received: missing={missing} "
            f"in {path!r}"
        )
    problems = _metadata_problems(metadata)
    if problems:
        raise ValueError(
            f"The TeacherCache metadata is malformed. Received: {', '.join(problems)} "
            f"in {path!r}"
        )
    return metadata


def _metadata_problems(metadata):
    fields, files = metadata["fields"], metadata["files"]
    batch_sizes = metadata["batch_sizes"]
    problems = []
    if not is_count(metadata["count"]):
        problems.append(f"count={metadata['count']!r}")
    if not (isinstance(batch_sizes, list) and all(is_count(b, 1) for b in batch_sizes)
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
        and is_count(entry.get("bytes"))
        and isinstance(entry.get("sha256"), str)
        for name, entry in files.items()
    ):
        problems.append(
            "files (expected one {\"path\": \"<field>.npy\", \"bytes\", "
            f"\"sha256\"}} entry per field)={files!r:.200}"
        )
    top_k, temperature = metadata["top_k"], metadata["temperature"]
    if not (top_k is None or is_count(top_k, 1)):
        problems.append(f"top_k={top_k!r}")
    if not (temperature is None or (
        isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
        and temperature > 0
    )) or (top_k is None) != (temperature is None):
        problems.append(f"temperature={temperature!r}")
    if metadata["dtype"] not in STORAGE_DTYPES:
        problems.append(f"dtype={metadata['dtype']!r:.40}")
    if not is_count(metadata["vocabulary_size"], 1):
        problems.append(f"vocabulary_size={metadata['vocabulary_size']!r:.40}")
    if not isinstance(metadata["provenance"], dict):
        problems.append(f"provenance={metadata['provenance']!r:.80}")
    return problems


def check_array_file(directory, metadata, name, verify_checksums):
    """Checks one array file against its `metadata.json` entry.

    Args:
        directory: the cache folder.
        metadata: its checked metadata (`read_metadata`).
        name: the field.
        verify_checksums: bool, also compare the file's SHA-256.
    """
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
