"""Files below a trusted directory, reached and removed without following a symbolic link.

Why: retention removes files from areas that everyone in the workspace's group may write
(``logs/``, ``downlinks/``, ``incoming/``). A path string is resolved by the kernel at every
use, so a directory on it that is (or is swapped for) a link to elsewhere sends a ``stat``,
an ``open`` or an ``unlink`` outside the workspace: ``downlinks/<DLID>`` linked to another
tree made ``prune`` delete files there. Checking each component with ``lstat`` first does
not help: the swap can come between the check and the use.

How: a ``Tree`` opens its root with ``O_DIRECTORY | O_NOFOLLOW`` (the root itself must be a
real directory; what lies above it is the configuration's choice) and reaches everything
below it one component at a time, each opened with ``O_DIRECTORY | O_NOFOLLOW`` relative to
the directory descriptor before it (``openat``). A final name is examined, opened, unlinked
or removed relative to its parent's descriptor (``fstatat`` without following,
``openat(O_NOFOLLOW)``, ``unlinkat``). A link anywhere on the way fails with ``ELOOP`` or
``ENOTDIR`` (``on_link``), never followed; and once a directory's descriptor is held,
swapping that directory (or any above it) for a link changes nothing for it: the
descriptor stays the real directory. Unlinking a name never touches another name of the
same file (a hard link kept elsewhere keeps its data).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from types import TracebackType

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_LINK_ERRNOS = (errno.ELOOP, errno.ENOTDIR)
MAX_OPEN_DIRS = 64  # descriptors a tree keeps open; beyond, it starts again from its root

Parts = tuple[str, ...]


def norm(p: str | os.PathLike[str]) -> str:
    """An absolute, normalised path, as text (no link resolved: that is the point)."""
    return os.path.normpath(os.path.abspath(p))


def parts_under(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Parts | None:
    """``path``'s components below ``root`` (both normalised as text), None when it is not
    strictly below it."""
    r, p = norm(root), norm(path)
    if p == r or not p.startswith(r.rstrip(os.sep) + os.sep):
        return None
    return tuple(p[len(r.rstrip(os.sep)) + 1 :].split(os.sep))


def on_link(err: OSError) -> bool:
    """Whether ``err`` means a link (or a non-directory) where a directory was to be
    walked: refused, not followed."""
    return err.errno in _LINK_ERRNOS


class Tree:
    """One trusted root and what lies below it, reached without following links; directory
    descriptors are cached while the tree is open (a context manager closes them)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = norm(root)
        self._fds: dict[Parts, int] = {}

    def __enter__(self) -> Tree:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def path(self, parts: Parts) -> str:
        """The path ``parts`` name below the root, as text (for reports only)."""
        return os.path.join(self.root, *parts)

    def dir(self, parts: Parts = ()) -> int:
        """The descriptor of the directory ``parts`` below the root (``()``: the root).
        OSError: ``on_link`` for a link or non-directory on the way, FileNotFoundError."""
        fd = self._fds.get(parts)
        if fd is None:
            if parts:
                fd = os.open(parts[-1], _DIR, dir_fd=self.dir(parts[:-1]))
            else:
                fd = os.open(self.root, _DIR)
            if len(self._fds) >= MAX_OPEN_DIRS:
                self.close()  # none is in use between calls: each is used at once
            self._fds[parts] = fd
        return fd

    def lstat(self, parts: Parts) -> os.stat_result:
        """The entry ``parts`` itself (a link is a link)."""
        return os.stat(parts[-1], dir_fd=self.dir(parts[:-1]), follow_symlinks=False)

    def listdir(self, parts: Parts = ()) -> list[str]:
        return os.listdir(self.dir(parts))

    def entries(self, parts: Parts = ()) -> list[tuple[str, os.stat_result]]:
        """Each entry of a directory with its lstat, by name; one that vanished is left out."""
        fd = self.dir(parts)
        out = []
        for name in sorted(os.listdir(fd)):
            try:
                out.append((name, os.stat(name, dir_fd=fd, follow_symlinks=False)))
            except FileNotFoundError:
                continue
        return out

    def open(self, parts: Parts) -> int:
        """A descriptor of the regular file ``parts`` for reading (not through a link; a
        FIFO does not block it). OSError ``ELOOP`` for a link."""
        fd = os.open(parts[-1], _FILE, dir_fd=self.dir(parts[:-1]))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file", self.path(parts))
        return fd

    def read(self, parts: Parts, limit: int) -> bytes:
        """At most ``limit`` bytes of the regular file ``parts`` (see ``open``)."""
        fd = self.open(parts)
        try:
            chunks, left = [], limit
            while left > 0 and (block := os.read(fd, min(left, 1 << 20))):
                chunks.append(block)
                left -= len(block)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def unlink(self, parts: Parts) -> None:
        os.unlink(parts[-1], dir_fd=self.dir(parts[:-1]))

    def rmdir(self, parts: Parts) -> None:
        os.rmdir(parts[-1], dir_fd=self.dir(parts[:-1]))
        self._drop(parts)

    def _drop(self, parts: Parts) -> None:
        for key in [k for k in self._fds if k[: len(parts)] == parts]:
            os.close(self._fds.pop(key))

    def walk(self, parts: Parts) -> Iterator[tuple[Parts, os.stat_result]]:
        """Every entry under the directory ``parts``, contents before their directory, the
        directory itself last, each with its lstat; a link is an entry, never followed."""
        for name, st in self.entries(parts):
            if stat.S_ISDIR(st.st_mode):
                try:
                    yield from self.walk((*parts, name))
                except OSError:
                    continue  # replaced meanwhile (a link now): not walked
                finally:
                    self._drop((*parts, name))
            else:
                yield (*parts, name), st
        yield parts, self.lstat(parts)
