"""Deliveries: find, verify, extract, register or reject what arrives in ``incoming/``.

Two forms arrive (docs/design.md, "Glossary"): fcopy packages ``incoming/fcopy/<DLID>.tar`` whose
manifest ``<DLID>.md5`` arrives last, and level-0 directories ``incoming/level0/<DLID>/``
complete when ``MANIFEST.md5`` is present and every listed file verifies.

Why each rule:
- Files are the truth and events only hints (watchdog drops inotify overflow silently), so
  ``scan`` lists the inboxes from scratch and ``process`` is idempotent: a registered
  downlink is skipped, a claimed delivery is handled by exactly one process (state db claim).
- Writers we do not control (rsync, slow copies) leave partial files: hidden names (rsync's
  ``.name.XXXXXX``), ``*.tmp``/``*.part``, editor swap files are never candidates; a manifest
  whose files are missing, or mismatch while still being written (modified within
  ``quiet_s``), is *pending*, not bad. Only a settled mismatch is a rejection.
- A bad delivery is moved to ``incoming/rejected/`` with a ``.reason`` file, never deleted;
  its reason line starts with the problem (the file is a separate field).
- Names are validated exactly as they arrive (``"261202013 "`` is not 261202013), and a
  second delivery of an id that is already registered is rejected with that reason (kept
  for the operator), never silently skipped; only the level-0 directory an accepted fcopy
  package was extracted into is the same delivery.
- What was accepted is known by its content, never by its times (``identity``): senders
  keep times (``rsync -a``, ``cp -p``) or run clocks behind, so a re-sent package with new
  content and old mtimes looks older than the accepted one. The state records the digest of
  the manifest's entries and, for a package, the tar's MD5 that was verified, with stat keys
  (ctime included) as a cache that a change of content always moves. Under an accepted name
  the same content again is the accepted delivery (skipped; the daemon logs ``unchanged``
  when its files were rewritten); other content is rejected with the reason and kept, or
  pending while only half of it is there (a new manifest beside the accepted tar, a new
  tar under the accepted manifest) until ``incomplete_timeout_s`` after it arrived. A
  level-0 directory is the registered one when it lies where that one was and lists the
  same files and checksums.
- A package's tar is hashed and extracted through one descriptor, unchanged from the
  first byte hashed to the last extracted: what was verified is what was extracted, and
  what is recorded as accepted.
- Deliveries are regular files in real directories: a linked delivery directory, and a
  symbolic link, FIFO, device or socket anywhere inside one, is rejected (lstat, O_NOFOLLOW);
  nothing outside the inbox is ever read through a link.
- fcopy tars are untrusted: every member must be a regular file (or the directory of one)
  with a plain relative name that the package's inner ``MANIFEST.md5`` lists (read first,
  bounded); the members' declared sizes must fit the free space minus the disk reserve
  ("would need N bytes"), and extraction copies at most those sizes, into a hidden
  ``.<DLID>.extract-<host>-<pid>`` directory that is renamed into
  ``incoming/level0/<DLID>/`` only after the inner manifest verifies. One left by a killed
  daemon is swept when the next daemon starts (``sweep_extracts``).
- A tar whose ``.md5`` arrived first and whose writer stalls is still arriving (it ends
  before its end-of-archive marker): pending until the incomplete timeout, not rejected as
  a checksum mismatch after ``quiet_s``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import lzma
import os
import re
import socket
import stat
import tarfile
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

from engine.core import retdef
from engine.core.atomic import atomic_write_bytes, remove_path
from engine.core.diskspace import free_bytes, human_bytes
from engine.core.errors import BadInput
from engine.core.ids import is_dlid, parse_dlid
from engine.core.inputs import file_kind, open_regular
from engine.core.owner import owner_dead
from engine.core.workspace import Workspace, packaged_scene
from engine.intake import identity, manifest
from engine.store import Delivery, Downlink, Identity, StateDB

_RETDEF = re.compile(r"RetDef-([0-9]{9})-([0-9]{5})\.xml")
MAX_TREE_ENTRIES = 100_000   # entries in one level-0 delivery (walked with lstat)
MAX_TAR_MEMBERS = 100_000    # members of one fcopy package
_COPY_BLOCK = 1 << 20
_IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".swp", ".swx", ".swo", "~", ".crdownload",
                     ".reason", ".inprogress")
GENSTEPS_NAME = "gensteps.npy"
SCENE_NAME = "scene.txt"


def ignored(name: str) -> bool:
    """Names that are never a delivery: hidden/temporary (rsync), partial, editor swap files."""
    return name.startswith((".", "#", "~")) or name.endswith(_IGNORED_SUFFIXES)


@dataclass(frozen=True)
class Candidate:
    """Something in an inbox that may be (or become) a delivery."""

    name: str            # "fcopy:<stem>" or "level0:<dir>"
    kind: str            # fcopy | level0
    stem: str            # the would-be downlink id
    path: Path           # the tar (fcopy) or the directory (level0)
    manifest: Path       # <stem>.md5 or <dir>/MANIFEST.md5


@dataclass(frozen=True)
class Outcome:
    name: str
    kind: str
    dlid: str | None
    status: str          # accepted | rejected | pending | skipped | error (raised; the daemon retries)
    reason: str | None   # the problem, one line (starts with it: no path in front)
    path: str
    file: str | None = None  # the file the problem concerns (rejections)

    def to_json(self) -> dict:
        return asdict(self)


def text(name: str | os.PathLike[str]) -> str:
    """A file name as text the state db, a reason file and a terminal can hold: a name that
    is not valid UTF-8 (its bytes are surrogate escapes in Python) shows them as ``\\xff``.
    Only for showing and recording; the file itself is always reached by its real name."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def fcopy_candidate(ws: Workspace, name: str) -> Candidate | None:
    """The fcopy delivery an entry of ``incoming/fcopy`` named ``name`` belongs to, once its
    ``.md5`` is there. The stem is the name minus ``.md5``/``.tar``, exactly (never stripped);
    the ``.md5`` may be anything but a directory here (a link or FIFO is rejected later)."""
    if ignored(name) or not name.endswith((".md5", ".tar")):
        return None
    stem = name[: -len(".md5")]
    m = ws.incoming_fcopy / f"{stem}.md5"
    if _lmode(m) in (None, stat.S_IFDIR):
        return None
    return Candidate(f"fcopy:{text(stem)}", "fcopy", stem, ws.incoming_fcopy / f"{stem}.tar", m)


