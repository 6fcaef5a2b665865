"""Retention: what may go from a workspace that runs for years, and removing exactly that.

Why this exists: nothing was ever pruned. Per-instance logs, the state database's events
table, fcopy packages kept after their extraction and chunk outputs that a stream left
behind (HalfPipe's leak: intermediates that linger, docs/halfpipe.md "Staging and disk
usage"; its RunCleanup swept them) grew without bound. ``plan`` lists what ``[retention]``
lets go, ``apply`` removes it; ``skydeck-engine prune [--dry-run]`` prints one or the
other, the daemon applies it every ``interval_s``, the console's Staging panel shows what
the next prune would free.

Areas (``[retention] <area>_days``; 0 keeps an area forever):

- ``logs``: the log of every process instance the state database records (every stream and
  execution of the downlink), where the runner puts them (``logs/<DLID>/``), with the Slurm
  script and exit file beside it, then that directory once nothing else is in it; and
  console job logs (``logs/console/run-<DLID>-*.log``, ``build-*``, ``propagate-*``);
- ``events``: rows of the events table, deleted in one transaction;
- ``fcopy``: ``<DLID>.tar`` + ``<DLID>.md5`` of an ACCEPTED fcopy package, positively
  the accepted one (engine/intake/identity.py): the manifest by the digest of its entries,
  the tar by the stat key recorded when it was verified (ctime included: no sender sets it
  back) or else by its MD5, checked just before it is unlinked; while its extracted level-0
  directory still lists what was registered (tar first, manifest last, and the manifest
  only once its tar is gone). A name and an age never suffice: a package sent again under
  the name with other content (old mtimes: ``rsync -a``, ``cp -p``) is kept for intake to
  judge, and one accepted before identities were recorded waits until a scan records it;
- ``orphan_chunks``: chunk outputs (``downlinks/<DLID>/<DLID>-<CHUNK>.h5`` and its
  ``.parts/``) that a finished stream left (mergeEvt failed or was skipped, cleanup never
  ran), as the files table records them, with their recorded size, each removed only if
  its MD5 is still the one the engine recorded when it wrote it; kept while
  ``haltCleanup`` holds the downlink or a run they hold is being merged (its run lock, or a
  stream in progress that touched the run), and removed under ``lock/cleanup``;
- ``rejected``: a rejected delivery (what its reason file says was moved) with its reason
  file last; all of it or, while anything of it is younger, none.

Rules, each a test (tests/pipeline/test_retention.py):

- only what the engine wrote or accepted is a candidate (a recorded log, a recorded chunk
  output, an accepted package, a rejection named by its reason file): a stray operator file
  never is; where the engine recorded what the content was (a package, a chunk output),
  the content must still be that;
- nothing of a downlink whose latest stream is not finished (SUCCESS, FAILED, CANCELED;
  WAITING, RUNNING and TERMINATED are not): its logs, chunks and package stay;
- never ``stage/``, ``logs/heartbeat/``, ``logs/daemon.log``, ``lock/``, halt flags, the
  config or the state database (checked for every path, in ``plan`` and again in ``apply``);
- a file is as old as the later of its last change (mtime) and the state change that freed
  it (the stream ended, the delivery was done);
- no area follows a symbolic link (engine/core/nofollow.py): every file is reached from
  its area's root (``logs/``, ``downlinks/``, ``incoming/fcopy/``, ``incoming/rejected/``,
  as configured) one directory at a time without following links, in ``plan`` and again in
  ``apply``, and stat'ed, read and unlinked relative to the directory actually reached. A
  link anywhere on the way (``downlinks/<DLID>``, ``logs/console``, a directory swapped for
  a link after the plan) keeps what lies behind it, with a note; an area whose root is a
  link is not pruned at all. A link inside a rejected delivery is removed as a link.
  Unlinking a name never removes another name of the file (a hard link kept elsewhere
  keeps the data);
- ``apply`` removes a file only if it is still the file planned (device, inode, size,
  mtime, ctime) and its downlink's streams are as planned; removal is one ``unlink`` per
  file (atomic), a file already gone is not an error, one that cannot be removed is
  reported and skipped, a directory goes only once empty (``rmdir``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.core.errors import BadInput, Busy
from engine.core.ids import is_dlid, run_hex
from engine.core.inputs import mode_kind
from engine.core.nofollow import Parts, Tree, norm, on_link, parts_under
from engine.core.owner import Owner
from engine.core.settings import DAY_S
from engine.core.workspace import CONSOLE_LOGS, Workspace
from engine.intake import deliveries, identity, inbox, manifest
from engine.pipeline import locks
from engine.pipeline.halts import halt_flag
from engine.pipeline.launchers import sibling_suffixes
from engine.pipeline.task import load_task
from engine.store import Delivery, StateDB

AREAS = ("logs", "events", "fcopy", "orphan_chunks", "rejected", "level0")
FINISHED = ("SUCCESS", "FAILED", "CANCELED")  # a stream no runner picks up again
INDEX_NAME = "mergeIndices.json"  # engine.pipeline.jobs.INDEX_NAME (jobs imports h5py)
CLEANUP_LOCK = "cleanup"
# the log and the files its launcher wrote beside it (Slurm's batch script and exit file)
LOG_SIBLINGS = ("", *sibling_suffixes())
MAX_REASON_BYTES = 1 << 20
_CONSOLE_LOG = re.compile(r"(?:run-(?P<dlid>[0-9]{9})|build|propagate)-[0-9]{8}T[0-9]{6}\.log")

Signature = tuple[tuple[int, str, float | None], ...]  # a downlink's latest streams


@dataclass(frozen=True)
class PruneCandidate:
    """One thing a prune removes: a file or an (empty) directory, or the events rows."""

    area: str  # one of AREAS
    path: str | None  # None: the events rows
    bytes: int  # disk usage (st_blocks * 512, as `stage` counts); events: text
    reason: str
    dlid: str | None = None
    is_dir: bool = False  # removed with rmdir, only once empty
    rows: int = 0  # events: rows older than the cut-off
    first_id: int | None = None
    last_id: int | None = None
    cutoff: float | None = None  # events: rows older than this (epoch seconds)
    ident: tuple[int, ...] | None = field(default=None, compare=False, repr=False)
    needs_gone: tuple[str, ...] = field(default=(), compare=False, repr=False)
    runs: tuple[int, ...] = field(default=(), compare=False, repr=False)  # a chunk's runs
    root: str | None = field(default=None, compare=False, repr=False)  # its area's root
    md5: str | None = field(default=None, compare=False, repr=False)  # verified before removal

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "area": self.area,
            "path": self.path,
            "bytes": self.bytes,
            "reason": self.reason,
            "dlid": self.dlid,
        }
        if self.is_dir:
            out["dir"] = True
        if self.path is None:
            out |= {"rows": self.rows, "first_id": self.first_id, "last_id": self.last_id}
        return out


@dataclass(frozen=True)
class AreaTotal:
    """What one area frees: files (and directories), rows (events) and bytes."""

    files: int = 0
    rows: int = 0
    bytes: int = 0

    def to_json(self) -> dict[str, int]:
        return {"files": self.files, "rows": self.rows, "bytes": self.bytes}


def totals(cands: Iterable[PruneCandidate]) -> dict[str, AreaTotal]:
    """Per area (every area, in ``AREAS`` order): files, rows and bytes of ``cands``."""
    acc = {a: [0, 0, 0] for a in AREAS}
    for c in cands:
        t = acc[c.area]
        t[0] += 0 if c.path is None else 1
        t[1] += c.rows
        t[2] += c.bytes
    return {a: AreaTotal(*v) for a, v in acc.items()}


@dataclass
class PrunePlan:
    """What a prune would remove now, in the order it removes it."""

    now: float
    candidates: list[PruneCandidate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was held back, and why
    streams: dict[str, Signature] = field(default_factory=dict, repr=False)

    def totals(self) -> dict[str, AreaTotal]:
        return totals(self.candidates)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.candidates)

    def to_json(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "candidates": [c.to_json() for c in self.candidates],
            "areas": {a: t.to_json() for a, t in self.totals().items()},
            "bytes": self.bytes,
            "notes": self.notes,
        }


@dataclass
class PruneResult:
    """What ``apply`` did with each candidate of a plan."""

    removed: list[PruneCandidate] = field(default_factory=list)
    gone: list[PruneCandidate] = field(default_factory=list)  # already gone: no error
    kept: list[tuple[PruneCandidate, str]] = field(default_factory=list)  # changed since
    failed: list[tuple[PruneCandidate, str]] = field(default_factory=list)  # could not remove

    def totals(self) -> dict[str, AreaTotal]:
        return totals(self.removed)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.removed)

    def summary(self) -> dict[str, Any]:
        """Counts and bytes per area: the daemon's ``prune`` event and the events row."""
        return {
            "areas": {a: t.to_json() for a, t in self.totals().items() if t != AreaTotal()},
            "bytes": self.bytes,
            "removed": sum(1 for c in self.removed if c.path),
            "gone": len(self.gone),
            "kept": len(self.kept),
            "failed": len(self.failed),
        }

    def to_json(self) -> dict[str, Any]:
        return self.summary() | {
            "candidates": [c.to_json() for c in self.removed],
            "kept_back": [c.to_json() | {"why": why} for c, why in self.kept],
            "errors": [c.to_json() | {"error": why} for c, why in self.failed],
        }


