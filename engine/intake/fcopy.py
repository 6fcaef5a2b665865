"""fcopy packages: ``<DLID>.tar`` verified against its ``<DLID>.md5`` and extracted into a
level-0 directory, safely.

Why a module of its own: an fcopy tar is untrusted input in a format with many ways to
hurt (links, absolute names, ``..``, huge declared sizes, a writer still appending). Every
member must be a regular file (or the directory of one) with a plain relative name that the
package's inner ``MANIFEST.md5`` lists (read first, bounded); the members' declared sizes
must fit the free space minus the disk reserve, and extraction copies at most those sizes,
into a hidden ``.<DLID>.extract-<host>-<pid>`` directory renamed into
``incoming/level0/<DLID>/`` only after the inner manifest verifies (one left by a killed
process is swept by ``sweep_extracts``). The tar is hashed and extracted through one
descriptor, unchanged from the first byte hashed to the last extracted: what was verified
is what was extracted, and what is recorded as accepted. A tar whose ``.md5`` arrived
first and whose writer stalls (it ends before its end-of-archive marker) is still
arriving, not a checksum mismatch.
"""

from __future__ import annotations

import contextlib
import errno
import io
import lzma
import os
import re
import socket
import stat
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from engine.core.atomic import remove_path
from engine.core.diskspace import free_bytes, human_bytes
from engine.core.errors import BadInput
from engine.core.inputs import open_regular
from engine.core.owner import owner_dead
from engine.core.workspace import Workspace
from engine.intake import identity, manifest
from engine.intake.inbox import (
    Candidate,
    Pending,
    check_tree,
    lmode,
    mismatch,
    modified,
    read_manifest,
)
from engine.store import Identity

MAX_TAR_MEMBERS = 100_000  # members of one fcopy package
_COPY_BLOCK = 1 << 20


def extract_dir(ws: Workspace, dlid: str) -> Path:
    """The hidden directory a package is extracted into (host and pid: whose it is)."""
    return ws.incoming_level0 / f".{dlid}.extract-{socket.gethostname()}-{os.getpid()}"


_EXTRACT_DIR = re.compile(r"\.[0-9]{9}\.extract-(?:(.+)-)?([0-9]{1,10})")


def sweep_extracts(ws: Workspace) -> list[Path]:
    """Remove partial extractions left by killed processes: those whose pid is dead on this
    host, and those with our own pid (a restarted daemon that got the same pid has none in
    flight yet). Call it at daemon start, before any extraction; another host's are kept."""
    removed = []
    with contextlib.suppress(FileNotFoundError), os.scandir(ws.incoming_level0) as it:
        for e in it:
            m = _EXTRACT_DIR.fullmatch(e.name)
            if m is None:
                continue
            host, pid = m.group(1) or socket.gethostname(), int(m.group(2))
            mine = host == socket.gethostname() and pid == os.getpid()
            if mine or owner_dead(pid, host, None)[0]:
                with contextlib.suppress(OSError):  # what cannot go stays, and is not reported
                    remove_path(Path(e.path))
                if not os.path.lexists(e.path):
                    removed.append(Path(e.path))
    return removed


def _member_name(member: tarfile.TarInfo, tar: Path) -> str:
    """The delivery-relative name of a tar member (``./`` prefix allowed, nothing else
    normalised), checked like a manifest name: relative, no ``..``, plain characters."""
    name = member.name[2:] if member.name.startswith("./") else member.name
    try:
        return manifest.safe_name(name, tar)
    except BadInput:
        raise BadInput(
            f"tar member {member.name[:60]!r} escapes the delivery directory or is "
            "not a plain relative name",
            tar,
        ) from None