def level0_candidate(ws: Workspace, name: str) -> Candidate | None:
    """The level-0 delivery ``incoming/level0/<name>`` once its MANIFEST.md5 is there. A
    symbolic link in place of the directory is a candidate too: it is rejected with the
    reason, never followed and never silently skipped."""
    if ignored(name):
        return None
    d = ws.incoming_level0 / name
    m = d / manifest.MANIFEST_NAME
    mode = _lmode(d)
    if mode == stat.S_IFLNK:
        return Candidate(f"level0:{text(name)}", "level0", name, d, m)
    if mode != stat.S_IFDIR or _lmode(m) is None:
        return None
    return Candidate(f"level0:{text(name)}", "level0", name, d, m)


def _lmode(p: Path) -> int | None:
    """The file type of ``p`` from lstat (links not followed), None when absent/unnamable."""
    try:
        return stat.S_IFMT(os.lstat(p).st_mode)
    except (OSError, ValueError):
        return None


def scan(ws: Workspace) -> list[Candidate]:
    """Every delivery whose manifest is present (complete or being completed), oldest first."""
    found: list[tuple[float, Candidate]] = []
    for d, make in ((ws.incoming_fcopy, fcopy_candidate), (ws.incoming_level0, level0_candidate)):
        with contextlib.suppress(FileNotFoundError), os.scandir(d) as it:
            for e in it:
                if d == ws.incoming_fcopy and not e.name.endswith(".md5"):
                    continue  # each package once, by its manifest
                c = make(ws, e.name)
                if c is not None:
                    found.append((_mtime(c.manifest), c))
    found.sort(key=lambda x: (x[0], x[1].name))
    return [c for _, c in found]


def candidate_for(ws: Workspace, path: Path) -> Candidate | None:
    """Map a watched path (from an inotify event) to the delivery it may complete."""
    for d, make in ((ws.incoming_fcopy, fcopy_candidate), (ws.incoming_level0, level0_candidate)):
        try:
            parts = path.relative_to(d).parts
        except ValueError:
            continue
        if not parts or (d == ws.incoming_fcopy and len(parts) != 1):
            return None
        return make(ws, parts[0])
    return None


def _mtime(p: str | Path) -> float:
    try:
        st = os.stat(p)
        return max(st.st_mtime, st.st_ctime)
    except OSError:
        return 0.0


def _modified(p: str | Path) -> float:
    """Last content change (writers move mtime; ctime also moves on rename and utime)."""
    try:
        return os.stat(p).st_mtime
    except OSError:
        return 0.0


class Pending(Exception):
    """Not complete yet (files missing or still being written); look again later."""


def _read_manifest(mpath: Path, quiet_s: float) -> identity.ManifestRead:
    """identity.read_manifest, but a manifest still being written (changed within quiet_s)
    is pending."""
    try:
        return identity.read_manifest(mpath)
    except BadInput:
        if time.time() - _modified(mpath) < quiet_s:
            raise Pending(f"{mpath.name} is still being written") from None
        raise


def _check_tree(directory: Path) -> None:
    """A level-0 delivery is a real directory of regular files and real subdirectories:
    anything else inside (a symbolic link, FIFO, socket, device) is rejected by name."""
    if _lmode(directory) != stat.S_IFDIR:
        raise BadInput(f"delivery is a {file_kind(directory)}, not a directory "
                       "(deliveries are regular files in real directories)", directory)
    todo, count = [directory], 0
    while todo:
        with os.scandir(todo.pop()) as it:
            for e in it:
                count += 1
                if count > MAX_TREE_ENTRIES:
                    raise BadInput(f"delivery holds more than {MAX_TREE_ENTRIES} entries", directory)
                if e.is_dir(follow_symlinks=False):
                    todo.append(Path(e.path))
                elif not e.is_file(follow_symlinks=False):
                    raise BadInput(f"is a {file_kind(Path(e.path))}; deliveries hold "
                                   "only regular files and directories", e.path)


def _hash(f: Path) -> str:
    """md5 of a listed file: one that vanished meanwhile is pending, an unreadable one bad."""
    try:
        return manifest.md5_file(f)
    except FileNotFoundError:
        raise Pending(f"{f.name} vanished while being verified") from None
    except OSError as err:
        raise BadInput(f"cannot read: {err.strerror or err}", f) from None


