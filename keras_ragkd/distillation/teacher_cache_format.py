"""The on-disk format of a `TeacherCache` folder and the checks that read it.

A cache folder holds one `<field>.npy` per cached array and `metadata.json`,
which records the format version, the dataset (count, batch sizes, input
fingerprint), how the outputs were reduced (`top_k`, `temperature`, `dtype`),
what built them (`provenance`) and each array file's size and SHA-256.
`read_metadata` checks all of it before any file it names is opened.
"""

import numbers
import os

from keras_ragkd.distillation import cached_batch
from keras_ragkd.io_utils import check_files
from keras_ragkd.io_utils import is_member_name
from keras_ragkd.io_utils import read_json_record
from keras_ragkd.validation import is_integer

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


def read_metadata(directory):
    """Parses and checks a cache folder's `metadata.json` before any file it
    names is opened.

    Args:
        directory: the cache folder.

    Returns:
        The metadata dict.

    Example:

    >>> import tempfile
    >>> read_metadata(tempfile.mkdtemp())
    Traceback (most recent call last):
    ...
    ValueError: Expected a folder written by `TeacherCache.build`: ...metadata.json' is not
    a readable TeacherCache metadata (No such file or directory). Received: directory=...
    """
    path = os.path.join(directory, METADATA_FILE)
    metadata = read_json_record(path, "TeacherCache metadata", "`TeacherCache.build`",
                                FORMAT_VERSION)
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
    if not is_integer(metadata["count"], minimum=0):
        problems.append(f"count={metadata['count']!r}")
    if not (isinstance(batch_sizes, list) and all(is_integer(b) for b in batch_sizes)
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
        and is_integer(entry.get("bytes"), minimum=0)
        and isinstance(entry.get("sha256"), str)
        for name, entry in files.items()
    ):
        problems.append(
            "files (expected one {\"path\": \"<field>.npy\", \"bytes\", "
            f"\"sha256\"}} entry per field)={files!r:.200}"
        )
    top_k, temperature = metadata["top_k"], metadata["temperature"]
    if not (top_k is None or is_integer(top_k)):
        problems.append(f"top_k={top_k!r}")
    if not (temperature is None or (
        isinstance(temperature, numbers.Real) and not isinstance(temperature, bool)
        and temperature > 0
    )) or (top_k is None) != (temperature is None):
        problems.append(f"temperature={temperature!r}")
    if metadata["dtype"] not in STORAGE_DTYPES:
        problems.append(f"dtype={metadata['dtype']!r:.40}")
    if not is_integer(metadata["vocabulary_size"]):
        problems.append(f"vocabulary_size={metadata['vocabulary_size']!r:.40}")
    if not isinstance(metadata["provenance"], dict):
        problems.append(f"provenance={metadata['provenance']!r:.80}")
    return problems


def check_array_files(directory, metadata, verify_checksums):
    """Checks every array file against its `metadata.json` entry.

    Args:
        directory: the cache folder.
        metadata: its checked metadata (`read_metadata`).
        verify_checksums: bool, also compare the files' SHA-256.
    """
    records = {entry["path"]: entry for entry in metadata["files"].values()}
    check_files(directory, records, "TeacherCache", verify_checksums)