def _plan(tf: tarfile.TarFile, tar: Path) -> tuple[list[tuple[str, tarfile.TarInfo]], int]:
    """Read every member header (no data written): each must be a regular file or directory
    with a plain name, the inner MANIFEST.md5 (read first, bounded) must list every file and
    be listed by none twice. Returns (name, member) to extract and the bytes they declare."""
    members: list[tuple[str, tarfile.TarInfo]] = []
    inner: dict[str, str] | None = None
    seen: set[str] = set()
    for i, member in enumerate(tf):
        if i >= MAX_TAR_MEMBERS:
            raise BadInput(f"package holds more than {MAX_TAR_MEMBERS} members", tar)
        if member.name in (".", "./") and member.isdir():
            continue
        name = _member_name(member, tar)
        if not (member.isfile() or member.isdir()) or member.issparse():
            raise BadInput(f"tar member {name[:60]!r} is not a regular file", tar)
        if member.size < 0:  # base-256 headers can say so; it would shrink the space check
            raise BadInput(f"tar member {name[:60]!r} declares a negative size", tar)
        if name in seen:
            raise BadInput(f"tar member {name[:60]!r} appears twice", tar)
        seen.add(name)
        if name == manifest.MANIFEST_NAME and member.isfile():
            if member.size > manifest.MAX_MANIFEST_BYTES:
                raise BadInput(
                    f"inside package: {manifest.MANIFEST_NAME} is larger than "
                    f"{manifest.MAX_MANIFEST_BYTES} bytes",
                    tar,
                )
            fh = tf.extractfile(member)
            assert fh is not None  # a regular member
            try:
                inner = manifest.parse_bytes(
                    fh.read(manifest.MAX_MANIFEST_BYTES + 1), f"{tar}:{manifest.MANIFEST_NAME}"
                )
            except BadInput as err:
                raise BadInput(f"inside package: {err.message}", tar) from None
        members.append((name, member))
    if inner is None:
        raise BadInput(f"package holds no {manifest.MANIFEST_NAME}", tar)
    parents = {str(p) for n in inner for p in Path(n).parents}
    for name, member in members:
        if member.isdir() and name not in parents:
            raise BadInput(
                f"tar member {name[:60]!r} is a directory that "
                f"{manifest.MANIFEST_NAME} does not list a file in",
                tar,
            )
        if member.isfile() and name != manifest.MANIFEST_NAME and name not in inner:
            raise BadInput(
                f"tar member {name[:60]!r} is not listed in the package's {manifest.MANIFEST_NAME}",
                tar,
            )
    missing = sorted(set(inner) - {n for n, m in members if m.isfile()})
    if missing:
        raise BadInput(
            f"inside package: {missing[0][:60]!r} listed in {manifest.MANIFEST_NAME} "
            "but not in the package",
            tar,
        )
    return members, sum(m.size for _, m in members if m.isfile())


def _check_room(ws: Workspace, need: int, tar: Path) -> None:
    """The extraction must leave the disk reserve free (docs/design.md, "Disk pressure")."""
    free, reserve = free_bytes(ws.incoming_level0), ws.reserve_bytes
    if need > free - reserve:
        raise BadInput(
            f"extracting the package would need {need} bytes ({human_bytes(need)}); "
            f"{free} bytes are free and {reserve} are reserved",
            tar,
        )


def _copy_member(
    tf: tarfile.TarFile,
    name: str,
    member: tarfile.TarInfo,
    work: Path,
    budget: list[int],
    tar: Path,
) -> None:
    """Write one member under ``work`` (which we created: no links in it), copying at most
    its declared size and at most what is left of the checked budget."""
    target = work / name
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    src = tf.extractfile(member)
    assert src is not None  # a regular member
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    with open(fd, "wb") as out, src:
        written = 0
        while block := src.read(_COPY_BLOCK):
            written += len(block)
            budget[0] -= len(block)
            if written > member.size or budget[0] < 0:
                raise BadInput(
                    f"tar member {name[:60]!r} holds more than its declared {member.size} bytes",
                    tar,
                )
            out.write(block)


# What a damaged tar or compressed stream raises while being read.
TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, ValueError)


@dataclass(frozen=True)
class Extracted:
    """An fcopy package extracted: its level-0 directory, what was accepted (the package's
    manifest digest and verified MD5, with their keys) and the inner manifest's entries."""

    level0: Path
    accepted: Identity
    entries: dict[str, str]