def _verify_dir(directory: Path, mpath: Path, quiet_s: float) -> identity.ManifestRead:
    """manifest.verify, but a missing or still-changing file means pending, not bad.
    Returns the manifest as read (what was verified is what the caller records)."""
    mr = _read_manifest(mpath, quiet_s)
    for name in mr.entries:  # cheap first: no hashing while files are still missing
        if _lmode(directory / name) is None:
            raise Pending(f"{name} listed in {mpath.name} but not present yet")
    for name, digest in mr.entries.items():
        f = directory / name
        now = time.time()
        actual = _hash(f)
        if actual != digest:
            _mismatch(f, digest, actual, mpath, quiet_s, now)
    return mr


def _mismatch(f: Path, digest: str, actual: str, mpath: Path, quiet_s: float, since: float,
              arriving: Callable[[Path], str | None] | None = None) -> NoReturn:
    """A file that does not match its manifest: pending while it or the manifest changed
    within ``quiet_s`` of ``since`` (when hashing began), or while ``arriving(file)`` says
    why it is still arriving (a tar that ends before its end-of-archive marker); else bad."""
    if since - _modified(f) < quiet_s or since - _modified(mpath) < quiet_s:
        raise Pending(f"{f.name} is still changing")
    why = arriving(f) if arriving is not None else None
    if why:
        raise Pending(why)
    raise BadInput(f"checksum mismatch: manifest {digest}, file {actual}", f)


def _check_retdefs(directory: Path, dlid: str, names: list[str]) -> int:
    """Every RetDef is listed, named for this downlink and its chunk, and valid: the stream
    reads each ``RetDef-<DLID>-*.xml`` in the directory, so an unlisted one is rejected too."""
    listed = set(names)
    with os.scandir(directory) as it:
        for e in it:
            if e.name.startswith("RetDef-") and e.name not in listed:
                raise BadInput(f"not listed in {manifest.MANIFEST_NAME} (every RetDef must be)", e.path)
    chunks = []
    for n in names:
        m = _RETDEF.fullmatch(n)
        if not n.startswith("RetDef-"):
            continue
        if not m:
            raise BadInput("RetDef file name is not RetDef-<DLID>-<CHUNK 5d>.xml", directory / n)
        if m.group(1) != dlid:
            raise BadInput(f"RetDef belongs to downlink {m.group(1)}, not {dlid}", directory / n)
        rd = retdef.parse(directory / n)
        if rd.chunkid != int(m.group(2)):
            raise BadInput(f"RetDef of chunk {m.group(2)} says chunkid {rd.chunkid}", directory / n)
        chunks.append(int(m.group(2)))
    if not chunks:
        raise BadInput("delivery carries no RetDef-<DLID>-<CHUNK>.xml", directory)
    return len(chunks)


def _check_scene(level0: Path) -> str | None:
    """The scene a delivery names (scene.txt): the plain name of a packaged scene."""
    f = level0 / SCENE_NAME
    has_gs = (level0 / GENSTEPS_NAME).is_file()
    if not f.is_file():
        if has_gs:
            raise BadInput(f"delivery carries {GENSTEPS_NAME} but no {SCENE_NAME} naming its scene", level0)
        return None
    try:
        with open(open_regular(f), "rb") as fh:
            name = fh.read(256).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"unreadable scene name: {' '.join(str(err).split())}", f) from None
    packaged_scene(name, f)
    return name


def _unique(dest: Path) -> Path:
    if not os.path.lexists(dest):
        return dest
    for k in range(2, 10_000):
        alt = dest.with_name(f"{dest.name}.{k}")
        if not os.path.lexists(alt):
            return alt
    raise BadInput("too many rejected deliveries of this name", dest)


def reject(ws: Workspace, db: StateDB | None, cand: Candidate, err: BadInput) -> Outcome:
    """Move the delivery to rejected/ with a reason file; never delete it."""
    rej = ws.rejected
    rej.mkdir(parents=True, exist_ok=True)
    moved: list[str] = []
    base = _unique(rej / (cand.stem if cand.kind == "level0" else f"{cand.stem}.tar"))
    if cand.kind == "level0":
        if os.path.lexists(cand.path):  # a link is moved as the link, never followed
            os.rename(cand.path, base)
            moved.append(str(base))
        where = base
    else:
        suffix = base.name[len(cand.stem) + len(".tar"):]  # ".2" when a name was reused
        for src in (cand.path, cand.manifest):
            if os.path.lexists(src):
                dst = rej / (src.name + suffix)
                os.rename(src, dst)
                moved.append(str(dst))
        where = base
    # one line, whatever the library said; the problem first (the file is its own field)
    reason = " ".join(err.message.split())
    atomic_write_bytes(where.with_name(where.name + ".reason"), json.dumps(
        {"delivery": cand.name, "kind": cand.kind, "reason": reason, "file": err.path,
         "moved": moved, "rejected_at": time.time()}, indent=1).encode() + b"\n")
    if db is not None:  # the listing's one line: the problem, then the file it concerns
        db.finish_delivery(cand.name, "REJECTED", text(where),
                           f"{reason} ({text(err.path)})" if err.path else reason)
        db.log_event("rejected", cand.stem if is_dlid(cand.stem) else None, delivery=cand.name,
                     reason=reason)
    return Outcome(cand.name, cand.kind, cand.stem if is_dlid(cand.stem) else None, "rejected",
                   reason, str(where), err.path)


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
        raise BadInput(f"tar member {member.name[:60]!r} escapes the delivery directory or is "
                       "not a plain relative name", tar) from None


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
                raise BadInput(f"inside package: {manifest.MANIFEST_NAME} is larger than "
                               f"{manifest.MAX_MANIFEST_BYTES} bytes", tar)
            fh = tf.extractfile(member)
            assert fh is not None  # a regular member
            try:
                inner = manifest.parse_bytes(fh.read(manifest.MAX_MANIFEST_BYTES + 1),
                                             f"{tar}:{manifest.MANIFEST_NAME}")
            except BadInput as err:
                raise BadInput(f"inside package: {err.message}", tar) from None
        members.append((name, member))
    if inner is None:
        raise BadInput(f"package holds no {manifest.MANIFEST_NAME}", tar)
    parents = {str(p) for n in inner for p in Path(n).parents}
    for name, member in members:
        if member.isdir() and name not in parents:
            raise BadInput(f"tar member {name[:60]!r} is a directory that "
                           f"{manifest.MANIFEST_NAME} does not list a file in", tar)
        if member.isfile() and name != manifest.MANIFEST_NAME and name not in inner:
            raise BadInput(f"tar member {name[:60]!r} is not listed in the package's "
                           f"{manifest.MANIFEST_NAME}", tar)
    missing = sorted(set(inner) - {n for n, m in members if m.isfile()})
    if missing:
        raise BadInput(f"inside package: {missing[0][:60]!r} listed in {manifest.MANIFEST_NAME} "
                       "but not in the package", tar)
    return members, sum(m.size for _, m in members if m.isfile())


