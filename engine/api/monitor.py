"""What a live front end polls: change detection and one snapshot of what changed.

Why this module exists: a console shows a workspace that a daemon, runners and other
consoles change all the time. Re-reading everything every few hundred milliseconds would be
too slow with 10,000 downlinks, so ``ChangeProbe`` tells which parts changed (SQLite
``PRAGMA data_version``, directory mtimes) and ``Monitor.poll`` reads only those parts and
returns them as one ``Snapshot``: the downlink rows, the shown downlink's stream with the
typical durations of its processes, the locks (rechecked each second: a stale verdict moves
with time), and the hit summaries of propagation events. ``UsageCadence`` says when the
slower disk-usage scan is due. Headless: nothing here imports Textual; NumPy is imported only
when an event has to be summarized.

A front end never waits for the state database: while a PostgreSQL server is unreachable
``poll`` raises ``StateUnavailable`` at once (``Monitor.outage`` says since when and why)
and tries again, with back-off, at the next polls; opening is deferred to the first poll,
so a console starts while the server is down. When it answers again on a new session (the
probe's LISTEN missed what was committed meanwhile), the next poll reads everything.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.api.listings import list_events, summarize_event, task_groups
from engine.api.rows import DownlinkRow, DownlinkRows
from engine.core.errors import SkydeckError, StateUnavailable
from engine.core.workspace import Workspace
from engine.pipeline.locks import LockInfo, list_locks
from engine.pipeline.task import load_task
from engine.store import StateDB, StreamView
from engine.store.outage import Backoff, Outage, Patience

if TYPE_CHECKING:
    from engine.propagate.hits import HitSummary

LOCK_RECHECK_S = 1.0  # locks are re-read at least this often (verdicts depend on time)
EVENTS_SHOWN = 10  # propagation events summarized per change


# ------------------------------------------------------------------------ change detection


class ChangeProbe:
    """Tells which parts of a workspace changed since the last ``poll``.

    ``PRAGMA data_version`` changes whenever another connection commits, at the cost of one
    page read; directory mtimes change when entries are created, renamed or removed. Both are
    far cheaper than re-reading, so a front end can poll every few hundred milliseconds and
    re-read only what changed. Files are the truth for locks and incoming (a lock is a file).
    Own one probe per thread (SQLite connections are per thread).

    The connection is opened on first use and never waits for an unreachable server
    (``StateUnavailable`` at once; a new try when the back-off allows); ``outage`` says
    since when it is unreachable. A new session of the connection (the server restarted, the
    session was terminated) reports every topic: notifications were missed.
    """

    TOPICS = ("db", "locks", "incoming", "events", "flags")

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.outage = Outage()
        self._patience = Patience(0.0, outage=self.outage)
        self._db: StateDB | None = None
        self._opening = Backoff()
        self._session: int | None = None
        self.new_session = False  # the last poll found a new session (read everything)
        self._last: dict[str, object] = {}

    @property
    def db(self) -> StateDB:
        """The probe's connection (opened on first use; ``StateUnavailable`` while the
        server cannot be reached, tried again when the back-off allows)."""
        if self._db is None:
            if not self._opening.due(time.monotonic()):
                raise StateUnavailable(
                    f"state database unreachable: {self.outage.error}", since=self.outage.since
                )
            try:
                self._db = StateDB(self.ws.state, patience=self._patience)
            except StateUnavailable:
                self._opening.failed(time.monotonic())
                raise
            self._opening.reset()
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

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
        db = self.db
        fp: dict[str, object] = {"db": db.data_version()}
        session = db.backend.session(db.conn)
        if session != self._session:  # a new session: whatever was cached may be stale
            self.new_session = self._session is not None
            self._session = session
            self._last = {}
        for topic in self.TOPICS[1:]:
            stamps: list[tuple[str, int | None, int | None]] = []
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


# ------------------------------------------------------------------------ snapshots

_UNSET = object()  # "no stream shown yet": differs from every downlink id and from None


@dataclass(frozen=True)
class Snapshot:
    """What one poll read; a part that is None (``stream_read`` False) did not change.

    ``dlid`` is the downlink whose stream was asked for; ``groups`` are the processes of
    its stream's task that run once per substream key (``task_groups``).
    """

    dlid: str | None = None
    rows: dict[str, DownlinkRow] | None = None
    stream: StreamView | None = None
    stream_read: bool = False
    typical: dict[str, float] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    locks: list[LockInfo] | None = None
    events: dict[str, HitSummary | str] | None = None
    read_s: float = 0.0

    @property
    def changed(self) -> bool:
        """Whether anything was read (a front end has something to apply)."""
        return (
            self.rows is not None
            or self.stream_read
            or self.events is not None
            or self.locks is not None
        )

    @property
    def moves_bytes(self) -> bool:
        """Whether what changed can move disk usage (downlinks or events came or went)."""
        return self.rows is not None or self.events is not None


class Monitor:
    """Polls one workspace: each ``poll`` reads what changed since the last one.

    Own one per thread (it holds a SQLite connection through its probe); ``close`` it when
    done. After a failed poll (an exception, ``StateUnavailable`` while the state database
    cannot be reached) or on a new session of the probe's connection, the next one reads
    everything again.
    """

    def __init__(
        self,
        ws: Workspace,
        lock_recheck_s: float = LOCK_RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ws = ws
        self.lock_recheck_s = lock_recheck_s
        self.clock = clock
        self.probe = ChangeProbe(ws)
        self.rows = DownlinkRows(ws)
        self._shown: object = _UNSET  # the downlink whose stream was read last
        self._summaries: dict[str, tuple[float, HitSummary | str]] = {}
        self._groups: dict[str, dict[str, str]] = {}
        self._task: str | None = None  # the workspace's task name, read once
        self._locks_at = float("-inf")

    @property
    def outage(self) -> Outage:
        """The state database as this monitor last saw it (reachable, since when, why)."""
        return self.probe.outage

    def close(self) -> None:
        self.probe.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def forget(self) -> None:
        """Make the next ``poll`` read every part again."""
        self._shown = _UNSET
        self.rows = DownlinkRows(self.ws)
        self.probe.forget()

    def poll(self, dlid: str | None) -> Snapshot:
        """Read what changed; ``dlid``: the downlink whose stream the front end shows."""
        try:
            return self._poll(dlid)
        except Exception:
            self.forget()  # read everything again next round
            raise

    def _poll(self, dlid: str | None) -> Snapshot:
        t0 = time.perf_counter()
        changed = self.probe.poll()
        if self.probe.new_session:  # notifications were missed: nothing cached is trusted
            self.probe.new_session = False
            self._shown = _UNSET
            self.rows = DownlinkRows(self.ws)
        db = self.probe.db
        rows = stream = locks = events = None
        stream_read = False
        typical: dict[str, float] = {}
        groups: dict[str, str] = {}
        if changed & {"db", "incoming"}:
            rows = self.rows.read(db)
        if "db" in changed or dlid != self._shown:
            stream_read = True
            stream = stream_view(db, dlid, self.task_name())
            typical = typical_durations(db)
            if stream is not None:
                groups = self.groups(stream.stream.task)
            self._shown = dlid
        now = self.clock()
        if "locks" in changed or now - self._locks_at > self.lock_recheck_s:
            # on PostgreSQL another host's lock is judged by the server (its owner's presence)
            locks = list_locks(self.ws.lock, db.remote_judge)
            self._locks_at = now
        if "events" in changed:
            events = self.summaries()
        return Snapshot(
            dlid,
            rows,
            stream,
            stream_read,
            typical,
            groups,
            locks,
            events,
            time.perf_counter() - t0,
        )

    def task_name(self) -> str | None:
        """The name of the task the workspace runs (None: its task file cannot be read; the
        stream shown is then the default task's)."""
        if self._task is None:
            with contextlib.suppress(SkydeckError):
                self._task = load_task(self.ws).name
        return self._task

    def groups(self, task_name: str) -> dict[str, str]:
        """``task_groups`` of a task, read once per monitor (a bad task file: no groups)."""
        if task_name not in self._groups:
            try:
                self._groups[task_name] = task_groups(self.ws, task_name)
            except SkydeckError:
                return {}
        return self._groups[task_name]

    def summaries(self) -> dict[str, HitSummary | str]:
        """The hit summary of each recent event, recomputed only when its meta.json changed
        (a summary that fails is its error message)."""
        out: dict[str, HitSummary | str] = {}
        for e in list_events(self.ws, EVENTS_SHOWN):
            hit = self._summaries.get(e.path)
            if hit is None or hit[0] != e.mtime:
                try:
                    s: HitSummary | str = summarize_event(e.path)
                except SkydeckError as err:
                    s = err.message
                self._summaries[e.path] = (e.mtime, s)
            out[e.path] = self._summaries[e.path][1]
        return out


def stream_view(db: StateDB, dlid: str | None, task: str | None = None) -> StreamView | None:
    """The latest stream of a downlink (of ``task``, default: the default task) with its
    latest process instances (None: no stream)."""
    if dlid is None:
        return None
    st = db.latest_stream(dlid) if task is None else db.latest_stream(dlid, task)
    if st is None:
        return None
    return StreamView(st, db.instances(st.id))


class UsageCadence:
    """When the disk-usage scan is due: after changes that move bytes (at most every
    ``min_s``, checked by the caller's timer), else every ``every_s``; never two at once."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self.busy = False
        self.dirty = False
        self.last = 0.0

    def saw(self, snapshot: Snapshot) -> None:
        """Note a snapshot: downlinks or events changing make a scan due."""
        if snapshot.moves_bytes:
            self.dirty = True

    def start(self) -> bool:
        """True (and the scan counts as started) when one is due and none runs."""
        if self.busy:
            return False
        if self.dirty or self.clock() - self.last >= self.every_s:
            self.dirty = False
            self.busy = True
            return True
        return False

    def done(self) -> None:
        """The scan ended (with a report or not)."""
        self.busy = False
        self.last = self.clock()