# ---------------------------------------------------------------------- guards


def _inside(p: str, root: str) -> bool:
    return p == root or p.startswith(root.rstrip(os.sep) + os.sep)


class Guard:
    """The paths a prune never removes, resolved once per workspace (``protected``)."""

    def __init__(self, ws: Workspace) -> None:
        never = [
            (ws.stage, "a staged file (stage/ is never pruned)"),
            (ws.heartbeat_dir, "a daemon heartbeat"),
            (ws.lock, "a lock file"),
            (ws.path("flags"), "a halt flag"),
        ]
        exact = [(ws.daemon_log, "the daemon's live log"), (ws.root / "skydeck.toml", "the config")]
        # each as written and with links resolved
        self.never = [(r, why) for p, why in never for r in {norm(p), os.path.realpath(p)}]
        self.exact = {r: why for p, why in exact for r in (norm(p), os.path.realpath(p))}
        self.db = {norm(ws.state_db), os.path.realpath(ws.state_db)}

    def why(self, path: str | os.PathLike[str]) -> str | None:
        """Why ``path`` is never pruned (None: it may be)."""
        for p in {norm(path), os.path.realpath(path)}:
            why = self._why(p)
            if why is not None:
                return why
        return None

    def why_in(self, real_dir: str, name: str) -> str | None:
        """``why`` for the regular file ``name`` (no link) in ``real_dir``, a directory whose
        links are resolved already: string work only (one call per log file)."""
        return self._why(real_dir + os.sep + name)

    def _why(self, p: str) -> str | None:
        for root, why in self.never:
            if _inside(p, root):
                return why
        if p in self.exact:
            return self.exact[p]
        if any(p.startswith(db) for db in self.db):  # with -wal, -shm, .bak copies
            return "the state database"
        return None


