"""Deliveries: find, verify, extract, register or reject what arrives in ``incoming/``.

Two forms arrive (DESIGN.md glossary): fcopy packages ``incoming/fcopy/<DLID>.tar`` whose
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
- A bad delivery is moved to ``incoming/rejected/`` with a ``.reason`` file, never deleted.
- fcopy tars are untrusted: extraction uses tarfile's ``data`` filter (no absolute paths,
  no ``..``, no links outside, no devices) into a hidden temporary directory that is renamed
  into ``incoming/level0/<DLID>/`` only after its inner manifest verifies.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from engine import manifest, retdef
from engine.atomic import atomic_write_bytes, remove_path
from engine.errors import BadInput
from engine.ids import is_dlid, parse_dlid
from engine.state import Downlink, StateDB
from engine.workspace import ASSETS, Workspace

_RETDEF = re.compile(r"^RetDef-(\d{9})-(\d{5})\.xml$")
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
    status: str          # accepted | rejected | pending | skipped
    reason: str | None
    path: str

    def to_json(self) -> dict:
        return asdict(self)


def scan(ws: Workspace) -> list[Candidate]:
    """Every delivery whose manifest is present (complete or being completed), oldest first."""
    found: list[tuple[float, Candidate]] = []
    fdir, ldir = ws.incoming_fcopy, ws.incoming_level0
    with contextlib.suppress(FileNotFoundError), os.scandir(fdir) as it:
        for e in it:
            if ignored(e.name) or not e.name.endswith(".md5") or not e.is_file():
                continue
            stem = e.name[: -len(".md5")]
            found.append((_mtime(e.path), Candidate(f"fcopy:{stem}", "fcopy", stem,
                                                    fdir / f"{stem}.tar", Path(e.path))))
    with contextlib.suppress(FileNotFoundError), os.scandir(ldir) as it:
        for e in it:
            if ignored(e.name) or not e.is_dir(follow_symlinks=False):
                continue
            m = Path(e.path) / manifest.MANIFEST_NAME
            if m.is_file():
                found.append((_mtime(m), Candidate(f"level0:{e.name}", "level0", e.name,
                                                   Path(e.path), m)))
    found.sort(key=lambda x: (x[0], x[1].name))
    return [c for _, c in found]


def candidate_for(ws: Workspace, path: Path) -> Candidate | None:
    """Map a watched path (from an inotify event) to the delivery it may complete."""
    try:
        rel_f = path.relative_to(ws.incoming_fcopy)
        parts = rel_f.parts
        if len(parts) == 1 and not ignored(parts[0]) and parts[0].endswith((".md5", ".tar")):
            stem = parts[0].rsplit(".", 1)[0]
            m = ws.incoming_fcopy / f"{stem}.md5"
            if m.is_file():
                return Candidate(f"fcopy:{stem}", "fcopy", stem, ws.incoming_fcopy / f"{stem}.tar", m)
        return None
    except ValueError:
        pass
    try:
        parts = path.relative_to(ws.incoming_level0).parts
    except ValueError:
        return None
    if not parts or ignored(parts[0]):
        return None
    d = ws.incoming_level0 / parts[0]
    m = d / manifest.MANIFEST_NAME
    if m.is_file():
        return Candidate(f"level0:{parts[0]}", "level0", parts[0], d, m)
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


def _parse_manifest(mpath: Path, quiet_s: float) -> dict[str, str]:
    """manifest.parse, but a manifest still being written (changed within quiet_s) is pending."""
    try:
        return manifest.parse(mpath)
    except BadInput:
        if time.time() - _modified(mpath) < quiet_s:
            raise Pending(f"{mpath.name} is still being written") from None
        raise


def _verify_dir(directory: Path, mpath: Path, quiet_s: float) -> dict[str, str]:
    """manifest.verify, but a missing or still-changing file means pending, not bad."""
    entries = _parse_manifest(mpath, quiet_s)
    now = time.time()
    for name in entries:  # cheap first: no hashing while files are still missing
        if not (directory / name).is_file():
            raise Pending(f"{name} listed in {mpath.name} but not present yet")
    for name, digest in entries.items():
        f = directory / name
        recent = now - _modified(f) < quiet_s
        actual = manifest.md5_file(f)
        if actual != digest:
            if recent or now - _modified(mpath) < quiet_s:
                raise Pending(f"{name} is still changing")
            raise BadInput(f"checksum mismatch: manifest {digest}, file {actual}", f)
    return entries


def _check_retdefs(directory: Path, dlid: str, names: list[str]) -> int:
    chunks = []
    for n in names:
        m = _RETDEF.match(n)
        if not n.startswith("RetDef-"):
            continue
        if not m:
            raise BadInput("RetDef file name is not RetDef-<DLID>-<CHUNK 5d>.xml", directory / n)
        if m.group(1) != dlid:
            raise BadInput(f"RetDef belongs to downlink {m.group(1)}, not {dlid}", directory / n)
        retdef.parse(directory / n)
        chunks.append(int(m.group(2)))
    if not chunks:
        raise BadInput("delivery carries no RetDef-<DLID>-<CHUNK>.xml", directory)
    return len(chunks)


_SCENE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def scene_path(name: str) -> Path:
    return ASSETS / "scenes" / f"{name}.toml"


def _check_scene(level0: Path) -> str | None:
    """The scene a delivery names (scene.txt): a plain name of a scene in assets/scenes."""
    f = level0 / SCENE_NAME
    has_gs = (level0 / GENSTEPS_NAME).is_file()
    if not f.is_file():
        if has_gs:
            raise BadInput(f"delivery carries {GENSTEPS_NAME} but no {SCENE_NAME} naming its scene", level0)
        return None
    try:
        name = f.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"unreadable scene name: {err}", f) from None
    if not _SCENE.match(name):
        raise BadInput(f"invalid scene name {name[:40]!r}", f)
    if not scene_path(name).is_file():
        raise BadInput(f"unknown scene {name!r} (no {name}.toml in assets/scenes)", f)
    return name


def _unique(dest: Path) -> Path:
    if not dest.exists() and not dest.is_symlink():
        return dest
    for k in range(2, 10_000):
        alt = dest.with_name(f"{dest.name}.{k}")
        if not alt.exists():
            return alt
    raise BadInput("too many rejected deliveries of this name", dest)


def reject(ws: Workspace, db: StateDB | None, cand: Candidate, err: BadInput) -> Outcome:
    """Move the delivery to rejected/ with a reason file; never delete it."""
    rej = ws.rejected
    rej.mkdir(parents=True, exist_ok=True)
    moved: list[str] = []
    base = _unique(rej / (cand.stem if cand.kind == "level0" else f"{cand.stem}.tar"))
    if cand.kind == "level0":
        if cand.path.exists():
            os.rename(cand.path, base)
            moved.append(str(base))
        where = base
    else:
        suffix = base.name[len(cand.stem) + len(".tar"):]  # ".2" when a name was reused
        for src in (cand.path, cand.manifest):
            if src.exists():
                dst = rej / (src.name + suffix)
                os.rename(src, dst)
                moved.append(str(dst))
        where = base
    reason = " ".join(str(err).split())  # one line, whatever the library said
    atomic_write_bytes(where.with_name(where.name + ".reason"), json.dumps(
        {"delivery": cand.name, "kind": cand.kind, "reason": reason, "file": err.path,
         "moved": moved, "rejected_at": time.time()}, indent=1).encode() + b"\n")
    if db is not None:
        db.finish_delivery(cand.name, "REJECTED", str(where), reason)
        db.log_event("rejected", cand.stem if is_dlid(cand.stem) else None, delivery=cand.name,
                     reason=reason)
    return Outcome(cand.name, cand.kind, cand.stem if is_dlid(cand.stem) else None, "rejected",
                   reason, str(where))


def _extract(ws: Workspace, cand: Candidate, dlid: str, quiet_s: float) -> Path:
    """Verify the package, extract it safely, verify its content; return the level0 dir."""
    entries = _parse_manifest(cand.manifest, quiet_s)
    if set(entries) != {cand.path.name}:
        raise BadInput(f"fcopy manifest must list exactly {cand.path.name}", cand.manifest)
    _verify_dir(cand.path.parent, cand.manifest, quiet_s)
    dest = ws.incoming_level0 / dlid
    work = ws.incoming_level0 / f".{dlid}.extract-{os.getpid()}"
    remove_path(work)
    work.mkdir(parents=True)
    try:
        try:
            with tarfile.open(cand.path, "r:*") as tf:
                for member in tf.getmembers():
                    parts = PurePosixPath(member.name).parts
                    if member.name.startswith("/") or ".." in parts:
                        raise BadInput(f"tar member {member.name!r} escapes the delivery directory",
                                       cand.path)
                    if not (member.isfile() or member.isdir()):
                        raise BadInput(f"tar member {member.name!r} is not a regular file", cand.path)
                tf.extractall(work, filter="data")
        except tarfile.FilterError as err:
            raise BadInput(f"tar member escapes the delivery directory: {err}", cand.path) from None
        except (tarfile.TarError, EOFError, OSError) as err:
            raise BadInput(f"unreadable tar: {' '.join(str(err).split())}", cand.path) from None
        inner = work / manifest.MANIFEST_NAME
        if not inner.is_file():
            raise BadInput(f"package holds no {manifest.MANIFEST_NAME}", cand.path)
        try:
            manifest.verify(work, inner)
        except BadInput as err:
            raise BadInput(f"inside package: {err}", cand.path) from None
        if dest.exists():
            raise BadInput(f"downlink directory {dest} already exists", cand.path)
        os.rename(work, dest)
    finally:
        remove_path(work)
    return dest


def process(ws: Workspace, db: StateDB, cand: Candidate, quiet_s: float = 2.0,
            incomplete_timeout_s: float = 3600.0, registered: set[str] | None = None) -> Outcome:
    """Turn one candidate into a registered downlink, a rejection, or 'pending'.

    Exactly once: the state db claim makes one process own the verification; a downlink id
    already registered (e.g. an fcopy package whose level0 directory we extracted) is skipped.
    """
    known = db.delivery(cand.name)
    if known is not None and known.status == "ACCEPTED":
        return Outcome(cand.name, cand.kind, known.dlid, "skipped", known.status, known.path)
    if is_dlid(cand.stem) and (cand.stem in (registered or set()) or db.downlink(cand.stem)):
        return Outcome(cand.name, cand.kind, cand.stem, "skipped", "registered", str(cand.path))
    dlid = cand.stem if is_dlid(cand.stem) else None
    if not db.claim_delivery(cand.name, cand.kind, dlid, str(cand.path)):
        return Outcome(cand.name, cand.kind, dlid, "skipped", "claimed elsewhere", str(cand.path))
    if not cand.manifest.exists():  # another process finished it between our scan and claim
        db.release_delivery(cand.name)
        return Outcome(cand.name, cand.kind, dlid, "skipped", "gone", str(cand.path))
    try:
        try:
            dlid = parse_dlid(cand.stem)
        except BadInput as err:
            raise BadInput(str(err), cand.path) from None
        if cand.kind == "fcopy":
            if not cand.path.is_file():
                raise Pending(f"{cand.path.name} not present yet")
            level0 = _extract(ws, cand, dlid, quiet_s)
        else:
            level0 = cand.path
            _verify_dir(level0, cand.manifest, quiet_s)
        names = sorted(manifest.parse(level0 / manifest.MANIFEST_NAME))
        chunks = _check_retdefs(level0, dlid, names)
        scene = _check_scene(level0)
        dl = Downlink(dlid=dlid, kind=cand.kind, level0=str(level0), chunks=chunks,
                      gensteps=(level0 / GENSTEPS_NAME).is_file(), scene=scene,
                      delivered=_mtime(cand.manifest), registered=time.time())
        first = db.register_downlink(dl)
        db.finish_delivery(cand.name, "ACCEPTED", str(level0))
        if not first:  # e.g. the level0 dir of an fcopy package another daemon just extracted
            return Outcome(cand.name, cand.kind, dlid, "skipped", "registered", str(level0))
        return Outcome(cand.name, cand.kind, dlid, "accepted", None, str(level0))
    except Pending as why:
        age = time.time() - _modified(cand.manifest)
        if age > incomplete_timeout_s:
            return reject(ws, db, cand, BadInput(f"incomplete for {age:.0f} s: {why}", cand.manifest))
        db.release_delivery(cand.name, pending=str(why))
        return Outcome(cand.name, cand.kind, dlid, "pending", str(why), str(cand.path))
    except BadInput as err:
        if err.path is None:
            err.path = str(cand.path)
        return reject(ws, db, cand, err)
    except BaseException:
        db.release_delivery(cand.name)
        raise


def process_all(ws: Workspace, db: StateDB, quiet_s: float = 2.0,
                incomplete_timeout_s: float = 3600.0) -> list[Outcome]:
    """One reconciliation pass over both inboxes."""
    registered = {d.dlid for d in db.downlinks()}
    out = []
    for cand in scan(ws):
        if cand.stem in registered:
            continue
        o = process(ws, db, cand, quiet_s, incomplete_timeout_s, registered)
        if o.status == "accepted" and o.dlid:
            registered.add(o.dlid)
        out.append(o)
    return out


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

