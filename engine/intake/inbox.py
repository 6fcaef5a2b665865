"""The inboxes as they are: what is a candidate delivery, when its files last changed, and
whether its manifest and files verify.

Why a module of its own: finding and checking what arrived is shared by the two forms of
delivery (level-0 directories here, fcopy packages in ``fcopy.py``) and by the judgement
of what a delivery is (``deliveries.py``), so it sits below both. Files are the truth and
inotify events only hints, so ``scan`` lists the inboxes from scratch; writers we do not
control (rsync, slow copies) leave partial files, so hidden and temporary names are never
candidates and a manifest whose files are missing, or mismatch while still being written
(modified within ``quiet_s``), is ``Pending``, not bad. Deliveries are regular files in
real directories: links, FIFOs, devices and sockets are refused (lstat, O_NOFOLLOW).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NoReturn

from engine.core.errors import BadInput
from engine.core.inputs import file_kind
from engine.core.workspace import Workspace
from engine.intake import identity, manifest

MAX_TREE_ENTRIES = 100_000  # entries in one level-0 delivery (walked with lstat)
_IGNORED_SUFFIXES = (
    ".tmp",
    ".part",
    ".partial",
    ".swp",
    ".swx",
    ".swo",
    "~",
    ".crdownload",
    ".reason",
    ".inprogress",
)


def ignored(name: str) -> bool:
    """Names that are never a delivery: hidden/temporary (rsync), partial, editor swap files."""
    return name.startswith((".", "#", "~")) or name.endswith(_IGNORED_SUFFIXES)


@dataclass(frozen=True)
class Candidate:
    """Something in an inbox that may be (or become) a delivery."""

    name: str  # "fcopy:<stem>" or "level0:<dir>"
    kind: str  # fcopy | level0
    stem: str  # the would-be downlink id
    path: Path  # the tar (fcopy) or the directory (level0)
    manifest: Path  # <stem>.md5 or <dir>/MANIFEST.md5


@dataclass(frozen=True)
class Outcome:
    name: str
    kind: str
    dlid: str | None
    status: str  # accepted | rejected | pending | skipped | error (raised; the daemon retries)
    reason: str | None  # the problem, one line (starts with it: no path in front)
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
    if lmode(m) in (None, stat.S_IFDIR):
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
    mode = lmode(d)
    if mode == stat.S_IFLNK:
        return Candidate(f"level0:{text(name)}", "level0", name, d, m)
    if mode != stat.S_IFDIR or lmode(m) is None:
        return None
    return Candidate(f"level0:{text(name)}", "level0", name, d, m)


def lmode(p: Path) -> int | None:
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
                    found.append((mtime(c.manifest), c))
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


def mtime(p: str | Path) -> float:
    try:
        st = os.stat(p)
        return max(st.st_mtime, st.st_ctime)
    except OSError:
        return 0.0


def modified(p: str | Path) -> float:
    """Last content change (writers move mtime; ctime also moves on rename and utime)."""
    try:
        return os.stat(p).st_mtime
    except OSError:
        return 0.0


class Pending(Exception):
    """Not complete yet (files missing or still being written); look again later."""


def read_manifest(mpath: Path, quiet_s: float) -> identity.ManifestRead:
    """identity.read_manifest, but a manifest still being written (changed within quiet_s)
    is pending."""
    try:
        return identity.read_manifest(mpath)
    except BadInput:
        if time.time() - modified(mpath) < quiet_s:
            raise Pending(f"{mpath.name} is still being written") from None
        raise


def check_tree(directory: Path) -> None:
    """A level-0 delivery is a real directory of regular files and real subdirectories:
    anything else inside (a symbolic link, FIFO, socket, device) is rejected by name."""
    if lmode(directory) != stat.S_IFDIR:
        raise BadInput(
            f"delivery is a {file_kind(directory)}, not a directory "
            "(deliveries are regular files in real directories)",
            directory,
        )
    todo, count = [directory], 0
    while todo:
        with os.scandir(todo.pop()) as it:
            for e in it:
                count += 1
                if count > MAX_TREE_ENTRIES:
                    raise BadInput(
                        f"delivery holds more than {MAX_TREE_ENTRIES} entries", directory
                    )
                if e.is_dir(follow_symlinks=False):
                    todo.append(Path(e.path))
                elif not e.is_file(follow_symlinks=False):
                    raise BadInput(
                        f"is a {file_kind(Path(e.path))}; deliveries hold "
                        "only regular files and directories",
                        e.path,
                    )


def _hash(f: Path) -> str:
    """md5 of a listed file: one that vanished meanwhile is pending, an unreadable one bad."""
    try:
        return manifest.md5_file(f)
    except FileNotFoundError:
        raise Pending(f"{f.name} vanished while being verified") from None
    except OSError as err:
        raise BadInput(f"cannot read: {err.strerror or err}", f) from None


def verify_dir(directory: Path, mpath: Path, quiet_s: float) -> identity.ManifestRead:
    """manifest.verify, but a missing or still-changing file means pending, not bad.
    Returns the manifest as read (what was verified is what the caller records)."""
    mr = read_manifest(mpath, quiet_s)
    for name in mr.entries:  # cheap first: no hashing while files are still missing
        if lmode(directory / name) is None:
            raise Pending(f"{name} listed in {mpath.name} but not present yet")
    for name, digest in mr.entries.items():
        f = directory / name
        now = time.time()
        actual = _hash(f)
        if actual != digest:
            mismatch(f, digest, actual, mpath, quiet_s, now)
    return mr


def mismatch(
    f: Path,
    digest: str,
    actual: str,
    mpath: Path,
    quiet_s: float,
    since: float,
    arriving: Callable[[Path], str | None] | None = None,
) -> NoReturn:
    """A file that does not match its manifest: pending while it or the manifest changed
    within ``quiet_s`` of ``since`` (when hashing began), or while ``arriving(file)`` says
    why it is still arriving (a tar that ends before its end-of-archive marker); else bad."""
    if since - modified(f) < quiet_s or since - modified(mpath) < quiet_s:
        raise Pending(f"{f.name} is still changing")
    why = arriving(f) if arriving is not None else None
    if why:
        raise Pending(why)
    raise BadInput(f"checksum mismatch: manifest {digest}, file {actual}", f)
