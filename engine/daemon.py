"""The watch daemon: deliveries in, streams run, state in the database, one log line per event.

Shape (docs/ecosystem.md, "Daemon shape"):
- watchdog's inotify observer on the two inboxes gives low-latency *hints*; a periodic
  reconciliation scan is the source of truth, because inotify overflows are dropped
  silently and nothing is seen while the daemon is down. On nfs/gpfs/lustre/cifs mounts
  (or with ``--polling``) a PollingObserver with a configurable interval is used instead,
  since kernel notifications do not cross the network.
- Every claim (delivery, stream) is a state-database transaction, so any number of daemons,
  ``skydeck-engine run`` and the console can share a workspace without processing a
  downlink twice; a claim whose owner is provably dead is taken over (resume). With a
  PostgreSQL state the daemon holds its presence on the server from its start
  (engine/store/presence.py), so a daemon on another host that dies is seen dead by the
  server and its streams, deliveries and locks are taken over here (a ``takeover`` line).
- SIGTERM/SIGINT: stop launching, terminate running jobs (their instances become
  TERMINATED and are re-executed by the next owner), release the streams, exit 0.
- ``--once``: process what is there, run those streams to their end, exit.
- Containment: whatever happens to one delivery or one stream (a file vanishing mid-verify,
  an I/O error, a full disk making a state write fail) is that delivery's or stream's
  problem only. The exception is logged as one ``error`` line naming it, and that delivery
  or stream is retried later with exponential back-off, while the others are served; a
  failed write leaves the database as it was (``StateDB.tx``). The daemon itself never
  dies of it.
- The state database going away (a PostgreSQL restart, a failover, its sessions
  terminated) is not a unit's fault but the daemon's weather: its connections re-make
  their sessions themselves (engine/store/postgres.py); while the server cannot be
  reached the daemon logs one ``state_unreachable`` line, stops the work that needs it,
  goes on beating (the heartbeat says since when the state is unreachable, so ``health``
  fails) and collecting job exits, tries again with back-off, and when the server is back
  logs ``state_reachable`` (with ``down_s``), records the exits, reconciles the inboxes
  and picks up again. Every unit is reconciling and every state write recognises its own
  earlier commit, so nothing is registered, staged or run twice. Started while the server
  is down, the daemon waits for it (``--once``: for ``[state] wait_s``, then exit 75).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.api.listings import DAEMON_LOG
from engine.api.metrics import Exporter, sweep_dead_heartbeats
from engine.core.errors import StateUnavailable
from engine.core.log import attach_file, detach_file, emit_event, logger
from engine.core.workspace import Workspace
from engine.intake import deliveries
from engine.pipeline.halts import halt_flag, is_set_globally
from engine.pipeline.launchers import JobResult, make_launcher
from engine.pipeline.runner import StreamRunner
from engine.pipeline.task import Task, load_task
from engine.store import StateDB
from engine.store.outage import Backoff, Outage, Patience

VERIFY_WAIT_S = 30.0  # a verify thread rides over a state server restart this long

NETWORK_FS = ("nfs", "nfs4", "gpfs", "lustre", "cifs", "smb3", "smbfs", "fuse.sshfs", "ceph",
              "beegfs", "9p")


def fstype(path: Path) -> str:
    """The filesystem type of the mount holding ``path`` (longest mount-point prefix)."""
    best, kind = "", "unknown"
    p = str(path.resolve())
    try:
        with open("/proc/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (p == mnt or p.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def choose_polling(ws: Workspace, force: bool) -> tuple[bool, str]:
    if force:
        return True, "--polling"
    setting = ws.settings.watch.polling  # True, False or "auto"
    if setting is True:
        return True, "config watch.polling = true"
    if setting is False:
        return False, "config watch.polling = false"
    for d in (ws.incoming_fcopy, ws.incoming_level0):
        kind = fstype(d)
        if kind in NETWORK_FS:
            return True, f"{d} is on {kind}: inotify does not see other clients' writes"
    return False, "local filesystem"


@dataclass
class WatchResult:
    registered: list[str] = field(default_factory=list)
    rejected: list[deliveries.Outcome] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    terminated: bool = False
    errors: list[str] = field(default_factory=list)  # faults still open at exit: "what: error"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "(no message)"
    return f"{type(err).__name__}: {text[:300]}"


def _contained_as(key: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A Daemon method whose exceptions are contained under ``key`` (see ``_contained``);
    it returns None when it raised."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(self: Daemon, *args: Any, **kw: Any) -> Any:
            with self._contained(key):
                return fn(self, *args, **kw)
            return None
        return inner
    return wrap


@dataclass
class _Fault:
    """Consecutive failures of one delivery, stream or daemon step, and when to try again."""

    count: int
    message: str
    retry_at: float


class Daemon:
    def __init__(self, ws: Workspace, *, polling: bool = False, once: bool = False,
                 emit: Callable[[dict[str, Any]], None] | None = None,
                 task: Task | None = None, max_jobs: int | None = None) -> None:
        self.ws = ws
        self.once = once
        self.force_polling = polling
        self.emit_fn = emit  # None: the engine's loggers (engine/core/log.py) + logs/daemon.log
        self.task = task or load_task(ws)
        self._log_file = attach_file(ws.logs / DAEMON_LOG) if emit is None else None
        self._events = 0
        self.result = WatchResult()
        # the state server as this daemon sees it (all its connections), and what stops
        # their waits (shutdown)
        self.outage = Outage(lambda ev: self.emit(ev, "daemon"))
        self._stopping = threading.Event()
        self.metrics = Exporter(ws, beat=not once, outage=self.outage)  # heartbeat + textfile
        try:
            self.db, self.presence = self._open_state()
        except BaseException:
            self.metrics.close()
            self._detach_log()
            raise
        self.launcher = make_launcher(ws.settings, max_jobs)
        self.max_streams = ws.settings.pipeline.max_streams
        self.scan_interval = ws.settings.watch.scan_interval_s
        self.poll_interval = ws.settings.watch.poll_interval_s
        self.quiet_s = ws.settings.watch.quiet_s
        self.incomplete_timeout = ws.settings.watch.incomplete_timeout_s
        self.runners: dict[int, StreamRunner] = {}
        self.hints: queue.Queue[str] = queue.Queue()
        self.pending: dict[str, deliveries.Candidate] = {}
        self.stop = False
        self._observer: Any = None
        self._stale_seen: set[str] = set()
        self._stepped: dict[int, float] = {}
        self.verifier = ThreadPoolExecutor(max_workers=ws.settings.watch.verify_threads,
                                           thread_name_prefix="verify")
        self.inflight: dict[str, tuple[deliveries.Candidate, Future[deliveries.Outcome]]] = {}
        self._taken: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()  # verify threads'
        self._tls = threading.local()
        self._thread_dbs: list[StateDB] = []
        self.restep_s = 0.5
        self.backoff_s = ws.settings.watch.error_backoff_s
        self.backoff_max_s = ws.settings.watch.error_backoff_max_s
        self._faults: dict[str, _Fault] = {}
        self._exits: list[JobResult] = []          # job exits not recorded yet (a write failed)
        self._pending_next: dict[str, tuple[float, int, str | None]] = {}
        self.pending_max_s = ws.settings.watch.pending_recheck_max_s
        self._prune_next = 0.0                     # the first prune: at the first loop
        self._state_retry = Backoff()              # probes of an unreachable state server

    # ------------------------------------------------------------------ state database

    def _open_state(self) -> tuple[StateDB, Any]:
        """The main connection and, before anything is owned, the presence (on PostgreSQL
        the server sees this daemon die). A server that cannot be reached is waited for,
        with back-off and one ``state_unreachable`` line, beating meanwhile (``--once``:
        for ``[state] wait_s``, then StateUnavailable, exit 75). Afterwards the main
        connection never waits: a lost server is the main loop's outage mode."""
        wait_s = self.ws.settings.state.wait_s if self.once else math.inf
        deadline = time.monotonic() + wait_s
        patience = Patience(0.0, self._stopping, self.outage)
        backoff = Backoff()
        while True:
            db = None
            try:
                db = StateDB(self.ws.state, patience=patience)
                return db, db.hold_presence()
            except StateUnavailable:
                if db is not None:
                    db.close()
                backoff.failed(time.monotonic())
                if time.monotonic() >= deadline:
                    raise
            with contextlib.suppress(Exception):  # beat: health says why this daemon waits
                self.metrics.tick()
            time.sleep(max(0.0, min(backoff.next_at, deadline) - time.monotonic()))

    def _state_lost(self, err: StateUnavailable) -> None:
        """A unit met an unreachable state server: the outage (one line, once)."""
        self.outage.down(err.message)

    def _state_probe(self) -> bool:
        """In outage mode: one try (when the back-off allows) whether the state server
        answers again; True once it does (``state_reachable`` logged with ``down_s``)."""
        now = time.monotonic()
        if not self._state_retry.due(now):
            return False
        try:
            self.db.q("SELECT 1")
        except StateUnavailable as err:
            self._state_lost(err)
            self._state_retry.failed(time.monotonic())
            return False
        self._state_retry.reset()
        self.outage.up()
        return True

    # ------------------------------------------------------------------ events

    def _log(self, ev: dict[str, Any], area: str) -> None:
        """Each event to the ``skydeck.<area>`` logger: a JSON line appended to
        logs/daemon.log (which a console can open), then a line on stdout, human or JSON
        (``--log-format``). A log that cannot be written (its disk full, its reader gone, no
        permission) loses the line, not the daemon."""
        with contextlib.suppress(OSError, ValueError):
            emit_event(logger(area), ev)

    def emit(self, ev: dict[str, Any], area: str = "pipeline") -> None:
        """One event (the runners' too: their area is the default)."""
        self._events += 1
        if ev.get("event") == "stream_success":
            self.result.succeeded.append(ev["dlid"])
        elif ev.get("event") == "stream_failed":
            self.result.failed.append(ev["dlid"])
        if self.emit_fn is None:
            self._log(ev, area)
        else:
            self.emit_fn(ev)

    def _ev(self, event: str, _area: str = "daemon", **kw: Any) -> None:
        self.emit({"t": round(time.time(), 3), "event": event, **kw}, _area)

    def _debug(self, event: str, _area: str = "daemon", **kw: Any) -> None:
        """A debug line (``-v``, ``--log-level debug``): not an event the loop counts, and
        nothing is built when debug is off."""
        log = logger(_area)
        if self.emit_fn is None and log.isEnabledFor(logging.DEBUG):
            with contextlib.suppress(OSError, ValueError):
                emit_event(log, {"t": round(time.time(), 3), "event": event, **kw},
                           logging.DEBUG)

    # ------------------------------------------------------------------ containment

    def _fault(self, key: str, err: BaseException | str, **ids: Any) -> None:
        """Record a failure of ``key`` (``delivery:<name>``, ``stream:<dlid>``, a daemon
        step): one log line when the error is new or changed, then back off exponentially."""
        prev = self._faults.get(key)
        count = prev.count + 1 if prev else 1
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** min(count - 1, 20))
        msg = err if isinstance(err, str) else _one_line(err)
        self._faults[key] = _Fault(count, msg, time.monotonic() + delay)
        if prev is None or prev.message != msg:
            with contextlib.suppress(Exception):
                self._ev("error", during=key, error=msg, attempt=count, retry_in_s=delay, **ids)

    def _backing_off(self, key: str) -> bool:
        f = self._faults.get(key)
        return f is not None and time.monotonic() < f.retry_at

    def _recovered(self, key: str, **ids: Any) -> None:
        f = self._faults.pop(key, None)
        if f is not None:
            with contextlib.suppress(Exception):
                self._ev("recovered", during=key, attempts=f.count, **ids)

    @contextlib.contextmanager
    def _contained(self, key: str, **ids: Any) -> Iterator[None]:
        """Run one delivery's, one stream's or one daemon step's work; an exception from it
        is logged and backed off, never raised into the main loop."""
        try:
            yield
        except StateUnavailable as err:  # not this unit's fault: the daemon's outage mode
            self._state_lost(err)
        except Exception as err:  # the point: nothing from one unit kills the daemon
            self._fault(key, err, **ids)
        else:
            if key in self._faults:
                self._recovered(key, **ids)

    # ------------------------------------------------------------------ observer

    def start_observer(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        hints = self.hints

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:  # watchdog thread: only enqueue
                if event.event_type in ("created", "moved", "closed", "modified"):
                    hints.put(str(getattr(event, "dest_path", "") or event.src_path))

        polling, why = choose_polling(self.ws, self.force_polling)
        obs = PollingObserver(timeout=self.poll_interval) if polling else Observer()
        for d, recursive in ((self.ws.incoming_fcopy, False), (self.ws.incoming_level0, True)):
            d.mkdir(parents=True, exist_ok=True)
            obs.schedule(Handler(), str(d), recursive=recursive)
        obs.daemon = True
        obs.start()
        self._observer = obs
        self._ev("watching", polling=polling, why=why,
                 interval_s=self.poll_interval if polling else None,
                 dirs=[str(self.ws.incoming_fcopy), str(self.ws.incoming_level0)], pid=os.getpid())

    def stop_observer(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            with contextlib.suppress(RuntimeError):
                self._observer.join(5)
            self._observer = None

    # ------------------------------------------------------------------ deliveries

    def _handle(self, cand: deliveries.Candidate) -> None:
        """Verify a candidate on a worker thread: md5 of a large delivery takes seconds and
        must not hold up job exits and launches. One verification per delivery at a time,
        none while it backs off after an error."""
        if cand.name in self.inflight or self._backing_off(f"delivery:{cand.name}"):
            return
        self.inflight[cand.name] = (cand, self.verifier.submit(self._verify, cand))

    def _verify(self, cand: deliveries.Candidate) -> deliveries.Outcome:
        """On a worker thread; an unexpected exception becomes an ``error`` outcome."""
        try:
            db = getattr(self._tls, "db", None)
            if db is None:  # one connection per thread, riding over a server restart
                db = self._tls.db = StateDB(
                    self.ws.state, check_same_thread=False,
                    patience=Patience(VERIFY_WAIT_S, self._stopping, self.outage))
                self._thread_dbs.append(db)
            try:
                return deliveries.process(self.ws, db, cand, self.quiet_s,
                                          self.incomplete_timeout)
            finally:  # a dead host's claim taken over: a line from the main thread
                for detail in db.drain_takeovers():
                    self._taken.put(detail)
        except StateUnavailable:
            raise  # the daemon's outage, not this delivery's: collect_verified
        except Exception as err:  # contained: this delivery only
            return deliveries.Outcome(cand.name, cand.kind, None, "error", _one_line(err),
                                      str(cand.path))

    def collect_verified(self, wait: bool = False) -> int:
        done = 0
        with contextlib.suppress(queue.Empty):
            while True:
                self._ev("takeover", **self._taken.get_nowait())
        for name, (cand, fut) in list(self.inflight.items()):
            if not (fut.done() or wait):
                continue
            del self.inflight[name]
            key = f"delivery:{name}"
            try:
                o = fut.result()  # _verify raises only this
            except StateUnavailable as err:
                # looked at again once the server is back (the reconciliation scan finds it;
                # its claim, ours, is taken again and its extraction recognised)
                self._state_lost(err)
                continue
            if o.status == "error":
                # this delivery only: one line naming it, looked at again after a back-off;
                # its claim was given back (or, if even that failed, is ours to take again)
                self.pending[name] = cand
                self._fault(key, o.reason or "error", delivery=name)
            else:
                with self._contained(key, delivery=name):
                    self._outcome(cand, o)
                if self._backing_off(key):
                    self.pending[name] = cand
            done += 1
        return done

    def _pending_due(self, name: str) -> bool:
        due = self._pending_next.get(name)
        return due is None or time.monotonic() >= due[0]

    def _pending_backoff(self, name: str, reason: str | None) -> None:
        """A delivery pending for the same reason is looked at less and less often (each look
        is a claim written to the state db); inotify hints still bring it back at once."""
        if self.once:
            return
        _due, k, prev = self._pending_next.get(name, (0.0, -1, None))
        k = k + 1 if reason == prev else 0
        delay = min(self.pending_max_s, min(1.0, self.quiet_s) * 2 ** min(k, 20))
        self._pending_next[name] = (time.monotonic() + delay, k, reason)

    def _outcome(self, cand: deliveries.Candidate, o: deliveries.Outcome) -> None:
        if o.status == "pending":
            if cand.name not in self.pending:
                self._ev("pending", "intake", delivery=o.name, why=o.reason)
            self.pending[cand.name] = cand
            self._pending_backoff(cand.name, o.reason)
            return
        self.pending.pop(cand.name, None)
        self._pending_next.pop(cand.name, None)
        if o.status == "accepted":
            dl = None
            try:  # the latency is a detail: the line is written whether or not it is known
                dl = self.db.downlink(o.dlid or "")
            except StateUnavailable as err:
                self._state_lost(err)
            self.result.registered.append(o.dlid or "")
            self._ev("registered", "intake", dlid=o.dlid, delivery=o.name, form=o.kind,
                     latency_s=round(dl.registered - dl.delivered, 4) if dl else None)
        elif o.status == "rejected":
            self.result.rejected.append(o)
            self._ev("rejected", "intake", delivery=o.name, dlid=o.dlid, reason=o.reason,
                     file=o.file, moved_to=o.path)
        elif o.status == "skipped" and o.reason == deliveries.SAME_AGAIN:
            # an accepted delivery's files rewritten with the very content accepted: said once
            self._ev("unchanged", "intake", delivery=o.name, dlid=o.dlid, why=o.reason)

    def report_stale_locks(self) -> None:
        """Stale locks are reported once (reclaimed when a process needs them), and so is
        anything at a lock path that blocks its lock for good until an operator removes it
        (a directory, a FIFO, a link: no owner to prove dead)."""
        from engine.pipeline.locks import list_locks, sweep_temps
        for p in sweep_temps(self.ws.lock):
            self._ev("swept", path=str(p), why="lock temporary left by a killed process")
        infos = list_locks(self.ws.lock)
        self._stale_seen &= {i.name for i in infos}  # one that comes back is reported again
        for info in infos:
            if (info.stale or info.blocks) and info.name not in self._stale_seen:
                self._stale_seen.add(info.name)
                self._ev("stale_lock" if info.stale else "blocking_lock", "pipeline",
                         lock=info.name, kind=info.kind, owner=info.owner, why=info.reason)

    def check_presence(self) -> None:
        """On PostgreSQL: the connection holding this daemon's presence still stands. If it
        was lost (a server restart, a network cut) it is taken again, and said; meanwhile
        another host may have judged this daemon dead and taken over streams it ran: those
        are given up here (their jobs killed, nothing written: they are the new owner's)."""
        if self.presence is None or self.presence.check():
            return
        self._ev("presence_lost", pid=os.getpid(),
                 why="the state server connection holding this daemon's presence was lost; "
                     "taken again")
        me = (self.presence.owner.pid, self.presence.owner.host)
        for sid, r in list(self.runners.items()):
            st = self.db.stream(sid)
            if (st.owner_pid, st.owner_host) == me:
                continue
            for pi_id in list(r.running):
                self.launcher.cancel(pi_id, grace_s=0.0)
            del self.runners[sid]
            self._stepped.pop(sid, None)
            self._ev("stream_lost", dlid=r.dlid, stream=sid,
                     owner=f"{st.owner_host}:{st.owner_pid}" if st.owner_pid else None,
                     why="taken over by another owner while this daemon's presence was lost; "
                         "its jobs here were killed")

    @_contained_as("delivery scan")
    def reconcile(self) -> None:
        with self._contained("presence"):
            self.check_presence()
        with self._contained("lock report"):  # a lock problem never stops intake
            self.report_stale_locks()
        n = 0
        for cand in deliveries.unsettled(self.db, deliveries.scan(self.ws)):
            self._handle(cand)
            n += 1
        self._debug("scan", "intake", unsettled=n)

    @_contained_as("inotify hints")
    def drain_hints(self, timeout: float) -> int:
        seen: dict[str, deliveries.Candidate] = {}
        try:
            first = self.hints.get(timeout=timeout)
        except queue.Empty:
            return 0
        paths = [first]
        with contextlib.suppress(queue.Empty):
            while True:
                paths.append(self.hints.get_nowait())
        for p in paths:
            cand = deliveries.candidate_for(self.ws, Path(p))
            if cand is not None:
                seen[cand.name] = cand
        self._debug("hints", "intake", paths=len(paths), candidates=sorted(seen))
        for cand in deliveries.unsettled(self.db, seen.values()):
            self._handle(cand)
        return len(seen)

    # ------------------------------------------------------------------ streams

    def pick_up(self) -> None:
        """Claim streams for registered downlinks that need one (new, resumable, rolled back)."""
        if len(self.runners) >= self.max_streams:
            return
        if is_set_globally(self.ws, "halted"):
            return
        dlids: list[str] = []
        with self._contained("stream pick-up"):
            dlids = self.db.streams_to_pick_up(self.task.name)
        mine = {r.dlid for r in self.runners.values()}
        for dlid in dlids:
            if len(self.runners) >= self.max_streams:
                break
            key = f"stream:{dlid}"
            if dlid in mine or self._backing_off(key) or halt_flag(self.ws, dlid, "halted"):
                continue
            with self._contained(key, dlid=dlid):
                st, _why = self.db.claim_stream(dlid, self.task.name)
                for detail in self.db.drain_takeovers():  # a dead owner on another host
                    self._ev("takeover", **detail)
                if st is None:
                    continue
                runner = StreamRunner(self.ws, self.db, self.task, st, self.launcher, self.emit)
                runner.resume()
                self.runners[st.id] = runner
                self._ev("stream_claimed", dlid=dlid, stream=st.id)

    def step_streams(self) -> None:
        """Route job exits, then step the runners that have news (or whose timer is due).

        A runner with only running jobs has nothing to decide until one exits, so it is
        stepped on an exit, when new, or every ``restep_s`` (halt flags, locks, disk space
        may have changed); this keeps an idle daemon from polling the database in a loop.
        Each runner is stepped in its own containment: an exception (a full disk failing a
        state write) backs that stream off and leaves its job exits queued for a retry.
        """
        with self._contained("job poll"):
            self._exits.extend(self.launcher.poll())
        news = self._record_exits()
        now = time.monotonic()
        for sid, r in list(self.runners.items()):
            key = f"stream:{r.dlid}"
            due = now - self._stepped.get(sid, 0.0) >= self.restep_s
            if not (self.once or due or sid in news) or self._backing_off(key):
                continue
            self._stepped[sid] = now
            final = None
            with self._contained(key, dlid=r.dlid, stream=sid):
                final = r.step()
            if final is not None:
                del self.runners[sid]
                self._stepped.pop(sid, None)

    def _record_exits(self, backing_off_too: bool = False) -> set[int]:
        """Hand queued job exits to their runners; an exit whose recording failed (a full
        disk) stays queued for the next round. Returns the ids of streams that got one."""
        by_pi = {pi_id: r for r in self.runners.values() for pi_id in r.running}
        news: set[int] = set()
        unrecorded: list[JobResult] = []
        for res in self._exits:
            r = by_pi.get(res.pi_id)
            if r is None:
                continue
            key = f"stream:{r.dlid}"
            if backing_off_too or not self._backing_off(key):
                with self._contained(key, dlid=r.dlid, stream=r.stream.id):
                    r.on_exit(res)
                news.add(r.stream.id)
            if res.pi_id in r.running:
                unrecorded.append(res)
        self._exits = unrecorded
        return news

    def shutdown(self) -> None:
        self._stopping.set()  # a verify thread waiting for the state server gives up
        self.verifier.shutdown(wait=True)  # claims are given back or settled, never left held
        self.collect_verified(wait=True)
        # jobs that ended but whose exit is not recorded yet: once more, so a job that
        # succeeded is not left RUNNING (and run again by the next owner)
        self._record_exits(backing_off_too=True)
        ids = set(self.launcher.cancel_all())
        ids |= {res.pi_id for res in self._exits}  # ended, still unrecorded: resumable
        for r in self.runners.values():
            with self._contained(f"stream:{r.dlid} release", dlid=r.dlid):
                r.terminate([i for i in r.running if i in ids])
                self.db.release_stream(r.stream.id, "TERMINATED", "daemon stopped; resumes on restart")
        self.runners.clear()
        for name in list(self.pending):
            self.pending.pop(name)
        self.stop_observer()
        self.result.terminated = True
        self._ev("stopped", pid=os.getpid())

    def _outage_round(self) -> bool:
        """One round while the state server cannot be reached: job exits are collected
        (recorded once it is back), verifications that ended are taken in, the heartbeat
        says the state is unreachable, and the server is probed with back-off. Work that
        needs the database waits. True when the server answers again."""
        with self._contained("job poll"):
            self._exits.extend(self.launcher.poll())
        self.collect_verified()
        self.tick_metrics()
        if self._state_probe():
            # what the outage kept: job exits first (their streams' runners stay ours)
            self.step_streams()
            self.reconcile()
            return True
        since = self.outage.since
        if self.once and since is not None and \
                time.time() - since > self.ws.settings.state.wait_s:
            raise StateUnavailable(f"state database unreachable for more than "
                                   f"[state] wait_s = {self.ws.settings.state.wait_s:g} s: "
                                   f"{self.outage.error}", self.db.where, since=since)
        time.sleep(0.05)
        return False

    # ------------------------------------------------------------------ metrics

    @_contained_as("metrics")
    def tick_metrics(self, final: bool = False) -> None:
        """Heartbeat and metrics textfile every ``[metrics] interval_s`` (cheap when not due);
        ``final``: ``--once``'s one write at its end (engine/api/metrics.py)."""
        if final:
            self.metrics.final()
        elif not self.once:  # --once writes the textfile once, at its end
            self.metrics.tick()

    # ------------------------------------------------------------------ retention

    def tick_prune(self) -> None:
        """Apply the retention policy every ``[retention] interval_s`` (0: never; not under
        ``--once``), logged as one ``prune`` event with counts and bytes per area when it
        did something (engine/pipeline/retention.py); a failure is one ``error`` line (and
        one ``recovered`` once a prune succeeds again), never the daemon's end."""
        interval = self.ws.settings.retention.interval_s
        if self.once or interval <= 0 or time.monotonic() < self._prune_next:
            return  # not due: says nothing about whether pruning works
        self._prune_next = time.monotonic() + interval
        with self._contained("prune"):
            from engine.pipeline.retention import apply, plan
            res = apply(self.ws, plan(self.ws, self.db), self.db)
            if res.removed or res.gone or res.kept or res.failed:  # an idle prune: silent
                self._ev("prune", **res.summary(),
                         errors=[f"{c.path}: {err}" for c, err in res.failed][:20])

    # ------------------------------------------------------------------ main loop

    def run(self) -> WatchResult:
        self._debug("config", workspace=str(self.ws.root), task=self.task.name,
                    launcher=self.ws.settings.pipeline.launcher, max_streams=self.max_streams,
                    scan_interval_s=self.scan_interval, quiet_s=self.quiet_s)
        if not self.once:
            self.start_observer()
        else:
            self._ev("once", pid=os.getpid())
        with self._contained("extract sweep"):  # before any extraction of ours starts
            for p in deliveries.sweep_extracts(self.ws):
                self._ev("swept", "intake", path=str(p), why="partial extraction left by a killed process")
        with self._contained("metrics"):
            sweep_dead_heartbeats(self.ws)
        self.reconcile()
        last_scan = last_pending = last_pickup = 0.0
        idle_rounds = 0
        started = time.time()
        try:
            while not self.stop:
                now = time.time()
                if not self.outage.reachable:
                    if self._outage_round():  # back: reconciled; pick up at once
                        last_scan, last_pickup, idle_rounds = now, 0.0, 0
                    continue
                try:
                    if not self.once and now - last_scan >= self.scan_interval:
                        self.reconcile()
                        last_scan = now
                    if self.pending and now - last_pending >= min(1.0, self.quiet_s):
                        for cand in list(self.pending.values()):
                            if self._pending_due(cand.name):
                                self._handle(cand)
                        last_pending = now
                    before = self._events
                    self.collect_verified()
                    if now - last_pickup >= 0.5 or not self.runners:
                        self.pick_up()
                        last_pickup = now
                    self.step_streams()
                    self.tick_metrics()
                    self.tick_prune()
                    busy = bool(self.inflight) or bool(self.launcher.active())
                except StateUnavailable as err:  # (units contain their own; to be sure)
                    self._state_lost(err)
                    continue
                except Exception as err:  # last resort: the loop itself goes on
                    self._fault("daemon loop", err)
                    time.sleep(min(1.0, self.backoff_s))
                    continue
                if "daemon loop" in self._faults:
                    self._recovered("daemon loop")
                if not self.outage.reachable:
                    continue
                if self.once:
                    if self._events == before and not busy:
                        idle_rounds += 1
                        # pending deliveries get a quiet period to settle, then stay for later
                        settled = not self.pending or now - started > 2 * self.quiet_s + 1
                        if idle_rounds >= 3 and settled:
                            break
                        if idle_rounds > 3:
                            time.sleep(0.05)
                    else:
                        idle_rounds = 0
                    time.sleep(0.005 if busy else 0.0)
                    continue
                self.drain_hints(0.01 if busy or self._events != before else 0.1)
        except BaseException:
            self.shutdown()
            raise
        if self.stop:
            self.shutdown()
        else:
            for r in self.runners.values():  # --once: held streams (halt flags) stay resumable
                with self._contained(f"stream:{r.dlid} release", dlid=r.dlid):
                    self.db.release_stream(r.stream.id, "WAITING", r.note or "held")
            self.runners.clear()
            self.verifier.shutdown(wait=True)
            self.stop_observer()
            self.tick_metrics(final=True)
        self.result.errors = [f"{key}: {f.message}" for key, f in self._faults.items()]
        return self.result

    def _detach_log(self) -> None:
        if self._log_file is not None:
            detach_file(self._log_file)
            self._log_file = None

    def close(self) -> None:
        self._detach_log()
        self.metrics.close()
        self.verifier.shutdown(wait=True)
        for db in self._thread_dbs:
            db.close()
        self.db.close()


def run_daemon(ws: Workspace, *, polling: bool = False, once: bool = False,
               emit: Callable[[dict[str, Any]], None] | None = None,
               metrics_port: int | None = None, metrics_addr: str = "0.0.0.0") -> WatchResult:
    d = Daemon(ws, polling=polling, once=once, emit=emit)
    if metrics_port is not None:
        try:
            port = d.metrics.serve(metrics_port, metrics_addr)
        except BaseException:
            d.close()
            raise
        d._ev("metrics_http", addr=metrics_addr, port=port, path="/metrics")

    def on_signal(signum: int, frame: object) -> None:
        d.stop = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return d.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        d.close()