def _check_room(ws: Workspace, need: int, tar: Path) -> None:
    """The extraction must leave the disk reserve free (docs/design.md, "Disk pressure")."""
    free, reserve = free_bytes(ws.incoming_level0), ws.reserve_bytes
    if need > free - reserve:
        raise BadInput(f"extracting the package would need {need} bytes ({human_bytes(need)}); "
                       f"{free} bytes are free and {reserve} are reserved", tar)


def _copy_member(tf: tarfile.TarFile, name: str, member: tarfile.TarInfo, work: Path,
                 budget: list[int], tar: Path) -> None:
    """Write one member under ``work`` (which we created: no links in it), copying at most
    its declared size and at most what is left of the checked budget."""
    target = work / name
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    src = tf.extractfile(member)
    assert src is not None  # a regular member
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with open(fd, "wb") as out, src:
        written = 0
        while block := src.read(_COPY_BLOCK):
            written += len(block)
            budget[0] -= len(block)
            if written > member.size or budget[0] < 0:
                raise BadInput(f"tar member {name[:60]!r} holds more than its declared "
                               f"{member.size} bytes", tar)
            out.write(block)


# What a damaged tar or compressed stream raises while being read.
_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, ValueError)


@dataclass(frozen=True)
class _Extracted:
    """An fcopy package extracted: its level-0 directory, what was accepted (the package's
    manifest digest and verified MD5, with their keys) and the inner manifest's entries."""

    level0: Path
    accepted: Identity
    entries: dict[str, str]


def _extract(ws: Workspace, cand: Candidate, dlid: str, quiet_s: float,
             incomplete_timeout_s: float) -> _Extracted:
    """Verify the package, extract it safely, verify its content.

    The tar is opened once (no link followed): the bytes whose MD5 matched the manifest are
    the bytes extracted, and a tar changed meanwhile (its stat key moved) is pending, so
    what is recorded as accepted is what was extracted."""
    mr = _read_manifest(cand.manifest, quiet_s)
    if set(mr.entries) != {cand.path.name}:
        raise BadInput(f"fcopy manifest must list exactly {cand.path.name}", cand.manifest)
    stated = mr.entries[cand.path.name]
    if _lmode(cand.path) is None:
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
            _mismatch(cand.path, stated, actual, cand.manifest, quiet_s, since,
                      lambda f: _tar_arriving(f, incomplete_timeout_s))
        if os.path.lexists(dest):
            if not _extracted_before(cand.path, dest):
                raise BadInput(f"level-0 directory {dest} already exists (another delivery "
                               f"of downlink {dlid})", cand.path)
            # this package, extracted by a try that did not get to register it (the state
            # database went away, the process died): registered from there
            entries = manifest.verify(dest, dest / manifest.MANIFEST_NAME)
            key = identity.key_between(before, os.fstat(fd))
            return _Extracted(dest, Identity(mr.digest, mr.key, stated, key), entries)
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
                    raise Pending(f"no space left while extracting {cand.path.name} "
                                  f"({err.strerror}); retried later") from None
                if isinstance(err, (FileExistsError, NotADirectoryError, IsADirectoryError)):
                    raise BadInput(f"tar members collide: {err.strerror}", cand.path) from None
                raise BadInput(f"unreadable tar: {' '.join(str(err).split())}", cand.path) from None
            except _TAR_ERRORS as err:
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
                raise BadInput(f"level-0 directory {dest} already exists (another delivery of "
                               f"downlink {dlid})", cand.path)
            os.rename(work, dest)
        finally:
            remove_path(work)
    return _Extracted(dest, Identity(mr.digest, mr.key, stated, key), entries)


def _extracted_before(tar: Path, dest: Path) -> bool:
    """Whether ``dest`` holds this very package, extracted by an earlier try that did not
    get to register it (the state database went away, the process died): it is a real
    directory whose MANIFEST.md5 is byte for byte the package's own, and every file that
    manifest lists verifies. Anything else there is another delivery of the downlink."""
    try:
        if _lmode(dest) != stat.S_IFDIR:
            return False
        with tarfile.open(tar, "r:*") as tf:
            members, _ = _plan(tf, tar)
            inner = dict(members)[manifest.MANIFEST_NAME]
            fh = tf.extractfile(inner)
            if fh is None:
                return False
            theirs = fh.read(manifest.MAX_MANIFEST_BYTES + 1)
        mine = dest / manifest.MANIFEST_NAME
        if _lmode(mine) != stat.S_IFREG or mine.read_bytes() != theirs:
            return False
        _check_tree(dest)
        manifest.verify(dest, mine)
        return True
    except (BadInput, OSError, KeyError, *_TAR_ERRORS):
        return False


