"""Input files named on the command line or in a config are regular files, checked so.

A FIFO, a character device or a directory where a scene, a config, a gensteps file or an
HDF5 source is expected used to block forever (a FIFO with no writer) or fail deep inside
a library with a traceback. ``regular_file`` opens without blocking, checks the file type
and hands back a normal binary file object; ``check_regular`` does the same for readers
that open the path themselves (h5py). Files that must not even be reached through a link (a
delivery's, a lock) are opened with ``open_regular`` instead.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from engine.core.errors import BadInput


def regular_file(path: Path | str) -> BinaryIO:
    """Open ``path`` for reading; BadInput (exit 2) when it is missing or not a regular file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise BadInput("no such file", path) from None
    except IsADirectoryError:
        raise BadInput("is a directory, expected a file", path) from None
    except OSError as err:
        raise BadInput(f"cannot read: {err.strerror}", path) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise BadInput(f"is {kind}, expected a file", path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_regular(path: Path | str) -> None:
    """BadInput unless ``path`` is a regular file (for readers that open it themselves)."""
    regular_file(path).close()


def mode_kind(mode: int) -> str:
    """What an ``st_mode`` is, in words for a reason line ("FIFO", "symbolic link", ...)."""
    for test, what in (
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISREG, "regular file"),
    ):
        if test(mode):
            return what
    return "special file"


def file_kind(path: Path) -> str:
    """What a path is, from lstat (links are not followed), in words for a reason line."""
    try:
        return mode_kind(os.lstat(path).st_mode)
    except OSError:
        return "missing file"


def open_regular(path: Path) -> int:
    """Open a file we did not write (a delivery's, a lock) for reading without following a
    symbolic link; it must be a regular file (a FIFO would block a reader, a device would
    never end). Returns an fd; BadInput for a link or a special file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise BadInput("is a symbolic link, not a regular file", path) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BadInput(f"is a {file_kind(path)}, not a regular file", path)
    return fd
