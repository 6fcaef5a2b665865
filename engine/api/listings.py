"""What the CLI listings print and the console shows, as data (functions returning dataclasses).

Why this module exists: `skydeck-engine downlinks|streams|locks|stage|prune` and the console must
show the same facts; both read them here instead of opening the state database, the lock
directory or the task file themselves. Reads come from the state database (which the daemon
and runners write) and from the files that are the truth for locks, events and logs. This
module only reads: what changes something (unlock, an inbox scan that registers deliveries,
halt flags, runs) is ``actions.py``.
NumPy is imported only by the hit summaries, on first use. Nothing here imports Textual.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.core.workspace import CONSOLE_LOGS, Workspace
from engine.intake import deliveries as _deliveries
from engine.pipeline import locks as _locks
from engine.pipeline.retention import PrunePlan
from engine.pipeline.retention import plan as retention_plan
from engine.pipeline.task import load_task
from engine.pipeline.usage import UsageReport, usage_report
from engine.store import Delivery, Downlink, StateDB, Stream, StreamView

if TYPE_CHECKING:
    from engine.propagate.hits import Comparison, HitSummary


def downlinks(ws: Workspace) -> list[Downlink]:
    """Registered downlinks, by id."""
    with StateDB(ws.state) as db:
        return db.downlinks()


def rejected(ws: Workspace) -> list[Delivery]:
    """Deliveries moved to incoming/rejected/, with their reasons."""
    with StateDB(ws.state) as db:
        return db.deliveries("REJECTED")


def pending(ws: Workspace) -> list[Delivery]:
    """Deliveries seen but not complete yet (files missing or still being written)."""
    with StateDB(ws.state) as db:
        return db.deliveries("PENDING")


def locks(ws: Workspace) -> list[_locks.LockInfo]:
    """Every lock with kind, owner, age and stale verdict (files are the truth). On
    PostgreSQL an owner on another host is judged by the server (its presence)."""
    with StateDB(ws.state) as db:
        return _locks.list_locks(ws.lock, db.remote_judge)


def usage(ws: Workspace, workers: int | None = None) -> UsageReport:
    """Usage per area and downlink, free space, reserve, whether launching is paused."""
    return usage_report(ws, workers)


def prune_preview(ws: Workspace, now: float | None = None) -> PrunePlan:
    """What the next prune would free (the console's Staging panel: ``totals()`` per area):
    the retention plan, read only. As costly as one stat per candidate file plus a few
    queries, so a front end reads it with the usage scan, not on every refresh."""
    return retention_plan(ws, now=now)


def stream_views(
    ws: Workspace, dlid: str | None = None, latest_only: bool = True
) -> list[StreamView]:
    """Streams with their (latest or all) process instances, by downlink."""
    with StateDB(ws.state) as db:
        out = []
        for s in db.streams(latest_only=True):
            if dlid is not None and s.dlid != dlid:
                continue
            out.append(StreamView(s, db.instances(s.id, latest_only=latest_only)))
        return out


def stream_history(ws: Workspace, dlid: str) -> StreamView | None:
    """The latest stream of ``dlid`` with every execution of its process instances (the
    earlier ones too: what failed before a rollback or a retry, where and when)."""
    with StateDB(ws.state) as db:
        s = db.latest_stream(dlid)
        return None if s is None else StreamView(s, db.instances(s.id, latest_only=False))


def downlink_note(ws: Workspace, dlid: str, stream: Stream | None) -> str | None:
    """What a downlink's row says beside its state: its stream's note; for one not started
    yet, the halt flag holding it; for a running one with nothing else to say, what holds it
    back (an instance waiting for a lock that another owner, maybe on another host, holds:
    its note names the holder). The CLI's ``downlinks`` and the console's detail line."""
    from engine.pipeline.halts import held_note

    note = stream.note if stream is not None else None
    if stream is None or stream.status == "WAITING":
        return held_note(ws, dlid) or note
    if stream.status == "RUNNING" and not note:
        for v in stream_views(ws, dlid):
            for pi in v.instances:
                if pi.note and pi.note.startswith("waiting for") and "lock" in pi.note:
                    return f"{pi.label} {pi.note}"
    return note


@dataclass
class DownlinkListing:
    """`skydeck-engine downlinks`: registered downlinks with their latest stream, and the
    deliveries that are pending or were rejected (read in one connection)."""

    downlinks: list[Downlink]
    streams: dict[str, Stream]
    rejected: list[Delivery]
    pending: list[Delivery]
    rejected_files: list[dict[str, object]] = field(default_factory=list)


def downlink_listing(ws: Workspace) -> DownlinkListing:
    """Every registered downlink, its latest stream, pending and rejected deliveries."""
    with StateDB(ws.state) as db:
        listing = DownlinkListing(
            db.downlinks(),
            {s.dlid: s for s in db.streams()},
            db.deliveries("REJECTED"),
            db.deliveries("PENDING"),
        )
    listing.rejected_files = _deliveries.rejected_list(ws)
    return listing


def lock_status(ws: Workspace, name: str) -> tuple[Path, _locks.LockInfo]:
    """The lock file a name (or path) means, and what it says (owner, stale verdict)."""
    path = _locks.resolve(ws.lock, name)
    with StateDB(ws.state) as db:
        return path, _locks.read(path, db.remote_judge)


def task_groups(ws: Workspace, task_name: str | None = None) -> dict[str, str]:
    """Processes of a task that run once per value of a stream variable (``foreach``), with
    what one value is called: ``{"makeEvt": "chunk", "mergeEvt": "run"}`` for halfpipe.

    ``task_name``: a stream's task; the workspace's own task file when it has that name (or
    when None), else the packaged task of that name. A front end groups such a process's
    instances (one per substream key) from this, so a task file with other process names is
    shown the same way.
    """
    task = load_task(ws)  # the workspace's task file (its name need not be a packaged one)
    if task_name is not None and task.name != task_name:
        task = load_task(ws, task_name)
    return {p.name: p.foreach.removesuffix("s") or p.foreach for p in task.processes if p.foreach}


# ------------------------------------------------------------------------ events


@dataclass(frozen=True)
class EventDir:
    path: str
    scene: str
    tag: str
    mtime: float


def list_events(ws: Workspace, limit: int = 20) -> list[EventDir]:
    """Propagation event directories (events/<scene>/<tag>/ holding meta.json), newest first."""
    found = []
    with contextlib.suppress(OSError):
        for scene in os.scandir(ws.events):
            if not scene.is_dir() or scene.name.startswith("."):
                continue
            with contextlib.suppress(OSError):
                for tag in os.scandir(scene.path):
                    meta = Path(tag.path) / "meta.json"
                    if tag.name.startswith(".") or not tag.is_dir():
                        continue
                    with contextlib.suppress(OSError):
                        found.append(EventDir(tag.path, scene.name, tag.name, meta.stat().st_mtime))
    found.sort(key=lambda e: (-e.mtime, e.path))
    return found[:limit]


def summarize_event(path: str | Path) -> HitSummary:
    """The engine's hit summary of one event directory (imports NumPy on first use)."""
    from engine.propagate.hits import summarize

    return summarize(path)


def compare_events(a: str | Path, b: str | Path) -> Comparison:
    """Event A against event B (chi2 per flag category; imports NumPy on first use)."""
    from engine.propagate.hits import compare

    return compare(a, b)


# ------------------------------------------------------------------------ logs


@dataclass(frozen=True)
class LogFile:
    path: str
    what: str  # "daemon", "console job", or the downlink of a process log
    mtime: float


def log_files(ws: Workspace, limit: int = 40) -> list[LogFile]:
    """Logs an operator opens besides an instance's: the daemon's, then console jobs' (runs,
    builds, propagations, newest first), then the newest process logs."""
    out: list[LogFile] = []
    daemon = ws.daemon_log
    with contextlib.suppress(OSError):
        out.append(LogFile(str(daemon), "daemon", daemon.stat().st_mtime))
    rest: list[LogFile] = []
    with contextlib.suppress(OSError):
        for sub in os.scandir(ws.logs):
            if not sub.is_dir(follow_symlinks=False):
                continue
            what = "console job" if sub.name == CONSOLE_LOGS else sub.name
            with contextlib.suppress(OSError):
                for f in os.scandir(sub.path):
                    if f.name.endswith(".log") and f.is_file(follow_symlinks=False):
                        rest.append(LogFile(f.path, what, f.stat().st_mtime))
    rest.sort(key=lambda f: (f.what != "console job", -f.mtime, f.path))
    return (out + rest)[:limit]


def last_line(path: str | Path, limit: int = 200) -> str:
    """The last non-empty line of a log (its one-line reason when a job failed), or ''."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            tail = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    return lines[-1][:limit] if lines else ""


def human_log_lines(lines: list[str]) -> list[str]:
    """Log lines as a person reads them: JSON event lines (``logs/daemon.log``) in the
    human format with the local time, level, event and fields; other lines as they are."""
    from engine.core.log import human_from_json

    return [human_from_json(line) or line for line in lines]