def _tar_arriving(tar: Path, incomplete_timeout_s: float) -> str | None:
    """Why a tar that does not match its checksum is still arriving, or None: modified
    within the incomplete timeout and ending before its end-of-archive marker (a writer
    that stalled, not a settled corruption)."""
    if time.time() - _modified(tar) >= incomplete_timeout_s:
        return None
    return None if _tar_complete(tar) else f"{tar.name} is still arriving (it ends before its end-of-archive marker)"


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
        return "empty" not in str(err) and "truncated" not in str(err) and "unexpected end" not in str(err)
    except (EOFError, zlib.error, lzma.LZMAError, OSError, tarfile.TarError, ValueError):
        return False


def _same_place(cand: Candidate, dl: Downlink) -> bool:
    """Whether ``cand`` is a real directory where the registered downlink's level-0
    directory lies (its name in the same directory, compared as files, so path spellings
    do not matter; the directory itself may have been replaced: content decides)."""
    if cand.kind != "level0" or _lmode(cand.path) != stat.S_IFDIR:
        return False
    registered = Path(dl.level0)
    try:
        return registered.name == cand.path.name and os.path.samefile(registered.parent,
                                                                       cand.path.parent)
    except OSError:
        return False


def _legacy_id(mpath: Path) -> str | None:
    """What a database from before schema 4 recorded for a level-0 manifest (device, inode,
    size, mtime): only to adopt such a downlink once, never to judge a new delivery."""
    try:
        st = os.lstat(mpath)
    except OSError:
        return None
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _is_level0_of(cand: Candidate, dl: Downlink, db: StateDB | None = None) -> bool:
    """Whether ``cand`` is the registered downlink's own level-0 directory (the one a level-0
    delivery arrived as, or an accepted fcopy package was extracted into): the same
    delivery, not a second one. Judged by content: its MANIFEST.md5 lists what the
    registered one listed (``identity.entries_digest``); the stat key recorded with that
    digest answers without reading it while the file is unchanged.

    With ``db``, what was found is recorded: a key that settled or changed with the same
    content, and the digest of a downlink registered before digests were recorded (adopted
    when its manifest is still the file that registered it)."""
    if not _same_place(cand, dl):
        return False
    if identity.unchanged(cand.manifest, dl.manifest_id):
        return True
    legacy = dl.manifest_sha256 is None and _legacy_id(cand.manifest)
    try:
        mr = identity.read_manifest(cand.manifest)
    except (OSError, BadInput):
        return False
    if dl.manifest_sha256 is None:
        same = dl.manifest_id is None or legacy == dl.manifest_id
    else:
        same = mr.digest == dl.manifest_sha256
    if same and db is not None and (mr.key is not None or dl.manifest_sha256 is None):
        db.set_level0_identity(dl.dlid, mr.key, mr.digest)
    return same


def registered_level0(dl: Downlink) -> bool:
    """Whether the registered downlink's level-0 directory still holds what was registered
    (its MANIFEST.md5's entries), read only: retention keeps an fcopy package otherwise."""
    level0 = Path(dl.level0)
    cand = Candidate(f"level0:{text(level0.name)}", "level0", level0.name, level0,
                     level0 / manifest.MANIFEST_NAME)
    return dl.manifest_sha256 is not None and _is_level0_of(cand, dl)


def unsettled(db: StateDB, cands: Iterable[Candidate]) -> list[Candidate]:
    """The candidates that still need ``process``: all but the accepted ones and the level-0
    directories of registered downlinks whose recorded stat keys show them unchanged (a
    few lstat calls each: no reading, no writing). One whose key moved, or was not settled
    when recorded, goes to ``process``, which judges it by content; a second delivery of a
    registered id stays in (it is rejected with its reason, never silently skipped)."""
    cands = list(cands)
    if not cands:
        return []
    dls = {d.dlid: d for d in db.downlinks()}
    rows = db.deliveries()
    accepted = {d.name: d for d in rows if d.status == "ACCEPTED"}
    # a claim never settled although its downlink is registered (the state database went
    # away before the last write): looked at again, to settle it
    claimed = {d.name for d in rows if d.status == "CLAIMED"}

    def unchanged(c: Candidate) -> bool:
        known = accepted.get(c.name)
        if known is not None and c.kind == "fcopy":
            i = known.identity
            return (i is not None and identity.unchanged(c.manifest, i.manifest_key)
                    and (identity.unchanged(c.path, i.package_key) or _lmode(c.path) is None))
        dl = dls.get(known.dlid or "") if known is not None else dls.get(c.stem)
        if dl is None:
            return known is not None  # accepted, yet no downlink: nothing to compare with
        return _same_place(c, dl) and identity.unchanged(c.manifest, dl.manifest_id)
    return [c for c in cands if c.name in claimed or not unchanged(c)]


def _registered_here(db: StateDB, cand: Candidate) -> bool:
    """Whether ``cand`` is (now) the level-0 directory of its registered downlink."""
    dl = db.downlink(cand.stem) if cand.kind == "level0" and is_dlid(cand.stem) else None
    return dl is not None and _is_level0_of(cand, dl, db)


