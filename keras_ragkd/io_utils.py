"""How every artifact of the package is written and read back: atomically, checked.

A process killed in the middle of a save must leave the previous version
loadable: files are written beside their destination and `os.replace`d
(`atomic_write`, `write_json`); folders are staged beside theirs
(`write_folder`) and swapped in with one atomic
`renameat2(RENAME_EXCHANGE)` where the OS offers it (`replace_directory`).

`tempfile` creates private files (0600) and folders (0700); what is staged
here gets the modes of any file the user writes (0666 / 0777 less the process
umask) before it is moved into place, so an artifact on a shared machine is
readable by the others just like `open(path, "w")` output.

Readers check what they open: `read_json_record` refuses a missing, garbled
or other-version manifest; `file_record` gives the size and checksum a
manifest records and `check_files` compares a folder with them, naming the
damaged file; `is_member_name` refuses manifest entries that would lead
outside their folder.
"""

import ctypes
import hashlib
import json
import os
import shutil
import socket
import tempfile
import uuid

from keras_ragkd.validation import is_integer

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def fsync_directory(directory):
    """Flushes a folder's entries (new names, renames) to disk."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def current_umask():
    """The process umask, read without changing it where Linux allows.

    `os.umask` can only be read by setting it, which for a moment gives
    every file other threads create the mode 0666; `/proc/self/status`
    holds it on Linux 4.7+.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(path):
    """Gives a `tempfile`-made file (0600) or folder (0700) the mode a plain
    `open` / `os.mkdir` would have: 0666 / 0777 less the umask."""
    base = 0o777 if os.path.isdir(path) else 0o666
    os.chmod(path, base & ~current_umask())


def make_staging_directory(prefix, suffix="", dir=None):
    """A new uniquely named folder, created with the mode `os.mkdir` gives.

    Unlike `tempfile.mkdtemp` (mode 0700, then changed), the mode is right
    from the moment the folder exists, so a writer killed at any point never
    leaves a private folder behind.
    """
    parent = tempfile.gettempdir() if dir is None else os.fspath(dir)
    while True:
        staging = os.path.join(parent, f"{prefix}{uuid.uuid4().hex[:12]}{suffix}")
        try:
            os.mkdir(staging)  # 0o777 minus the umask
            return staging
        except FileExistsError:
            continue


def _host():
    return socket.gethostname().replace(".", "_")


def _owner_tag():
    return f"{_host()}-{os.getpid()}"


