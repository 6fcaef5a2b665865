"""Operator views and operations any front end needs (the console is the first user).

Why this module exists: the console must show what the CLI shows and act like the CLI acts,
without reimplementing the engine. The CLI's listings print as they go; a live console needs
the same facts as data, cheaply and repeatedly:

- ``downlink_rows``: one row per downlink (state, chunks done/total, runs, bytes, age) from a
  few aggregate queries, not one query per downlink, so a refresh stays cheap with 10,000
  downlinks and 100,000 process instances;
- ``ChangeProbe``: a change fingerprint (SQLite ``PRAGMA data_version`` plus the mtimes of the
  watched directories) so a front end re-reads only when something changed;
- halt flags, event listing, typical job durations (for progress estimates), and starting a
  stream runner as a detached ``skydeck-engine run`` process: the runner claims the stream in
  the state database, so a daemon or a second console never runs a process twice.

Nothing here imports Textual (tests/test_headless.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine.api.pipeline import rollback
from engine.core.errors import SkydeckError
from engine.core.ids import dlid_date, is_dlid, parse_dlid
from engine.core.owner import owner_dead
from engine.core.workspace import Workspace
from engine.intake import deliveries
from engine.pipeline import halts as halt_flags
from engine.pipeline.runner import StreamRunner
from engine.pipeline.task import load_task
from engine.store import StateDB

STATES = ("arrived", "running", "staged", "failed", "rejected")
_STREAM_STATE = {"WAITING": "arrived", "RUNNING": "running", "SUCCESS": "staged",
                 "FAILED": "failed", "TERMINATED": "failed", "CANCELED": "failed"}


@dataclass(frozen=True)
class DownlinkRow:
    """What the downlinks table shows for one downlink (frozen: compared to find changes)."""

    dlid: str
    date: str               # YYYY-MM-DD decoded from YYMMDD
    state: str              # arrived | running | staged | failed | rejected
    stream: str             # the latest stream's Pipeline-II status, "-" without one
    execution: int          # the latest stream's execution number (0 without one)
    chunks_done: int
    chunks_total: int
    runs: int
    bytes: int              # bytes of the files the pipeline recorded for it
    since: float            # delivered (registered) or seen (incoming, rejected) time
    note: str               # stream note, rejection reason (reason first), or why it is stuck
    kept: str = ""          # rejected: where its files were kept (incoming/rejected/...)


@functools.lru_cache(maxsize=65536)
def _date(dlid: str) -> str:
    """YYYY-MM-DD of a downlink id (cached: strptime dominated a 10,000-row refresh)."""
    try:
        return dlid_date(dlid).isoformat()
    except ValueError:
        return "?"


_FINAL = ("SUCCESS", "FAILED", "TERMINATED", "CANCELED")
ENDED_SLACK_S = 5.0  # clock skew between writers and this reader


class DownlinkRows:
    """Every downlink's row, re-reading only the downlinks whose stream may have moved.

    Why this is enough: the stream runner only writes to streams it claimed (status RUNNING),
    a rollback first sets the stream back to WAITING, and a new execution is a new stream
    row. So after the first read, a refresh re-reads (1) downlinks registered since (rowid),
    (2) streams created since (id), (3) streams not in a final state, (4) the streams that
    were not final last time (they may have just finished), and (5) streams that ended since
    the last read (final, active and final again in between). Rows of finished streams are
    reused as they are. Keep one per thread (it holds no connection).
    """

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._rows: dict[str, DownlinkRow] = {}
        self._open: set[str] = set()   # downlinks whose stream was not final at the last read
        self._dl_rowid = 0
        self._stream_id = 0
        self._read_at = 0.0

    def read(self, db: StateDB, incoming: bool = True) -> dict[str, DownlinkRow]:
        # a stream that went final -> active -> final between two reads has a fresh `ended`
        since = self._read_at - ENDED_SLACK_S
        self._read_at = time.time()
        for f in db.downlink_facts(self._dl_rowid, self._stream_id, since, self._open):
            self._dl_rowid = max(self._dl_rowid, f.rowid)
            if f.stream_id is not None:
                self._stream_id = max(self._stream_id, f.stream_id)
            note, status = f.note or "", f.status
            if status == "RUNNING" and f.owner_pid is not None:
                dead, why = owner_dead(f.owner_pid, f.owner_host, f.owner_start)
                if dead:
                    note = f"STUCK: runner gone ({why})"
            self._rows[f.dlid] = DownlinkRow(
                f.dlid, _date(f.dlid), _STREAM_STATE.get(status, "arrived") if status else "arrived",
                status or "-", f.execution or 0, f.chunks_done, f.stream_chunks or f.chunks, f.runs,
                f.bytes, f.delivered, note)
            if status is not None and status not in _FINAL:
                self._open.add(f.dlid)
            else:
                self._open.discard(f.dlid)
        out = dict(self._rows)
        for d in db.deliveries("REJECTED"):
            key = d.dlid or d.name
            if key in out:  # e.g. a second delivery of a registered id: its own row
                key = d.name
            if key not in out:
                out[key] = DownlinkRow(key, _date(d.dlid) if d.dlid else "?", "rejected", "-", 0,
                                       0, 0, 0, 0, d.seen, reason_first(d.reason or ""), d.path)
        if incoming:
            # why a delivery waits (files missing, still being written), as the daemon recorded
            pending = {d.name: d.reason for d in db.deliveries("PENDING") if d.reason}
            for c in deliveries.scan(self.ws):
                if c.stem not in out and is_dlid(c.stem):
                    why = pending.get(c.name)
                    out[c.stem] = DownlinkRow(c.stem, _date(c.stem), "arrived", "-", 0, 0, 0, 0,
                                              0, _mtime(c.manifest),
                                              f"pending: {why}" if why else f"in incoming/{c.kind}")
        return out


def reason_first(reason: str) -> str:
    """``"/long/path/file: problem"`` as ``"problem (/long/path/file)"``.

    A rejection reason is ``str(BadInput)``, which leads with the file; in a narrow column
    only the path would show. The problem comes first, the file after it.
    """
    path, sep, problem = reason.partition(": ")
    if sep and path.startswith(("/", "./", "~")) and problem:
        return f"{problem} ({path})"
    return reason


def downlink_rows(ws: Workspace, db: StateDB, incoming: bool = True) -> dict[str, DownlinkRow]:
    """Every downlink as a row, plus deliveries waiting in incoming/ and rejected ones.

    A stream marked RUNNING whose owner is provably dead is *stuck*: its note says so, which
    is how an operator finds it (``skydeck-engine run`` or the console's run resumes it).
    A poller should keep a ``DownlinkRows`` instead: it re-reads only what may have changed.
    """
    return DownlinkRows(ws).read(db, incoming)


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return time.time()


# ------------------------------------------------------------------------ change detection

class ChangeProbe:
    """Tells which parts of a workspace changed since the last ``poll``.

    ``PRAGMA data_version`` changes whenever another connection commits, at the cost of one
    page read; directory mtimes change when entries are created, renamed or removed. Both are
    far cheaper than re-reading, so a front end can poll every few hundred milliseconds and
    re-read only what changed. Files are the truth for locks and incoming (a lock is a file).
    Own one probe per thread (SQLite connections are per thread).
    """

    TOPICS = ("db", "locks", "incoming", "events", "flags")

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.db = StateDB(ws.state_db)
        self._last: dict[str, object] = {}

    def close(self) -> None:
        self.db.close()

    def _dirs(self, topic: str) -> list[Path]:
        ws = self.ws
        if topic == "locks":
            return [ws.lock]
        if topic == "incoming":
            return [ws.incoming_fcopy, ws.incoming_level0, ws.rejected]
        if topic == "events":
            base = [ws.events]
            with contextlib.suppress(OSError):
                base += [Path(e.path) for e in os.scandir(ws.events) if e.is_dir()]
            return base
        if topic == "flags":
            return [ws.path("flags")]
        return []

    def fingerprint(self) -> dict[str, object]:
        fp: dict[str, object] = {"db": self.db.data_version()}
        for topic in self.TOPICS[1:]:
            stamps = []
            for d in self._dirs(topic):
                try:
                    st = os.stat(d)
                    stamps.append((str(d), st.st_mtime_ns, st.st_ino))
                except OSError:
                    stamps.append((str(d), None, None))
            if topic == "locks":  # a lock rewritten in place (take_over) keeps the dir mtime
                with contextlib.suppress(OSError):
                    stamps += [(e.name, e.stat().st_mtime_ns, 0) for e in os.scandir(self.ws.lock)]
            fp[topic] = tuple(stamps)
        return fp

    def forget(self) -> None:
        """Make the next ``poll`` report every topic (after a failed read)."""
        self._last = {}

    def poll(self) -> set[str]:
        """Topics whose fingerprint changed (every topic on the first call)."""
        fp = self.fingerprint()
        changed = {k for k, v in fp.items() if self._last.get(k) != v}
        self._last = fp
        return changed


# ------------------------------------------------------------------------ durations

def typical_durations(db: StateDB, recent: int = 500) -> dict[str, float]:
    """Mean wall time of recent successful executions per process, for progress estimates.

    Jobs do not report progress to the state database, so a running job's bar is its elapsed
    time against what that process usually takes (shown as an estimate, capped below 100%).
    """
    return db.typical_durations(recent)


# ------------------------------------------------------------------------ halt flags

def _flag_path(ws: Workspace, flag: str, dlid: str | None) -> Path:
    return halt_flags.flag_path(ws, flag, dlid)


def halts(ws: Workspace, dlid: str | None = None) -> dict[str, list[str]]:
    """Set halt flags: {flag: ["global"] and/or [dlid]} for the global and this downlink."""
    return halt_flags.halts(ws, dlid)


def set_halt(ws: Workspace, flag: str, dlid: str | None = None) -> Path:
    """Hold every process guarded by ``flag`` (globally, or for one downlink)."""
    return halt_flags.set_halt(ws, flag, dlid)


def clear_halt(ws: Workspace, flag: str, dlid: str | None = None) -> bool:
    """Release the hold; True when a flag was removed."""
    return halt_flags.clear_halt(ws, flag, dlid)


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


# ------------------------------------------------------------------------ rollback check

@dataclass(frozen=True)
class RollbackPlan:
    """What a rollback would retire, and why it cannot succeed (``blocker``; None: it can)."""

    retired: tuple[str, ...]
    blocker: str | None


def rollback_plan(ws: Workspace, dlid: str, targets: list[str] | None) -> RollbackPlan:
    """Check a rollback before doing it: the CLI's own checks, then the inputs it needs.

    ``rollback`` (dry run) refuses what the CLI refuses (no stream, a live runner owns it,
    an unknown process, nothing to roll back). Then: a kept (not re-run) instance of a
    process that a re-run one ``reads`` (task file) must still have its primary output;
    ``cleanup`` removes chunk outputs once a downlink is staged, so re-running ``mergeEvt``
    alone then fails, and the whole ``makeEvt`` group has to go back. A process reading the
    delivery needs the delivery.
    """
    try:
        res = rollback(ws, dlid, targets, dry_run=True)
    except SkydeckError as err:
        return RollbackPlan((), err.message)
    task = load_task(ws)
    with StateDB(ws.state_db) as db:
        st = db.latest_stream(dlid, task.name)
        if st is None:  # gone between the two reads
            return RollbackPlan((), f"downlink {dlid} has no {task.name} stream")
        latest = db.instances(st.id)
        runner = StreamRunner(ws, db, task, st, launcher=None)  # type: ignore[arg-type]
        rerun = {pi.process for pi in latest if pi.id in res.ids}
        read = {r for name in rerun for r in task.process(name).reads}
        for pi in latest:
            if pi.id in res.ids or pi.status != "SUCCESS" or pi.process not in read:
                continue
            pdef = task.process(pi.process)
            if not pdef.outputs:
                continue
            out = Path(runner._render(pdef.outputs[0], runner.values(pdef, pi.key)))
            if not out.exists():
                return RollbackPlan(tuple(res.retired), (
                    f"{pi.label}'s output {out} is gone (cleaned up), and the re-run needs it: "
                    f"roll back {pi.process} as a whole (its group) instead"))
        for name in sorted(rerun):
            pdef = task.process(name)
            if any("{level0}" in a for a in pdef.command) and not Path(runner.dl.level0).exists():
                return RollbackPlan(tuple(res.retired), (
                    f"{name} reads the delivery {runner.dl.level0}, which is gone"))
    return RollbackPlan(tuple(res.retired), None)


# ------------------------------------------------------------------------ logs

DAEMON_LOG = "daemon.log"  # under logs/: the watch daemon's event lines


@dataclass(frozen=True)
class LogFile:
    path: str
    what: str     # "daemon", "console job", or the downlink of a process log
    mtime: float


def log_files(ws: Workspace, limit: int = 40) -> list[LogFile]:
    """Logs an operator opens besides an instance's: the daemon's, then console jobs' (runs,
    builds, propagations, newest first), then the newest process logs."""
    out: list[LogFile] = []
    daemon = ws.logs / DAEMON_LOG
    with contextlib.suppress(OSError):
        out.append(LogFile(str(daemon), "daemon", daemon.stat().st_mtime))
    rest: list[LogFile] = []
    with contextlib.suppress(OSError):
        for sub in os.scandir(ws.logs):
            if not sub.is_dir(follow_symlinks=False):
                continue
            what = "console job" if sub.name == "console" else sub.name
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


# ------------------------------------------------------------------------ launching

def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def engine_argv(ws: Workspace, *args: str) -> list[str]:
    return [sys.executable, "-m", "engine", "-w", str(ws.root), *args]


def start_runner(ws: Workspace, dlid: str) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``skydeck-engine run DLID`` detached; returns the process and its output log.

    The runner claims the stream in one transaction: if a daemon (or another console) holds
    it, the runner exits 3 (busy) without touching anything, so nothing runs twice.
    """
    dlid = parse_dlid(dlid)
    log = ws.logs / "console" / f"run-{dlid}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(engine_argv(ws, "run", dlid), stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    return proc, log


def start_job(ws: Workspace, name: str, args: list[str]) -> tuple[subprocess.Popen[str], Path]:
    """Start an operator job (``build`` or ``propagate``) reporting progress as JSON lines.

    It runs under ``engine.cli.jsonprogress`` so its progress reaches any front end through a
    pipe (stdout: one JSON object per line); the job's own messages go to a log file.
    """
    log = ws.logs / "console" / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "ab")  # noqa: SIM115 - the child owns it; closed below after the fork
    try:
        proc = subprocess.Popen([sys.executable, "-m", "engine.cli.jsonprogress", "-w", str(ws.root),
                                 *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=fh, env=_env(), text=True, start_new_session=True)
    finally:
        fh.close()
    return proc, log
