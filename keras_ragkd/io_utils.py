"""Atomic file and folder writes shared by every artifact of the package.

A process killed in the middle of a save must leave the previous version
loadable: files are written beside their destination and `os.replace`d;
folders are staged beside theirs and swapped in with one atomic
`renameat2(RENAME_EXCHANGE)` where the OS offers it.

`tempfile` creates private files (0600) and folders (0700); what is staged
here gets the modes of any file the user writes (0666 / 0777 less the process
umask) before it is moved into place, so an artifact on a shared machine is
readable by the others just like `open(path, "w")` output.

Readers check what they open: `sha256_of` / `file_record` give the size and
checksum a manifest records, `is_member_name` refuses manifest entries
that would lead outside their folder.
"""

import ctypes
import hashlib
import os
import shutil
import socket
import tempfile
import uuid

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


def _create_temporary_file(folder, prefix, suffix):
    """A new file, its mode right from creation (0666 less the umask)."""
    while True:
        temporary = os.path.join(folder, f"{prefix}{uuid.uuid4().hex[:12]}{suffix}")
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temporary
        except FileExistsError:
            continue


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