SAME = "ACCEPTED"                         # the accepted delivery, as it was
REGISTERED = "registered"                 # the level-0 directory of a registered downlink
SAME_AGAIN = "the same content as accepted (its files were rewritten or touched)"


def _judge_again(db: StateDB, cand: Candidate, known: Delivery, dl: Downlink | None,
                 quiet_s: float, incomplete_timeout_s: float) -> str | Pending | BadInput:
    """What lies under an accepted delivery's name now, by content: the accepted delivery
    (``SAME``, or ``SAME_AGAIN`` when it was sent again byte for byte: its stat keys moved),
    a new delivery still arriving (Pending), or one with different content, which is
    rejected with this reason and kept (BadInput). Never judged by a file's times: a sender
    that keeps them (``rsync -a``, ``cp -p``) or whose clock runs behind delivers new
    content with old ones."""
    if dl is None:
        return SAME
    if cand.kind == "level0":
        if _is_level0_of(cand, dl, db):
            return SAME
        return BadInput(f"{_already(dl)}; its level-0 directory was sent again with other "
                        f"content ({manifest.MANIFEST_NAME} lists other files or checksums); "
                        "kept for the operator", cand.path)
    accepted = known.identity
    if accepted is None or accepted.package_md5 is None:
        return _adopt_fcopy(db, cand, known, dl)
    tar = cand.path.name
    # the manifest, by content (read only when its key moved)
    if identity.unchanged(cand.manifest, accepted.manifest_key):
        mr_key, stated, same_manifest = accepted.manifest_key, accepted.package_md5, True
    else:
        try:
            mr = identity.read_manifest(cand.manifest)
        except FileNotFoundError:
            return SAME  # gone: nothing new lies there (a new one is judged when it comes)
        except OSError as err:
            return BadInput(f"{_already(dl)}; sent again, and its manifest cannot be read: "
                            f"{err.strerror or err}; kept for the operator", cand.manifest)
        except BadInput as err:
            if time.time() - _modified(cand.manifest) < quiet_s:
                return Pending(f"{cand.manifest.name} is still being written")
            return BadInput(f"{_already(dl)}; sent again: {err.message}; kept for the "
                            "operator", cand.manifest)
        if set(mr.entries) != {tar}:
            return BadInput(f"{_already(dl)}; sent again with a manifest that does not list "
                            f"exactly {tar}; kept for the operator", cand.manifest)
        mr_key, stated = mr.key, mr.entries[tar]
        same_manifest = mr.digest == accepted.manifest_sha256
    # the tar, by content (hashed only when its key moved)
    since = time.time()
    moved = accepted.manifest_key is not None and mr_key != accepted.manifest_key
    tar_md5: str | None
    if identity.unchanged(cand.path, accepted.package_key):
        tar_md5, tar_key = accepted.package_md5, accepted.package_key
    else:
        try:
            tar_md5, tar_key = identity.md5_keyed(cand.path)
        except FileNotFoundError:
            tar_md5, tar_key = None, None
        except OSError as err:
            return BadInput(f"{_already(dl)}; sent again, and {tar} cannot be read: "
                            f"{err.strerror or err}; kept for the operator", cand.path)
        except BadInput as err:  # a link or a special file in its place
            return BadInput(f"{_already(dl)}; sent again: {err.message}; kept for the "
                            "operator", cand.path)
        moved = moved or (accepted.package_key is not None and tar_md5 is not None)
    if same_manifest and tar_md5 in (accepted.package_md5, None):
        now = Identity(accepted.manifest_sha256, mr_key, accepted.package_md5, tar_key)
        if now != accepted:
            db.set_identity(cand.name, now)
        return SAME_AGAIN if moved else SAME
    if not same_manifest and tar_md5 == stated:
        return BadInput(f"{_already(dl)}; {tar} was sent again with different content (MD5 "
                        f"{tar_md5}, accepted {accepted.package_md5}); kept for the operator",
                        cand.path)
    if not same_manifest and tar_md5 not in (accepted.package_md5, None):
        try:  # a new tar that matches neither: still being written, or a settled mismatch
            _mismatch(cand.path, stated, tar_md5 or "", cand.manifest, quiet_s, since,
                      lambda f: _tar_arriving(f, incomplete_timeout_s))
        except BadInput as err:
            return BadInput(f"{_already(dl)}; sent again with different content, {err.message}; "
                            "kept for the operator", cand.path)
        except Pending as still:
            return still
    # half a new delivery: a new manifest whose tar has not arrived (the accepted one is
    # still there), or a new tar whose manifest has not (the sender writes it last)
    if same_manifest:
        why, newest = (f"{tar} is not the accepted package (MD5 {tar_md5}, accepted "
                       f"{accepted.package_md5}); waiting for its manifest"), cand.path
    else:
        why, newest = (f"{cand.manifest.name} was sent again with different content; waiting "
                       f"for its {tar}" + (" (the one present is the accepted package)"
                                           if tar_md5 else "")), cand.manifest
    age = time.time() - _mtime(newest)  # since it arrived here (ctime: kept times do not count)
    if age > incomplete_timeout_s:
        return BadInput(f"{_already(dl)}; sent again with different content, incomplete for "
                        f"{age:.0f} s: {why}; kept for the operator", newest)
    return Pending(why)


