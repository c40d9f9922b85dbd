"""Atomic file and folder writes shared by every artifact of the package.

A process killed in the middle of a save must leave the previous version
loadable: files are written beside their destination and `os.replace`d;
folders are staged beside theirs and swapped in with one atomic
`renameat2(RENAME_EXCHANGE)` where the OS offers it.
"""

import ctypes
import os
import shutil
import tempfile

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def fsync_directory(directory):
    """Flushes a folder's entries (new names, renames) to disk."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


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
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder
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

    Args:
        staging: a complete folder on the same file system as `directory`.
        directory: the destination folder.
    """
    parent = os.path.dirname(os.path.abspath(directory))
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
