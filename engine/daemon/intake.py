"""The daemon's intake: the inboxes watched, deliveries verified off the loop, outcomes
logged.

Shape (docs/ecosystem.md, "Daemon shape"): watchdog's inotify observer on the two inboxes
gives low-latency *hints*; a periodic reconciliation scan (``scan``, called by the loop) is
the source of truth, because inotify overflows are dropped silently and nothing is seen
while the daemon is down. On nfs/gpfs/lustre/cifs mounts (or with ``--polling``) a
PollingObserver with a configurable interval is used instead, since kernel notifications
do not cross the network. Verifying a delivery (MD5 of gigabytes) runs on a thread pool so
job exits and launches never wait for it; one verification per delivery at a time, none
while it backs off. A delivery still arriving is looked at less and less often while its
reason stays the same. Each verification's claim is a state-database transaction
(engine/intake/deliveries.py), so several daemons never register a delivery twice.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from engine.core.errors import StateUnavailable
from engine.core.workspace import Workspace
from engine.daemon.containment import Containment, contained_as, one_line
from engine.daemon.events import Events
from engine.intake import deliveries, fcopy, inbox
from engine.store import StateDB
from engine.store.outage import Outage, Patience

VERIFY_WAIT_S = 30.0  # a verify thread rides over a state server restart this long

NETWORK_FS = (
    "nfs",
    "nfs4",
    "gpfs",
    "lustre",
    "cifs",
    "smb3",
    "smbfs",
    "fuse.sshfs",
    "ceph",
    "beegfs",
    "9p",
)


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


class Intake:
    """Deliveries in: hints from the observer, verifications on the pool, outcomes logged."""

    def __init__(
        self,
        ws: Workspace,
        db: StateDB,
        events: Events,
        contain: Containment,
        outage: Outage,
        stopping: threading.Event,
        *,
        once: bool,
        force_polling: bool = False,
    ) -> None:
        self.ws, self.db, self.events, self.contain = ws, db, events, contain
        self.outage, self.stopping, self.once = outage, stopping, once
        self.force_polling = force_polling
        w = ws.settings.watch
        self.poll_interval = w.poll_interval_s
        self.quiet_s = w.quiet_s
        self.incomplete_timeout = w.incomplete_timeout_s
        self.pending_max_s = w.pending_recheck_max_s
        self.hints: queue.Queue[str] = queue.Queue()
        self.pending: dict[str, deliveries.Candidate] = {}
        self._pending_next: dict[str, tuple[float, int, str | None]] = {}
        self._observer: Any = None
        self.verifier = ThreadPoolExecutor(
            max_workers=w.verify_threads, thread_name_prefix="verify"
        )
        self.inflight: dict[str, tuple[deliveries.Candidate, Future[deliveries.Outcome]]] = {}
        self._taken: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()  # verify threads'
        self._tls = threading.local()
        self._thread_dbs: list[StateDB] = []

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
        self.events.ev(
            "watching",
            polling=polling,
            why=why,
            interval_s=self.poll_interval if polling else None,
            dirs=[str(self.ws.incoming_fcopy), str(self.ws.incoming_level0)],
            pid=os.getpid(),
        )

    def stop_observer(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            with contextlib.suppress(RuntimeError):
                self._observer.join(5)
            self._observer = None

    # ------------------------------------------------------------------ scans

    def sweep_extracts(self) -> None:
        """Partial extractions a killed process left (before any extraction of ours)."""
        with self.contain.contained("extract sweep"):
            for p in fcopy.sweep_extracts(self.ws):
                self.events.ev(
                    "swept",
                    "intake",
                    path=str(p),
                    why="partial extraction left by a killed process",
                )

    def scan(self) -> None:
        """The reconciliation scan: every delivery not settled yet is handled."""
        n = 0
        for cand in deliveries.unsettled(self.db, inbox.scan(self.ws)):
            self.handle(cand)
            n += 1
        self.events.debug("scan", "intake", unsettled=n)

    @contained_as("inotify hints")
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
            cand = inbox.candidate_for(self.ws, Path(p))
            if cand is not None:
                seen[cand.name] = cand
        self.events.debug("hints", "intake", paths=len(paths), candidates=sorted(seen))
        for cand in deliveries.unsettled(self.db, seen.values()):
            self.handle(cand)
        return len(seen)

    def recheck_pending(self) -> None:
        """Deliveries still arriving whose next look is due."""
        for cand in list(self.pending.values()):
            if self._pending_due(cand.name):
                self.handle(cand)

    # ------------------------------------------------------------------ verification

    def handle(self, cand: deliveries.Candidate) -> None:
        """Verify a candidate on a worker thread: md5 of a large delivery takes seconds and
        must not hold up job exits and launches. One verification per delivery at a time,
        none while it backs off after an error."""
        if cand.name in self.inflight or self.contain.backing_off(f"delivery:{cand.name}"):
            return
        self.inflight[cand.name] = (cand, self.verifier.submit(self._verify, cand))

    def _verify(self, cand: deliveries.Candidate) -> deliveries.Outcome:
        """On a worker thread; an unexpected exception becomes an ``error`` outcome."""
        try:
            db = getattr(self._tls, "db", None)
            if db is None:  # one connection per thread, riding over a server restart
                db = self._tls.db = StateDB(
                    self.ws.state,
                    check_same_thread=False,
                    patience=Patience(VERIFY_WAIT_S, self.stopping, self.outage),
                )
                self._thread_dbs.append(db)
            try:
                return deliveries.process(self.ws, db, cand, self.quiet_s, self.incomplete_timeout)
            finally:  # a dead host's claim taken over: a line from the main thread
                for detail in db.drain_takeovers():
                    self._taken.put(detail)
        except StateUnavailable:
            raise  # the daemon's outage, not this delivery's: collect_verified
        except Exception as err:  # contained: this delivery only
            return deliveries.Outcome(
                cand.name, cand.kind, None, "error", one_line(err), str(cand.path)
            )

    def collect_verified(self, wait: bool = False) -> int:
        done = 0
        with contextlib.suppress(queue.Empty):
            while True:
                self.events.ev("takeover", **self._taken.get_nowait())
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
                self.contain.state_lost(err)
                continue
            if o.status == "error":
                # this delivery only: one line naming it, looked at again after a back-off;
                # its claim was given back (or, if even that failed, is ours to take again)
                self.pending[name] = cand
                self.contain.fault(key, o.reason or "error", delivery=name)
            else:
                with self.contain.contained(key, delivery=name):
                    self._outcome(cand, o)
                if self.contain.backing_off(key):
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
        ev = self.events
        if o.status == "pending":
            if cand.name not in self.pending:
                ev.ev("pending", "intake", delivery=o.name, why=o.reason)
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
                self.contain.state_lost(err)
            ev.result.registered.append(o.dlid or "")
            ev.ev(
                "registered",
                "intake",
                dlid=o.dlid,
                delivery=o.name,
                form=o.kind,
                latency_s=round(dl.registered - dl.delivered, 4) if dl else None,
            )
        elif o.status == "rejected":
            ev.result.rejected.append(o)
            ev.ev(
                "rejected",
                "intake",
                delivery=o.name,
                dlid=o.dlid,
                reason=o.reason,
                file=o.file,
                moved_to=o.path,
            )
        elif o.status == "skipped" and o.reason == deliveries.SAME_AGAIN:
            # an accepted delivery's files rewritten with the very content accepted: said once
            ev.ev("unchanged", "intake", delivery=o.name, dlid=o.dlid, why=o.reason)

    # ------------------------------------------------------------------ the end

    def drain(self) -> None:
        """The verifications running end and are taken in: claims are given back or
        settled, never left held."""
        self.verifier.shutdown(wait=True)
        self.collect_verified(wait=True)

    def stop(self) -> None:
        """Pending deliveries are forgotten (the next daemon's scan finds them), the
        observer stops."""
        self.pending.clear()
        self.stop_observer()

    def finish(self) -> None:
        """``--once``'s end: the verifications that are running end, the observer stops."""
        self.verifier.shutdown(wait=True)
        self.stop_observer()

    def close(self) -> None:
        self.verifier.shutdown(wait=True)
        for db in self._thread_dbs:
            db.close()