def _adopt_fcopy(db: StateDB, cand: Candidate, known: Delivery, dl: Downlink) -> str | BadInput:
    """An fcopy package accepted before what was accepted was recorded (schema < 4): its
    files are the accepted ones if neither changed after the manifest that registered it
    (``dl.delivered`` is that manifest's change time then, by the file system's clock; a
    ctime is set by the file system only, never back by a sender). Then their content is
    recorded as accepted, read from the manifest that was verified then. Otherwise nothing
    tells the accepted package from a new one: judged as a second delivery."""
    try:
        mst = os.lstat(cand.manifest)
        tst = os.lstat(cand.path) if _lmode(cand.path) is not None else None
    except FileNotFoundError:
        return SAME
    if all(st.st_ctime <= dl.delivered and stat.S_ISREG(st.st_mode)
           for st in (mst, tst) if st is not None):
        try:
            mr = identity.read_manifest(cand.manifest)
        except (OSError, BadInput):
            mr = None
        stated = mr.entries.get(cand.path.name) if mr is not None else None
        if mr is not None and stated is not None and len(mr.entries) == 1:
            db.set_identity(known.name, Identity(
                mr.digest, identity.stat_key(mst), stated,
                identity.stat_key(tst) if tst is not None else None))
            return SAME
    return BadInput(f"{_already(dl)}; {cand.path.name} or its manifest changed after it was "
                    "accepted, by a version that did not record what it accepted, so it cannot "
                    "be told from the accepted package; kept for the operator", cand.path)


def _already(dl: Downlink) -> str:
    return f"downlink {dl.dlid} is already registered ({_registered_as(dl)})"


def _registered_by(cand: Candidate, dl: Downlink) -> Identity | None:
    """What ``cand`` is, by content, when ``dl`` was registered from it itself (by a try
    whose claim was never settled: the state database went away before the last write),
    else None (another delivery of the id). A level-0 directory: it is the registered one.
    An fcopy package: its tar matches its manifest and the registered level-0 directory is
    its extraction, file for file."""
    if dl.kind != cand.kind:
        return None
    try:
        mr = identity.read_manifest(cand.manifest)
        if cand.kind == "level0":
            return Identity(mr.digest, mr.key) if _is_level0_of(cand, dl) else None
        stated = mr.entries.get(cand.path.name)
        if stated is None or len(mr.entries) != 1:
            return None
        md5, key = identity.md5_keyed(cand.path)
        if md5 != stated or not _extracted_before(cand.path, Path(dl.level0)):
            return None
        return Identity(mr.digest, mr.key, stated, key)
    except (OSError, BadInput):
        return None


def _being_extracted(db: StateDB, dlid: str) -> bool:
    """Whether the fcopy package of ``dlid`` is claimed, not settled: a level-0 directory
    of that id is then (most likely) its extraction, registered by the package's claimer;
    looked at once the claim is settled."""
    d = db.delivery(f"fcopy:{dlid}")
    return d is not None and d.status == "CLAIMED"