def protected(ws: Workspace, path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` may never be pruned (None: it may). Checked as written and with links
    resolved: a staged file, a daemon heartbeat, the live daemon log, a lock or halt flag,
    the config or the state database."""
    return Guard(ws).why(path)


def _ident(st: os.stat_result) -> tuple[int, ...]:
    """What "still the file planned" compares: device, inode, size, mtime and ctime (every
    change of content moves ctime, and nobody sets it back)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _dir_ident(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, 0, 0, 0)


# ---------------------------------------------------------------------- state


def _stream_states(db: StateDB) -> tuple[dict[str, Signature], dict[str, float]]:
    """Each downlink's latest streams as a signature, and for those whose every latest
    stream is finished, when the last one ended."""
    by: dict[str, list[tuple[int, str, float, float | None, float | None]]] = {}
    for dlid, sid, status, created, started, ended in db.latest_stream_states():
        by.setdefault(dlid, []).append((sid, status, created, started, ended))
    sigs: dict[str, Signature] = {}
    finished: dict[str, float] = {}
    for dlid, sts in by.items():
        sigs[dlid] = tuple(sorted((sid, status, ended) for sid, status, _, _, ended in sts))
        if all(status in FINISHED for _, status, _, _, _ in sts):
            finished[dlid] = max(
                ended or started or created for _, _, created, started, ended in sts
            )
    return sigs, finished


MAX_INDEX_BYTES = 64 << 20


def _read_index(downlinks: Tree, dlid: str) -> dict[str, Any]:
    """A downlink's mergeIndices.json, read without following a link ({} when absent,
    unreadable or reached through a link)."""
    try:
        doc = json.loads(downlinks.read((dlid, INDEX_NAME), MAX_INDEX_BYTES))
    except (OSError, ValueError, RecursionError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _runs(idx: dict[str, Any]) -> set[int]:
    runs = idx.get("runs")
    return {r for r in runs if isinstance(r, int)} if isinstance(runs, list) else set()


def _chunk_runs(idx: dict[str, Any]) -> dict[str, list[int]]:
    chunks = idx.get("chunks")
    if not isinstance(chunks, dict):
        return {}
    return {
        str(k): [r for r in v if isinstance(r, int)]
        for k, v in chunks.items()
        if isinstance(v, list)
    }


# ---------------------------------------------------------------------- reason files


def parse_reason(data: bytes, root: str | os.PathLike[str]) -> tuple[list[str], str | None] | None:
    """What a rejection's reason file (``deliveries.reject``) says was moved into ``root``,
    as normalised paths, and the downlink id it names (None when it names none); None when
    the file is not one ``reject`` writes (not JSON, no ``moved`` list of paths directly in
    ``root``, a reason file among them): such a rejection is not ours to judge. Never
    raises: reason files are read from a directory anyone in the group may write."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    moved = doc.get("moved") if isinstance(doc, dict) else None
    if not isinstance(moved, list) or not all(isinstance(m, str) for m in moved):
        return None
    rroot = norm(root)
    out = []
    for m in moved:
        if not m or "\0" in m:
            return None
        p = norm(m)
        if os.path.dirname(p) != rroot or p.endswith(".reason"):
            return None
        out.append(p)
    name = doc.get("delivery")
    stem = name.partition(":")[2] if isinstance(name, str) else ""
    return out, (stem if is_dlid(stem) else None)


# ---------------------------------------------------------------------- plan


class _Judge:
    """How one candidate is judged: the trees held open, the guard, the cutoffs, ``file``."""

    def __init__(self, ws: Workspace, db: StateDB, now: float) -> None:
        self.ws, self.db, self.now = ws, db, now
        self.r = ws.settings.retention
        self.plan = PrunePlan(now)
        self.seen: set[str] = set()
        self.sigs, self.finished = _stream_states(db)
        self.plan.streams = self.sigs
        self.guard = Guard(ws)
        self.trees: dict[str, Tree] = {}

    def close(self) -> None:
        for t in self.trees.values():
            t.close()

    def cutoff(self, days: float) -> float | None:
        return None if days <= 0 else self.now - days * DAY_S

    def tree(self, root: str | os.PathLike[str]) -> Tree:
        """The area whose root is ``root``, walked without following links."""
        r = norm(root)
        t = self.trees.get(r)
        if t is None:
            t = self.trees[r] = Tree(r)
        return t

    def area(self, area: str, root: Path) -> Tree | None:
        """The area's tree when its root is a real directory; None when it is absent, or a
        link (with a note: nothing of the area is pruned through it)."""
        t = self.tree(root)
        try:
            t.dir()
        except OSError as err:
            if on_link(err):
                self.plan.notes.append(
                    f"kept the {area} area: {t.root} is a "
                    f"{_kind_at(t.root)}; retention follows no link (name "
                    "its real directory in [paths])"
                )
            return None
        return t

    def linked(self, path: str, err: OSError) -> None:
        """Note a file kept because its path holds a link (or a non-directory) somewhere."""
        if on_link(err):
            self.plan.notes.append(
                f"kept {path}: a symbolic link (or no directory) on its "
                "path; retention follows no link"
            )

    def file(
        self,
        area: str,
        path: str | os.PathLike[str],
        root: Path,
        cutoff: float,
        reason: str,
        dlid: str | None = None,
        ref: float = 0.0,
        size: int | None = None,
        add: bool = True,
        runs: tuple[int, ...] = (),
        md5: str | None = None,
        identified_by: str | None = None,
    ) -> PruneCandidate | None:
        """A regular file as a candidate when it lies below ``root`` (reached without
        following a link), is not protected and is older than ``cutoff`` (by the later of its
        mtime and ``ref``); None otherwise. ``md5``: its content must have it when removed,
        unless its stat key is ``identified_by`` (what it was when its content was known);
        with ``identified_by`` and no ``md5``, a file whose key is another is no candidate."""
        p = norm(path)
        tree = self.tree(root)
        parts = parts_under(tree.root, p)
        if p in self.seen or parts is None:
            return None
        try:
            st = tree.lstat(parts)
        except OSError as err:  # gone, unreadable, or a link on the way
            self.linked(p, err)
            return None
        except ValueError:  # no file name at all (a NUL in a recorded path)
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        if size is not None and st.st_size != size:
            self.plan.notes.append(f"kept {p}: its size differs from what the engine wrote")
            return None
        if max(st.st_mtime, ref) >= cutoff or self.guard.why(p) is not None:
            return None
        if identified_by is not None:
            if identity.stat_key(st) == identified_by:
                md5 = None
            elif md5 is None:
                self.plan.notes.append(f"kept {p}: it changed while it was checked")
                return None
        c = PruneCandidate(
            area,
            p,
            st.st_blocks * 512,
            reason,
            dlid,
            ident=_ident(st),
            runs=runs,
            root=tree.root,
            md5=md5,
        )
        if add:
            self.add(c)
        return c

    def add(self, c: PruneCandidate) -> None:
        if c.path is not None:
            self.seen.add(c.path)
        self.plan.candidates.append(c)

    def empty_dir_after(
        self, area: str, d: Path, root: Path, reason: str, dlid: str | None
    ) -> None:
        """``d`` too, when everything in it is planned already (rmdir: only once empty)."""
        tree = self.tree(root)
        parts = parts_under(tree.root, d)
        if parts is None or self.guard.why(tree.path(parts)):
            return
        try:
            st = tree.lstat(parts)
            names = tree.listdir(parts) if stat.S_ISDIR(st.st_mode) else None
        except OSError:
            return
        p = tree.path(parts)
        if names is not None and all(os.path.join(p, n) in self.seen for n in names):
            self.add(
                PruneCandidate(
                    area,
                    p,
                    st.st_blocks * 512,
                    reason,
                    dlid,
                    is_dir=True,
                    ident=_dir_ident(st),
                    root=tree.root,
                )
            )


class _Incoming(_Judge):
    """The areas of what arrived (incoming/): fcopy packages, rejected deliveries, raw level-0
    deliveries: each removed only as the delivery that was accepted, identified by content."""

    def fcopy(self) -> None:
        cut = self.cutoff(self.r.fcopy_days)
        if cut is None:
            return
        tree = self.area("fcopy", self.ws.incoming_fcopy)
        if tree is None:
            return
        accepted = [
            d
            for d in self.db.deliveries("ACCEPTED")
            if d.kind == "fcopy"
            and d.dlid
            and self.finished.get(d.dlid, cut) < cut
            and d.name.startswith("fcopy:")
        ]
        reason = f"fcopy package extracted and registered, older than {self.r.fcopy_days:g} d"
        for d in sorted(accepted, key=lambda d: d.name):
            stem = d.name[len("fcopy:") :]
            cand = inbox.fcopy_candidate(self.ws, stem + ".md5")
            dl = self.db.downlink(d.dlid or "")
            if cand is None or cand.name != d.name or dl is None:
                continue
            why, manifest_key = self._not_accepted(tree, d, stem)
            if why is None and not deliveries.registered_level0(dl):
                why = "the level-0 directory it was extracted into no longer holds what was registered"
            if why is not None:
                self.plan.notes.append(f"kept {tree.path((stem + '.tar',))}: {why}")
                continue
            ref = max(d.done or 0.0, self.finished[d.dlid or ""])
            ident = d.identity
            assert ident is not None  # _not_accepted checked it
            tar_parts = (stem + ".tar",)
            # the tar unchanged since it was verified (its key) needs no reading; else its
            # MD5 is checked just before it is unlinked
            tar = self.file(
                "fcopy",
                cand.path,
                self.ws.incoming_fcopy,
                cut,
                reason,
                d.dlid,
                ref=ref,
                add=False,
                md5=ident.package_md5,
                identified_by=ident.package_key,
            )
            md5 = self.file(
                "fcopy",
                cand.manifest,
                self.ws.incoming_fcopy,
                cut,
                reason,
                d.dlid,
                ref=ref,
                add=False,
                identified_by=manifest_key,
            )
            if md5 is None or (tar is None and _lexists(tree, tar_parts)):
                continue  # both or none (a tar alone is no delivery: the manifest goes last)
            if tar is not None:
                self.add(tar)
                md5 = replace(md5, needs_gone=(tar.path or "",))  # kept if the tar is kept
            self.add(md5)

    def _not_accepted(self, tree: Tree, d: Delivery, stem: str) -> tuple[str | None, str | None]:
        """Why the manifest in ``incoming/fcopy`` is not positively the accepted one (None:
        it is), and the stat key of the file found to be it: identified by its content
        (the digest of its entries) or, unread, by the stat key recorded with that digest.
        A package accepted before identities were recorded is kept until intake has
        recorded it."""
        ident = d.identity
        if ident is None or ident.package_md5 is None:
            return (
                "what was accepted under this name is not recorded yet (the next scan records it)"
            ), None
        parts = (stem + ".md5",)
        try:
            key = identity.stat_key(tree.lstat(parts))
            if key == ident.manifest_key:
                return None, key
            fd = tree.open(parts)
            try:
                key = identity.stat_key(os.fstat(fd))
                mr = identity.read_manifest_fd(fd, tree.path(parts))
            finally:
                os.close(fd)
        except OSError as err:
            return f"its manifest cannot be read ({err.strerror or err})", None
        except BadInput as err:
            return f"its manifest is not the accepted one ({err.message})", None
        if mr.digest != ident.manifest_sha256:
            return "its manifest is not the accepted one (sent again with other content)", None
        return None, key

    def level0(self) -> None:
        """Raw level-0 deliveries, only when ``level0_days`` is set (off by default): the
        directory a downlink was registered from, once every latest stream of it SUCCEEDED
        longer ago than that; positively the registered delivery (its MANIFEST.md5 has the
        digest recorded at registration), file by file what the manifest lists, each with
        the manifest's MD5 (``apply`` checks every file of a delivery before removing any:
        all or nothing); the manifest last, then the emptied directory."""
        cut = self.cutoff(self.r.level0_days)
        if cut is None:
            return
        root = self.ws.incoming_level0
        tree = self.area("level0", root)
        if tree is None:
            return
        reason = f"raw level-0 delivery of a SUCCESS stream, older than {self.r.level0_days:g} d"
        for dlid, sig in sorted(self.sigs.items()):
            ended = self.finished.get(dlid)
            if not sig or any(status != "SUCCESS" for _, status, _ in sig) or ended is None:
                continue
            dl = self.db.downlink(dlid) if ended < cut else None
            if dl is None or not dl.manifest_sha256:
                continue  # too recent, or registered before digests were recorded
            d = Path(dl.level0)
            parts = parts_under(tree.root, norm(d))
            if parts is None:
                continue  # not in incoming/level0
            where = tree.path((*parts, manifest.MANIFEST_NAME))
            try:
                fd = tree.open((*parts, manifest.MANIFEST_NAME))
                try:
                    mr = identity.read_manifest_fd(fd, where)
                finally:
                    os.close(fd)
            except (OSError, BadInput):
                continue  # gone, unreadable or a link: nothing of it is touched
            if mr.digest != dl.manifest_sha256:
                self.plan.notes.append(f"kept {tree.path(parts)}: not the registered delivery")
                continue
            listed = [
                self.file(
                    "level0", d / name, root, cut, reason, dlid, ref=ended, add=False, md5=md5
                )
                for name, md5 in sorted(mr.entries.items())
            ]
            man = self.file(
                "level0", where, root, cut, reason, dlid, ref=ended, add=False, identified_by=mr.key
            )
            files = [c for c in listed if c is not None]
            if man is None or len(files) < len(listed):
                self.plan.notes.append(
                    f"kept {tree.path(parts)}: a file it lists is missing, newer or a link"
                )
                continue
            for c in files:
                self.add(c)
            self.add(replace(man, needs_gone=tuple(c.path or "" for c in files)))
            self.empty_dir_after("level0", d, root, reason, dlid)

    def rejected(self) -> None:
        cut = self.cutoff(self.r.rejected_days)
        if cut is None:
            return
        tree = self.area("rejected", self.ws.rejected)
        if tree is None:
            return
        try:
            reasons = sorted(n for n in tree.listdir() if n.endswith(".reason"))
        except OSError:
            return
        for name in reasons:
            self._rejection(tree, name, cut)

    def _rejection(self, tree: Tree, name: str, cut: float) -> None:
        """One rejected delivery: everything its reason file says was moved, then the reason
        file; all of it when all of it is older than ``cut``, else none."""
        try:
            st = tree.lstat((name,))
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_REASON_BYTES:
                return
            parsed = parse_reason(tree.read((name,), MAX_REASON_BYTES), tree.root)
        except OSError:
            return
        if parsed is None:
            return
        moved, dlid = parsed
        reason = f"rejected delivery, older than {self.r.rejected_days:g} d"
        out: list[PruneCandidate] = []
        for p in moved:
            top = (os.path.basename(p),)
            try:
                mst = tree.lstat(top)
                entries = list(tree.walk(top)) if stat.S_ISDIR(mst.st_mode) else [(top, mst)]
            except FileNotFoundError:
                continue
            except OSError:
                return
            for parts, qst in entries:
                q = tree.path(parts)
                is_dir = stat.S_ISDIR(qst.st_mode)
                if max(0.0 if is_dir else qst.st_mtime, st.st_mtime) >= cut or self.guard.why(q):
                    return
                out.append(
                    PruneCandidate(
                        "rejected",
                        q,
                        qst.st_blocks * 512,
                        reason,
                        dlid,
                        is_dir=is_dir,
                        root=tree.root,
                        ident=_dir_ident(qst) if is_dir else _ident(qst),
                    )
                )
        if st.st_mtime >= cut:
            return
        for c in out:
            self.add(c)
        self.add(
            PruneCandidate(
                "rejected",
                tree.path((name,)),
                st.st_blocks * 512,
                "the reason file of " + reason,
                dlid,
                ident=_ident(st),
                needs_gone=tuple(moved),
                root=tree.root,
            )
        )


class _Planner(_Incoming):
    """What each area holds that may go: one method per area, each judging through ``file``
    (the engine's own areas here, incoming/ in ``_Incoming``)."""

    def logs(self) -> None:
        cut = self.cutoff(self.r.logs_days)
        if cut is None:
            return
        tree = self.area("logs", self.ws.logs)
        if tree is None:
            return
        root = tree.root
        try:  # real directories only: a link in place of logs/<DLID> is never entered
            present = {n for n, st in tree.entries() if stat.S_ISDIR(st.st_mode)}
        except OSError:
            present = set()
        # a downlink freed after the cut-off has nothing old enough; one whose log directory
        # is gone (pruned before) has nothing left: neither is read again
        old = [d for d, ended in self.finished.items() if ended < cut and d in present]
        recorded: dict[str, set[str]] = {}
        for dlid, log in self.db.instance_logs(old):
            p = norm(log)
            if os.path.dirname(p) == os.path.join(root, dlid):  # the runner's layout only
                recorded.setdefault(dlid, set()).update(
                    os.path.basename(p) + s for s in LOG_SIBLINGS
                )
        reason = f"log of a finished stream, older than {self.r.logs_days:g} d"
        for dlid in sorted(recorded):
            self._log_dir(tree, dlid, recorded[dlid], cut, reason)
        try:
            names = sorted(tree.listdir((CONSOLE_LOGS,)))
        except OSError as err:
            self.linked(tree.path((CONSOLE_LOGS,)), err)
            names = []
        for name in names:
            m = _CONSOLE_LOG.fullmatch(name)
            if m is None:
                continue
            dlid = m.group("dlid")
            if dlid is not None and dlid in self.sigs and dlid not in self.finished:
                continue  # the stream it ran is not finished
            self.file(
                "logs",
                tree.path((CONSOLE_LOGS, name)),
                self.ws.logs,
                cut,
                f"console job log, older than {self.r.logs_days:g} d",
                dlid,
                ref=self.finished.get(dlid or "", 0.0),
            )

    def _log_dir(self, tree: Tree, dlid: str, names: set[str], cut: float, reason: str) -> None:
        """The recorded logs in one downlink's log directory (one listing, one stat per
        entry), then the directory when nothing else is in it."""
        d = tree.path((dlid,))
        if self.guard.why(d) is not None:
            return
        real = os.path.realpath(d)
        ref = self.finished[dlid]
        try:
            dst = tree.lstat((dlid,))
            entries = tree.entries((dlid,))
        except OSError as err:
            self.linked(d, err)
            return
        everything = stat.S_ISDIR(dst.st_mode)
        for name, st in entries:
            c = None
            if (
                name in names
                and stat.S_ISREG(st.st_mode)
                and max(st.st_mtime, ref) < cut
                and self.guard.why_in(real, name) is None
            ):
                c = PruneCandidate(
                    "logs",
                    os.path.join(d, name),
                    st.st_blocks * 512,
                    reason,
                    dlid,
                    ident=_ident(st),
                    root=tree.root,
                )
                self.add(c)
            everything = everything and c is not None
        if everything:
            self.add(
                PruneCandidate(
                    "logs",
                    d,
                    dst.st_blocks * 512,
                    "a finished downlink's log directory, empty once its logs are gone",
                    dlid,
                    is_dir=True,
                    ident=_dir_ident(dst),
                    root=tree.root,
                )
            )

    def orphan_chunks(self) -> None:
        cut = self.cutoff(self.r.orphan_chunks_days)
        if cut is None:
            return
        tree = self.area("orphan_chunks", self.ws.downlinks)
        if tree is None:
            return
        busy: set[int] = set()  # runs touched by streams in progress: their merges read chunks
        for dlid in self.sigs:
            if dlid not in self.finished:
                busy |= _runs(_read_index(tree, dlid))
        reason = (
            f"chunk output a finished stream left (RunCleanup), older than "
            f"{self.r.orphan_chunks_days:g} d"
        )
        producers = [pd.name for pd in load_task(self.ws).processes if pd.foreach == "chunks"]
        old = [d for d, ended in self.finished.items() if ended < cut]
        by_dlid: dict[str, list[tuple[str, int, str | None]]] = {}
        for path, dlid, size, md5 in self.db.files_by(old, producers):
            if self._chunk_of(dlid, path):
                by_dlid.setdefault(dlid, []).append((path, size, md5))
        for dlid, records in sorted(by_dlid.items()):
            flag = halt_flag(self.ws, dlid, "haltCleanup")
            if flag is not None:
                self.plan.notes.append(f"kept the chunk outputs of {dlid}: {flag} exists")
                continue
            chunk_runs = _chunk_runs(_read_index(tree, dlid))
            parts_dirs: set[Path] = set()
            for path, size, md5 in records:
                chunk = self._chunk_of(dlid, path) or ""
                runs = chunk_runs.get(chunk, [])
                held = [r for r in runs if r in busy or (self.ws.lock / run_hex(r)).exists()]
                if held:
                    self.plan.notes.append(f"kept {path}: run {held[0]} is being merged")
                    continue
                if md5 is None:  # nothing to know it by but its name: never removed
                    self.plan.notes.append(f"kept {path}: no checksum was recorded for it")
                    continue
                c = self.file(
                    "orphan_chunks",
                    path,
                    self.ws.downlinks,
                    cut,
                    reason,
                    dlid,
                    ref=self.finished[dlid],
                    size=size,
                    runs=tuple(runs),
                    md5=md5,
                )
                if c is not None and Path(path).parent.name.endswith(".h5.parts"):
                    parts_dirs.add(Path(path).parent)
            for d in sorted(parts_dirs):
                self.empty_dir_after(
                    "orphan_chunks",
                    d,
                    self.ws.downlinks,
                    "a chunk output's parts directory, empty once they are gone",
                    dlid,
                )

    def _chunk_of(self, dlid: str, path: str) -> str | None:
        """The chunk a recorded file is the output (or a part) of, else None."""
        p = Path(norm(path))
        base = Path(norm(self.ws.downlinks / dlid))
        pat = re.compile(re.escape(dlid) + r"-([0-9]{5})\.h5")
        if p.parent == base:
            m = pat.fullmatch(p.name)
        elif p.parent.parent == base and p.parent.name.endswith(".parts"):
            m = pat.fullmatch(p.parent.name[: -len(".parts")])
        else:
            return None
        return m.group(1) if m else None

    def events(self) -> None:
        cut = self.cutoff(self.r.events_days)
        if cut is None:
            return
        span = self.db.events_before(cut)
        if span.rows and span.last_id is not None:
            self.add(
                PruneCandidate(
                    "events",
                    None,
                    span.bytes,
                    f"events older than {self.r.events_days:g} d",
                    rows=span.rows,
                    first_id=span.first_id,
                    last_id=span.last_id,
                    cutoff=cut,
                )
            )


def _kind_at(path: str) -> str:
    """What lies at ``path`` (lstat), in words."""
    try:
        return mode_kind(os.lstat(path).st_mode)
    except OSError:
        return "missing directory"


def _lexists(tree: Tree, parts: Parts) -> bool:
    try:
        tree.lstat(parts)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # there, or unknowable: not gone
    return True


def plan(ws: Workspace, db: StateDB | None = None, now: float | None = None) -> PrunePlan:
    """What a prune would remove at ``now`` (default: the current time), by area, in the
    order ``apply`` removes it. Reads only: nothing changes."""
    if db is None:
        with StateDB(ws.state) as own:
            return plan(ws, own, now)
    p = _Planner(ws, db, time.time() if now is None else now)
    try:
        p.logs()
        p.orphan_chunks()
        p.fcopy()
        p.rejected()
        p.level0()
        p.events()
    finally:
        p.close()
    return p.plan


# ---------------------------------------------------------------------- apply


def _same(c: PruneCandidate, st: os.stat_result) -> bool:
    if c.ident is None:
        return False
    if c.is_dir:
        return stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == c.ident[:2]
    return not stat.S_ISDIR(st.st_mode) and _ident(st) == c.ident


class _Trees:
    """The areas' trees of one apply, by root (walked without following links)."""

    def __init__(self) -> None:
        self.by: dict[str, Tree] = {}

    def __getitem__(self, root: str) -> Tree:
        t = self.by.get(root)
        if t is None:
            t = self.by[root] = Tree(root)
        return t

    def close(self) -> None:
        for t in self.by.values():
            t.close()


@contextlib.contextmanager
def _cleanup_lock(ws: Workspace, wanted: bool) -> Iterator[str | None]:
    """``lock/cleanup`` for the orphan chunks (cleanup jobs remove chunk outputs too); yields
    None when held (or not wanted), else why it is not."""
    if not wanted:
        yield None
        return
    path = ws.lock / CLEANUP_LOCK
    me = Owner.me()
    try:
        info = locks.read(path)
    except FileNotFoundError:
        info = None
    if info is not None and (info.pid, info.host) == (me.pid, me.host):
        # held for a cleanup job this very process runs (a daemon): acquiring would succeed
        # and releasing would free it under that job
        yield "the cleanup lock is held by a cleanup job of this process"
        return
    try:
        locks.acquire(path, None, "prune", me)
    except Busy as err:
        yield f"the cleanup lock is held: {err.message}"
        return
    try:
        yield None
    finally:
        locks.release(path, me)


def apply(ws: Workspace, p: PrunePlan, db: StateDB | None = None) -> PruneResult:
    """Remove what ``p`` lists, each candidate only if it is still what was planned (see the
    module docstring); the events rows and a ``prune`` record in one transaction (none when
    there was nothing to do: an idle prune writes nothing to the state database)."""
    if db is None:
        with StateDB(ws.state) as own:
            return apply(ws, p, own)
    res = PruneResult()
    sigs, _finished = _stream_states(db)
    guard = Guard(ws)
    events: PruneCandidate | None = None
    trees = _Trees()
    with _cleanup_lock(ws, any(c.area == "orphan_chunks" for c in p.candidates)) as busy:
        try:
            whole, verified = _not_whole(p, trees)  # raw deliveries: checked before any goes
            for c in p.candidates:
                if c.path is None:
                    events = c
                    continue
                why = whole.get(c.dlid or "") if c.area == "level0" else None
                why = why or _hold(ws, guard, c, p, sigs, busy, trees)
                if why is not None:
                    res.kept.append((c, why))
                    continue
                # content read just now (_not_whole): not a second time
                gone = _remove(c, res, trees, read=c.path not in verified)
                if gone and c.area == "orphan_chunks" and not c.is_dir:
                    db.forget_file(c.path)  # the downlink's recorded bytes stay true
        finally:
            trees.close()
    span = (
        None
        if events is None or events.cutoff is None or events.last_id is None
        else (events.cutoff, events.last_id)
    )
    deleted = 0
    if span is not None or res.removed or res.gone or res.failed:  # else: no write at all
        deleted = db.trim_events(span, **res.summary())
    if events is not None and deleted:  # fewer than planned: another prune took some
        res.removed.append(
            PruneCandidate(
                events.area,
                None,
                events.bytes * deleted // events.rows,
                events.reason,
                rows=deleted,
                first_id=events.first_id,
                last_id=events.last_id,
                cutoff=events.cutoff,
            )
        )
    return res


def _not_whole(p: PrunePlan, trees: _Trees) -> tuple[dict[str, str], set[str]]:
    """Raw level-0 deliveries go all or nothing: every file's content is checked against
    its manifest's MD5 before any file of the delivery goes. Returns, per downlink, why its
    delivery is kept whole, and the files whose content was read and found right: those
    are not read again at removal (their identity, ctime included, still is checked)."""
    out: dict[str, str] = {}
    verified: set[str] = set()
    for c in p.candidates:
        if c.area != "level0" or c.is_dir or c.md5 is None or not c.dlid or c.dlid in out:
            continue
        parts = parts_under(c.root, c.path or "") if c.root else None
        if parts is None:
            out[c.dlid] = f"{c.path} is not below incoming/level0"
            continue
        try:
            why = _content_differs(trees[c.root or ""], parts, c)
        except OSError as err:
            why = f"cannot be read ({err.strerror or err})"
        if why is not None:
            out[c.dlid] = f"the delivery is kept whole: {c.path}: {why}"
        else:
            verified.add(c.path or "")
    return out, verified


def _hold(
    ws: Workspace,
    guard: Guard,
    c: PruneCandidate,
    p: PrunePlan,
    sigs: dict[str, Signature],
    busy: str | None,
    trees: _Trees,
) -> str | None:
    """Why ``c`` is kept after all (None: remove it)."""
    assert c.path is not None
    why = guard.why(c.path)
    if why is not None:
        return why
    if c.dlid is not None and c.area != "rejected" and sigs.get(c.dlid) != p.streams.get(c.dlid):
        return f"the streams of {c.dlid} changed since the plan"
    if c.area == "orphan_chunks":
        if busy is not None:
            return busy
        held = [r for r in c.runs if (ws.lock / run_hex(r)).exists()]
        if held:
            return f"run {held[0]} is being merged"
    for q in c.needs_gone:
        parts = parts_under(c.root or "", q) if c.root else None
        if parts is None or _lexists(trees[c.root or ""], parts):
            return f"{q} is still there"
    return None


def _remove(c: PruneCandidate, res: PruneResult, trees: _Trees, read: bool = True) -> bool:
    """Remove one planned file (unlink) or directory (rmdir) by its name in the directory
    reached from its area's root without following a link, only if it is still the file
    planned (and, with ``c.md5``, has that content: ``read=False`` when it was read and
    found right this apply, its identity, ctime included, unchanged since); True when it is
    gone now."""
    assert c.path is not None
    parts = parts_under(c.root, c.path) if c.root else None
    if parts is None:
        res.kept.append((c, "not below its area's root"))
        return False
    tree = trees[c.root or ""]
    try:
        st = tree.lstat(parts)
        if not _same(c, st):
            res.kept.append((c, "changed since the plan"))
            return False
        if c.md5 is not None and read:
            why = _content_differs(tree, parts, c)
            if why is not None:
                res.kept.append((c, why))
                return False
        if c.is_dir:
            tree.rmdir(parts)
        else:
            tree.unlink(parts)
    except FileNotFoundError:
        res.gone.append(c)
        return True
    except OSError as err:
        if c.is_dir and err.errno in (errno.ENOTEMPTY, errno.EEXIST):
            res.kept.append((c, "not empty: it holds what the prune did not plan"))
        elif on_link(err):
            res.kept.append(
                (c, "a symbolic link (or no directory) on its path; retention follows no link")
            )
        else:
            res.failed.append((c, err.strerror or str(err)))
        return False
    res.removed.append(c)
    return True


def _content_differs(tree: Tree, parts: Parts, c: PruneCandidate) -> str | None:
    """Why the planned file's content is not the one it must have (``c.md5``: the accepted
    package's, the chunk output's the engine recorded), or None: read through one
    descriptor that is still the planned file before and after (OSError propagates)."""
    fd = tree.open(parts)
    try:
        if not _same(c, os.fstat(fd)):
            return "changed since the plan"
        actual = identity.md5_fd(fd)
        if not _same(c, os.fstat(fd)):
            return "changed while it was checked"
    finally:
        os.close(fd)
    if actual != c.md5:
        return f"its content is not what was recorded (MD5 {actual}, recorded {c.md5})"
    return None


def prune(
    ws: Workspace, dry_run: bool = False, now: float | None = None
) -> tuple[PrunePlan, PruneResult | None]:
    """Plan, and unless ``dry_run`` apply: what `skydeck-engine prune` and the daemon do."""
    with StateDB(ws.state) as db:
        p = plan(ws, db, now)
        return p, (None if dry_run else apply(ws, p, db))