def stage_beside(path, kind):
    """A new empty folder beside `path` to write its next version in.

    Named `.<name>.<kind>.<host>-<pid>.<random>`, so that
    `remove_dead_staging(path)` can tell the leftovers of killed writers
    from folders other processes are still writing. Mode as from `os.mkdir`.
    """
    path = os.path.abspath(os.fspath(path))
    return make_staging_directory(
        prefix=f".{os.path.basename(path)}.{kind}.{_owner_tag()}.",
        dir=os.path.dirname(path),
    )


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_dead_staging(path):
    """Deletes folders `stage_beside(path, ...)` made for writers that died.

    Only folders of this host whose process is gone are removed (a reused
    pid only keeps a leftover a while longer).
    """
    path = os.path.abspath(os.fspath(path))
    parent, prefix = os.path.dirname(path), f".{os.path.basename(path)}."
    host = _host()
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix):].split(".")
        owner = parts[1] if len(parts) == 3 else ""
        owner_host, _, pid = owner.rpartition("-")
        if owner_host == host and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def sha256_of(path, chunk_bytes=1 << 22):
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_file(path):
    """Flushes a file's content to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def file_record(path):
    """`{"bytes", "sha256"}` of a file, as manifests record it (after fsync)."""
    fsync_file(path)
    return {"bytes": os.path.getsize(path), "sha256": sha256_of(path)}


def file_state(path, record, verify_checksums=True):
    """How a file compares with its `file_record`: `"ok"`, `"missing"`,
    `"size mismatch"`, `"checksum mismatch"` or `"size ok"` (checksum not
    verified)."""
    if not os.path.isfile(path):
        return "missing"
    if os.path.getsize(path) != record["bytes"]:
        return "size mismatch"
    if not verify_checksums:
        return "size ok"
    return "ok" if sha256_of(path) == record["sha256"] else "checksum mismatch"


def check_files(folder, records, artifact, verify_checksums=True):
    """Checks the files a manifest records, refusing the first damaged one by name.

    Args:
        folder: the folder the names are relative to; no file may lead
            outside it (through a symbolic link).
        records: `{relative path: {"bytes", "sha256"}}` (`file_record`),
            names already checked with `is_member_name`.
        artifact: what the folder is, for the messages (`"index"`).
        verify_checksums: bool, also compare SHA-256 checksums.

    Returns:
        `{relative path: absolute path}`.

    Example:

    >>> import os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> write_json(os.path.join(folder, "a.json"), [1, 2])
    >>> records = {"a.json": file_record(os.path.join(folder, "a.json"))}
    >>> write_json(os.path.join(folder, "a.json"), [1])
    >>> check_files(folder, records, "index")
    Traceback (most recent call last):
    ...
    ValueError: An index file is truncated or overwritten (expected 10 bytes)...of 6 bytes
    """
    folder = os.fspath(folder)
    article = "An" if artifact[0].lower() in "aeiou" else "A"
    paths = {}
    for name, record in sorted(records.items()):
        path = os.path.join(folder, *name.split("/"))
        if os.path.isfile(path) and not is_inside(path, folder):
            raise ValueError(
                f"{article} {artifact} file is a link to a file outside its folder "
                f"{folder!r}. Received: file={path!r} -> {os.path.realpath(path)!r}"
            )
        state = file_state(path, record, verify_checksums)
        if state == "missing":
            raise ValueError(
                f"The {artifact} in {folder!r} is incomplete. Received: missing file={path!r}"
            )
        if state == "size mismatch":
            raise ValueError(
                f"{article} {artifact} file is truncated or overwritten (expected "
                f"{record['bytes']} bytes). Received: file={path!r} of "
                f"{os.path.getsize(path)} bytes"
            )
        if state == "checksum mismatch":
            raise ValueError(
                f"{article} {artifact} file is corrupted (SHA-256 mismatch). "
                f"Received: file={path!r}"
            )
        paths[name] = path
    return paths


def read_json_record(path, what, writer, version, version_key="format_version"):
    """The JSON object in `path`, a manifest that records its format `version`.

    Args:
        path: the manifest or metadata file.
        what: what the file is, for the messages (`"index manifest"`).
        writer: what writes it (``"`PassageIndex.save`"``), for the messages.
        version: the only value of `version_key` this code reads.
        version_key: the key holding the format version.

    Returns:
        The parsed dict; its other keys are the caller's to check.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "manifest.json")
    >>> write_json(path, {"format_version": 2, "count": 3})
    >>> read_json_record(path, "index manifest", "`PassageIndex.save`", 2)["count"]
    3
    >>> read_json_record(path, "index manifest", "`PassageIndex.save`", 1)
    Traceback (most recent call last):
    ...
    ValueError: Unsupported index manifest format: this keras_ragkd reads version 1 only;
    it was written by a newer keras_ragkd, or is not an index manifest.
    Received: format_version=2 in '...manifest.json'
    """
    try:
        with open(path, "rb") as file:
            content = file.read()
    except OSError as error:
        raise ValueError(
            f"Expected a folder written by {writer}: {path!r} is not a readable {what} "
            f"({error.strerror}). Received: directory={os.path.dirname(path)!r}"
        ) from None
    try:
        record = json.loads(content.decode("utf-8"))
    except ValueError as error:  # Also `UnicodeDecodeError`.
        raise ValueError(
            f"The {what} is not valid JSON ({error}). Received: file={path!r}"
        ) from None
    if not isinstance(record, dict):
        raise ValueError(f"The {what} must hold a JSON object. Received: file={path!r}")
    found = record.get(version_key)
    if found != version:
        older = isinstance(version, int) and is_integer(found) and found < version
        article = "an" if what[0].lower() in "aeiou" else "a"
        advice = (
            f"rebuild it with {writer}" if older
            else f"it was written by a newer keras_ragkd, or is not {article} {what}"
        )
        raise ValueError(
            f"Unsupported {what} format: this keras_ragkd reads version {version!r} only; "
            f"{advice}. Received: {version_key}={found!r} in {path!r}"
        )
    return record


def is_member_name(name, relative_path=False):
    """Whether `name` stays inside the folder it is joined to.

    A plain file name (no folder separators, not `.`/`..`), or with
    `relative_path=True` a relative path of such names joined by `/`. A
    manifest naming `../x`, `/etc/passwd` or `a\\b` is refused before any file
    it names is opened.

    Example:

    >>> is_member_name("embeddings.npy"), is_member_name("../x")
    (True, False)
    >>> is_member_name("assets/0/vocabulary.txt", relative_path=True)
    True
    """
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name:
        return False
    parts = name.split("/") if relative_path else [name]
    return all(part not in ("", ".", "..") and "/" not in part for part in parts)


def is_inside(path, folder):
    """Whether `path`, symbolic links resolved, lies inside `folder`."""
    real_folder = os.path.realpath(folder)
    return os.path.commonpath([os.path.realpath(path), real_folder]) == real_folder


def atomic_write(path, write, mode="wb"):
    """Writes a file through a temporary sibling and `os.replace`.

    Args:
        path: destination file.
        write: callable that receives the open temporary file and writes it.
        mode: `"wb"` or `"w"` (text, UTF-8).

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "greeting.txt")
    >>> atomic_write(path, lambda f: f.write("hello"), mode="w")
    >>> open(path).read()
    'hello'
    """
    folder = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = _create_temporary_file(
        folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(descriptor, mode, encoding=encoding) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    fsync_directory(folder)


def write_json(path, content):
    """Writes `content` as UTF-8 JSON to `path` atomically (see `atomic_write`).

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "progress.json")
    >>> write_json(path, {"batches_done": 3})
    >>> json.load(open(path))
    {'batches_done': 3}
    """
    atomic_write(
        path, lambda f: json.dump(content, f, indent=1, sort_keys=True), mode="w"
    )


def _create_temporary_file(folder, prefix, suffix):
    """A new file, its mode right from creation (0666 less the umask)."""
    while True:
        temporary = os.path.join(folder, f"{prefix}{uuid.uuid4().hex[:12]}{suffix}")
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temporary
        except FileExistsError:
            continue


def write_folder(path, write, kind):
    """Calls `write(staging)` on a new folder beside `path`, then swaps it in.

    The leftovers of killed writers of `path` are removed first; every file
    written is flushed to disk before the finished folder replaces `path`
    (`replace_directory`), so a crash at any point leaves the previous
    version. A `write` that raises leaves nothing behind.

    Args:
        path: the destination folder (replaced if it exists).
        write: callable that receives the staging folder and fills it.
        kind: a word naming the staging folder (`.<name>.<kind>.<host>-<pid>.*`).

    Returns:
        The absolute destination path.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "model")
    >>> def write(staging):
    ...     write_json(os.path.join(staging, "config.json"), {"layers": 2})
    >>> _ = write_folder(path, write, kind="export")
    >>> os.listdir(path)
    ['config.json']
    """
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    remove_dead_staging(path)
    staging = stage_beside(path, kind)
    try:
        write(staging)
        _fsync_tree(staging)
        replace_directory(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def _fsync_tree(folder):
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                fsync_file(path)
        fsync_directory(root)


def _exchange(first, second):
    """Atomically swaps two paths; False where the OS cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
        _RENAME_EXCHANGE,
    )
    return result == 0


def replace_directory(staging, directory):
    """Moves a fully written `staging` folder to `directory`.

    An existing `directory` is swapped out atomically (Linux
    `renameat2(RENAME_EXCHANGE)`), so readers and a crash see either the old
    or the new folder, never none. Elsewhere the old folder is first renamed
    aside, leaving a moment in which only that renamed copy exists.

    A `staging` folder made by `tempfile.mkdtemp` (mode 0700) gets the mode
    of a folder made by `os.mkdir` first (0777 less the umask).

    Args:
        staging: a complete folder on the same file system as `directory`.
        directory: the destination folder.
    """
    parent = os.path.dirname(os.path.abspath(directory))
    apply_umask(staging)
    if not os.path.exists(directory):
        os.replace(staging, directory)
    elif _exchange(staging, directory):
        shutil.rmtree(staging, ignore_errors=True)
    else:
        retired = tempfile.mkdtemp(
            prefix=f".{os.path.basename(directory)}.", suffix=".old", dir=parent
        )
        os.replace(directory, os.path.join(retired, "previous"))
        os.replace(staging, directory)
        shutil.rmtree(retired, ignore_errors=True)
    fsync_directory(parent)