def _registered_as(dl: Downlink) -> str:
    """Which delivery registered a downlink, and when, for a duplicate's reason line (names
    are exact, so the delivery of downlink X in form K was named K:X)."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(dl.registered))
    return f"from {dl.kind}:{dl.dlid} at {when}"


def _check_form(cand: Candidate) -> None:
    """Deliveries are regular files in real directories (lstat: links are not followed)."""
    if cand.kind == "level0":
        _check_tree(cand.path)
    for f in ((cand.manifest,) if cand.kind == "level0" else (cand.manifest, cand.path)):
        mode = _lmode(f)
        if mode is None:
            raise Pending(f"{f.name} not present yet")
        if mode != stat.S_IFREG:
            raise BadInput(f"is a {file_kind(f)}, not a regular file (deliveries are "
                           "regular files in real directories)", f)


def process(ws: Workspace, db: StateDB, cand: Candidate, quiet_s: float = 2.0,
            incomplete_timeout_s: float = 3600.0) -> Outcome:
    """Turn one candidate into a registered downlink, a rejection, or 'pending'.

    Exactly once: the state db claim makes one process own the verification. The level-0
    directory of a registered downlink (e.g. one we extracted from an fcopy package) is
    skipped; any other delivery of a registered id is rejected as a duplicate, kept for the
    operator to decide.
    """
    known = db.delivery(cand.name)
    resent: BadInput | None = None
    if known is not None and known.status == "ACCEPTED":
        verdict = _judge_again(db, cand, known, db.downlink(known.dlid) if known.dlid else None,
                               quiet_s, incomplete_timeout_s)
        if isinstance(verdict, str):
            return Outcome(cand.name, cand.kind, known.dlid, "skipped", verdict, known.path)
        if isinstance(verdict, Pending):  # the accepted record stays until it is judged
            return Outcome(cand.name, cand.kind, known.dlid, "pending", str(verdict),
                           str(cand.path))
        resent = verdict
    dlid = cand.stem if is_dlid(cand.stem) else None
    if _registered_here(db, cand) and (known is None or known.status != "CLAIMED"):
        return Outcome(cand.name, cand.kind, dlid, "skipped", REGISTERED, str(cand.path))
    if cand.kind == "level0" and dlid is not None and _being_extracted(db, dlid):
        return Outcome(cand.name, cand.kind, dlid, "skipped", f"extracted from fcopy:{dlid}",
                       str(cand.path))
    if not db.claim_delivery(cand.name, cand.kind, dlid, text(cand.path), again=resent is not None):
        return Outcome(cand.name, cand.kind, dlid, "skipped", "claimed elsewhere", str(cand.path))
    # another process finished it (moved it away) between our scan and claim
    if not os.path.lexists(cand.path if cand.kind == "level0" else cand.manifest):
        db.release_delivery(cand.name)
        return Outcome(cand.name, cand.kind, dlid, "skipped", "gone", str(cand.path))
    try:
        try:
            dlid = parse_dlid(cand.stem)
        except BadInput as err:
            raise BadInput(err.message, cand.path) from None
        _check_form(cand)
        if resent is not None:
            raise resent
        dup = db.downlink(dlid)
        mine = _registered_by(cand, dup) if dup is not None else None
        if mine is not None and dup is not None:
            # this delivery registered it in a try whose last write did not happen (the
            # state database went away): settle its claim, nothing else
            db.finish_delivery(cand.name, "ACCEPTED", dup.level0, identity=mine)
            return Outcome(cand.name, cand.kind, dlid, "accepted", None, dup.level0)
        if dup is not None:
            raise BadInput(f"{_already(dup)}; kept for the operator", cand.path)
        if cand.kind == "fcopy":
            got = _extract(ws, cand, dlid, quiet_s, incomplete_timeout_s)
            level0, accepted, entries = got.level0, got.accepted, got.entries
            level0_key = None  # written just now: settled on a later look
        else:
            level0 = cand.path
            mr = _verify_dir(level0, cand.manifest, quiet_s)
            accepted, entries, level0_key = Identity(mr.digest, mr.key), mr.entries, mr.key
        chunks = _check_retdefs(level0, dlid, sorted(entries))
        scene = _check_scene(level0)
        dl = Downlink(dlid=dlid, kind=cand.kind, level0=str(level0), chunks=chunks,
                      gensteps=(level0 / GENSTEPS_NAME).is_file(), scene=scene,
                      delivered=_mtime(cand.manifest), registered=time.time(),
                      manifest_id=level0_key,
                      manifest_sha256=identity.entries_digest(entries))
        first = db.register_downlink(dl)
        db.finish_delivery(cand.name, "ACCEPTED", str(level0), identity=accepted)
        if not first:  # e.g. the level0 dir of an fcopy package another daemon just extracted
            return Outcome(cand.name, cand.kind, dlid, "skipped", REGISTERED, str(level0))
        return Outcome(cand.name, cand.kind, dlid, "accepted", None, str(level0))
    except FileNotFoundError as err:  # a file vanished under us: this delivery waits
        why: Pending | BadInput = Pending(f"{Path(err.filename or cand.path).name} vanished "
                                          "while being checked")
        return _settle(ws, db, cand, dlid, why, incomplete_timeout_s)
    except OSError as err:  # permission or I/O error: this delivery only, with the reason
        why = BadInput(f"cannot read the delivery: {err.strerror or err}", err.filename or cand.path)
        return _settle(ws, db, cand, dlid, why, incomplete_timeout_s)
    except (Pending, BadInput) as why:
        return _settle(ws, db, cand, dlid, why, incomplete_timeout_s)
    except BaseException:
        db.release_delivery(cand.name)
        raise


def _settle(ws: Workspace, db: StateDB, cand: Candidate, dlid: str | None,
            why: Pending | BadInput, incomplete_timeout_s: float) -> Outcome:
    """The verdict on a claimed delivery that is not (yet) good: pending or rejected."""
    try:
        if _registered_here(db, cand):
            # another thread or daemon extracted an fcopy package into this very directory
            # and registered it meanwhile: the same delivery, whose data is never moved
            db.release_delivery(cand.name)
            return Outcome(cand.name, cand.kind, cand.stem, "skipped", REGISTERED, str(cand.path))
        if isinstance(why, BadInput):
            if why.path is None:
                why.path = str(cand.path)
            return reject(ws, db, cand, why)
        if not os.path.lexists(cand.path if cand.kind == "level0" else cand.manifest):
            db.release_delivery(cand.name)  # taken away whole while checked: nothing to judge
            return Outcome(cand.name, cand.kind, dlid, "skipped", "gone", str(cand.path))
        age = time.time() - _modified(cand.manifest)
        if age > incomplete_timeout_s:
            return reject(ws, db, cand, BadInput(f"incomplete for {age:.0f} s: {why}", cand.manifest))
    except OSError as err:  # it could not even be moved to rejected/: it stays, and says so
        what = why.message if isinstance(why, BadInput) else str(why)
        why = Pending(f"{what}; could not be moved to {ws.rejected}: {err.strerror or err}")
    db.release_delivery(cand.name, pending=text(str(why)))
    return Outcome(cand.name, cand.kind, dlid, "pending", str(why), str(cand.path))


def process_all(ws: Workspace, db: StateDB, quiet_s: float = 2.0,
                incomplete_timeout_s: float = 3600.0) -> list[Outcome]:
    """One reconciliation pass over both inboxes: the outcome of each delivery it found
    something to do about (one that ``process`` found to be, by content, the accepted or
    registered delivery it already was is none)."""
    out = [process(ws, db, cand, quiet_s, incomplete_timeout_s)
           for cand in unsettled(db, scan(ws))]
    return [o for o in out if not (o.status == "skipped" and o.reason in (SAME, REGISTERED))]


def rejected_list(ws: Workspace) -> list[dict]:
    """Rejected deliveries from their reason files (the files are the truth)."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for p in sorted(ws.rejected.glob("*.reason")):
            try:
                out.append(json.loads(p.read_text(encoding="utf-8")) | {"reason_file": str(p)})
            except (OSError, ValueError):
                out.append({"delivery": p.name[: -len(".reason")], "reason": "unreadable reason file",
                            "reason_file": str(p)})
    return out

