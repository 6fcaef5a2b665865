"""What a delivery is, by content: the digest of its manifest and the MD5 its package has.

Why a module of its own: intake (is this the accepted delivery again, or a new one under
its name?) and retention (is this file the accepted package, which may go?) must answer
the same question the same way, and neither may answer it with a file's times. A sender
that keeps times (``rsync -a``, ``cp -p``) or whose clock runs behind delivers new content
with old mtimes; a chmod or a backup tool's xattrs move ctime without changing a byte.
So the truth is the content:

- ``entries_digest``: a manifest's entries (name -> MD5) as one SHA-256, in a canonical
  form (sorted, lower-case hex, ``md5  name`` lines): the same listing written another way
  (order, md5sum's ``*`` marker, CRLF, hex case) is the same content. For an fcopy package
  the manifest lists exactly the tar, so its digest fixes the package's MD5 too.
- a file's MD5 (``md5_keyed``), hashed through one descriptor opened without following a
  link.

Hashing a large package on every scan would cost its size in reads, so a *stat key*
(device, inode, size, mtime and ctime in ns) recorded with a verified digest stands for
that content as a cache. It cannot miss a change: every write, truncation, rename or
``utime`` sets ctime to the present, which no sender can set back (``utime`` sets mtime,
never ctime). Two limits are handled, as git handles its "racily clean" index entries: a
file that changed while it was read gets no key (``key_between``: the stat before and
after the read differ), and neither does one whose ctime is within ``RACY_S`` of the moment
it was read, since a second write within the same timestamp tick would keep its ctime. A
missing key only means "read it again"; it is recorded once the file has settled.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import BadInput
from engine.core.inputs import open_regular
from engine.intake import manifest

RACY_S = 1.0  # a key taken within this of the file's last change is not trusted
_BLOCK = 4 << 20


def stat_key(st: os.stat_result) -> str:
    """``dev:ino:size:mtime_ns:ctime_ns``: changes whenever the file's content does."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def key_between(
    before: os.stat_result, after: os.stat_result, now: float | None = None
) -> str | None:
    """The key that may stand for what was read between two fstats of one file: None when
    the file changed meanwhile, or changed within ``RACY_S`` of being read."""
    key = stat_key(after)
    if stat_key(before) != key:
        return None
    if (time.time() if now is None else now) - after.st_ctime_ns / 1e9 < RACY_S:
        return None
    return key


def current_key(path: str | os.PathLike[str]) -> str | None:
    """The stat key of the regular file at ``path`` now (lstat: a link has none)."""
    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        return None
    return stat_key(st) if stat.S_ISREG(st.st_mode) else None


def unchanged(path: str | os.PathLike[str], key: str | None) -> bool:
    """Whether ``path`` is still the file ``key`` was recorded for, unchanged since: a
    recorded key (never None) equal to the file's key now."""
    return key is not None and current_key(path) == key


def entries_digest(entries: dict[str, str]) -> str:
    """SHA-256 of a manifest's entries in canonical form (see the module docstring)."""
    h = hashlib.sha256()
    for name in sorted(entries):
        h.update(f"{entries[name].lower()}  {name}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


@dataclass(frozen=True)
class ManifestRead:
    """A manifest as read once: its entries, their digest, and its key (None: unsettled)."""

    entries: dict[str, str]
    digest: str
    key: str | None


def read_manifest(path: Path) -> ManifestRead:
    """Read, parse and digest a manifest through one descriptor (no link followed, at most
    ``MAX_MANIFEST_BYTES``). BadInput for a malformed, unreadable or linked one;
    FileNotFoundError when it is gone."""
    fd = open_regular(path)
    try:
        return read_manifest_fd(fd, path)
    finally:
        os.close(fd)


def read_manifest_fd(fd: int, where: Path | str) -> ManifestRead:
    """``read_manifest`` of an open regular file (``where`` names it in a BadInput)."""
    before = os.fstat(fd)
    chunks: list[bytes] = []
    offset, limit = 0, manifest.MAX_MANIFEST_BYTES + 1
    try:
        while offset < limit and (block := os.pread(fd, min(limit - offset, _BLOCK), offset)):
            chunks.append(block)
            offset += len(block)
    except OSError as err:
        raise BadInput(f"cannot read manifest: {err.strerror or err}", where) from None
    after = os.fstat(fd)
    entries = manifest.parse_bytes(b"".join(chunks), where)
    return ManifestRead(entries, entries_digest(entries), key_between(before, after))


def md5_fd(fd: int) -> str:
    """MD5 of the open file ``fd`` from its start (``pread``: its offset stays where it is)."""
    h = hashlib.md5(usedforsecurity=False)
    offset = 0
    while block := os.pread(fd, _BLOCK, offset):
        h.update(block)
        offset += len(block)
    return h.hexdigest()


def md5_keyed(path: Path) -> tuple[str, str | None]:
    """MD5 of a regular file (not reached through a link) and its key (None: unsettled)."""
    fd = open_regular(path)
    try:
        before = os.fstat(fd)
        return md5_fd(fd), key_between(before, os.fstat(fd))
    finally:
        os.close(fd)