def extract(
    ws: Workspace, cand: Candidate, dlid: str, quiet_s: float, incomplete_timeout_s: float
) -> Extracted:
    """Verify the package, extract it safely, verify its content.

    The tar is opened once (no link followed): the bytes whose MD5 matched the manifest are
    the bytes extracted, and a tar changed meanwhile (its stat key moved) is pending, so
    what is recorded as accepted is what was extracted."""
    mr = read_manifest(cand.manifest, quiet_s)
    if set(mr.entries) != {cand.path.name}:
        raise BadInput(f"fcopy manifest must list exactly {cand.path.name}", cand.manifest)
    stated = mr.entries[cand.path.name]
    if lmode(cand.path) is None:
        raise Pending(f"{cand.path.name} listed in {cand.manifest.name} but not present yet")
    dest = ws.incoming_level0 / dlid
    fd = open_regular(cand.path)
    with open(fd, "rb") as fh:
        before, since = os.fstat(fd), time.time()
        try:
            actual = identity.md5_fd(fd)
        except OSError as err:
            raise BadInput(f"cannot read: {err.strerror or err}", cand.path) from None
        if actual != stated:
            mismatch(
                cand.path,
                stated,
                actual,
                cand.manifest,
                quiet_s,
                since,
                lambda f: tar_arriving(f, incomplete_timeout_s),
            )
        if os.path.lexists(dest):
            if not extracted_before(cand.path, dest):
                raise BadInput(
                    f"level-0 directory {dest} already exists (another delivery "
                    f"of downlink {dlid})",
                    cand.path,
                )
            # this package, extracted by a try that did not get to register it (the state
            # database went away, the process died): registered from there
            entries = manifest.verify(dest, dest / manifest.MANIFEST_NAME)
            key = identity.key_between(before, os.fstat(fd))
            return Extracted(dest, Identity(mr.digest, mr.key, stated, key), entries)
        work = extract_dir(ws, dlid)
        remove_path(work)
        work.mkdir(parents=True)
        try:
            try:
                with tarfile.open(fileobj=fh, mode="r:*") as tf:
                    members, need = _plan(tf, cand.path)
                    _check_room(ws, need, cand.path)
                    budget = [need]
                    for name, member in members:
                        _copy_member(tf, name, member, work, budget, cand.path)
            except OSError as err:
                if err.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise Pending(
                        f"no space left while extracting {cand.path.name} "
                        f"({err.strerror}); retried later"
                    ) from None
                if isinstance(err, (FileExistsError, NotADirectoryError, IsADirectoryError)):
                    raise BadInput(f"tar members collide: {err.strerror}", cand.path) from None
                raise BadInput(f"unreadable tar: {' '.join(str(err).split())}", cand.path) from None
            except TAR_ERRORS as err:
                raise BadInput(f"unreadable tar: {' '.join(str(err).split())}", cand.path) from None
            key = identity.key_between(before, os.fstat(fd))
            if identity.stat_key(before) != identity.stat_key(os.fstat(fd)):
                raise Pending(f"{cand.path.name} changed while it was verified and extracted")
            inner = work / manifest.MANIFEST_NAME
            try:
                entries = manifest.verify(work, inner)
            except BadInput as err:
                raise BadInput(f"inside package: {err}", cand.path) from None
            if os.path.lexists(dest):
                raise BadInput(
                    f"level-0 directory {dest} already exists (another delivery of "
                    f"downlink {dlid})",
                    cand.path,
                )
            os.rename(work, dest)
        finally:
            remove_path(work)
    return Extracted(dest, Identity(mr.digest, mr.key, stated, key), entries)


def extracted_before(tar: Path, dest: Path) -> bool:
    """Whether ``dest`` holds this very package, extracted by an earlier try that did not
    get to register it (the state database went away, the process died): it is a real
    directory whose MANIFEST.md5 is byte for byte the package's own, and every file that
    manifest lists verifies. Anything else there is another delivery of the downlink."""
    try:
        if lmode(dest) != stat.S_IFDIR:
            return False
        with tarfile.open(tar, "r:*") as tf:
            members, _ = _plan(tf, tar)
            inner = dict(members)[manifest.MANIFEST_NAME]
            fh = tf.extractfile(inner)
            if fh is None:
                return False
            theirs = fh.read(manifest.MAX_MANIFEST_BYTES + 1)
        mine = dest / manifest.MANIFEST_NAME
        if lmode(mine) != stat.S_IFREG or mine.read_bytes() != theirs:
            return False
        check_tree(dest)
        manifest.verify(dest, mine)
        return True
    except (BadInput, OSError, KeyError, *TAR_ERRORS):
        return False


def tar_arriving(tar: Path, incomplete_timeout_s: float) -> str | None:
    """Why a tar that does not match its checksum is still arriving, or None: modified
    within the incomplete timeout and ending before its end-of-archive marker (a writer
    that stalled, not a settled corruption)."""
    if time.time() - modified(tar) >= incomplete_timeout_s:
        return None
    return (
        None
        if _tar_complete(tar)
        else f"{tar.name} is still arriving (it ends before its end-of-archive marker)"
    )


def _tar_complete(tar: Path) -> bool:
    """Whether a tar holds all its members and its end marker (a truncated one does not).

    A compressed stream cut short raises while being read; a plain tar is cut short when a
    member's data or the two zero blocks after the last member lie beyond the file's end."""
    try:
        size = os.lstat(tar).st_size
        if size < 2 * tarfile.BLOCKSIZE:
            return False
        with tarfile.open(tar, "r:*") as tf:
            compressed = not isinstance(tf.fileobj, io.BufferedReader)
            for i, member in enumerate(tf):
                if i >= MAX_TAR_MEMBERS:
                    return True
                if not compressed and member.offset_data + member.size > size:
                    return False
            if compressed:
                return True
            with open(tar, "rb") as fh:
                fh.seek(tf.offset)
                return fh.read(2 * tarfile.BLOCKSIZE) == bytes(2 * tarfile.BLOCKSIZE)
    except tarfile.ReadError as err:
        # not a tar at all is "complete" (a settled mismatch); truncated data is arriving
        return (
            "empty" not in str(err)
            and "truncated" not in str(err)
            and "unexpected end" not in str(err)
        )
    except (EOFError, zlib.error, lzma.LZMAError, OSError, tarfile.TarError, ValueError):
        return False
