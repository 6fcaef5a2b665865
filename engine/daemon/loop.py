"""The watch daemon's loop: deliveries in, streams run, state in the database, one log line
per event.

The daemon is a loop over named roles, each a unit that takes what it needs and never
imports this module (as psana2's MPI roles): ``Intake`` (engine/daemon/intake.py: the
observer, the verify pool, pending deliveries), ``Streams`` (streams.py: claims, runners,
job exits, presence), ``Exporter`` (exporter.py: heartbeat, metrics textfile, HTTP), all
sharing one ``Events`` (events.py: every line, and the run's result) and one
``Containment`` (containment.py: one unit's failure stays that unit's, backed off and
logged once). This module owns the order of things: the reconciliation scan, the ticks
(metrics, retention), the state database's outages, shutdown.

- SIGTERM/SIGINT: stop launching, terminate running jobs (their instances become
  TERMINATED and are re-executed by the next owner), release the streams, exit 0.
- ``--once``: process what is there, run those streams to their end, exit.
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
import math
import os
import signal
import threading
import time
from typing import Any

from engine.core.alerts import alerter_for
from engine.core.errors import StateUnavailable
from engine.core.heartbeat import sweep_dead_heartbeats
from engine.core.workspace import Workspace
from engine.daemon.containment import Containment, contained_as
from engine.daemon.events import Emit, Events, WatchResult
from engine.daemon.exporter import Exporter
from engine.daemon.intake import Intake
from engine.daemon.streams import Streams
from engine.pipeline.alarms import alarm_scan
from engine.pipeline.launchers import make_launcher
from engine.pipeline.task import Task, load_task
from engine.store import StateDB
from engine.store.outage import Backoff, Outage, Patience


class Daemon:
    def __init__(
        self,
        ws: Workspace,
        *,
        polling: bool = False,
        once: bool = False,
        emit: Emit | None = None,
        task: Task | None = None,
        max_jobs: int | None = None,
    ) -> None:
        self.ws = ws
        self.once = once
        self.task = task or load_task(ws)
        self.alerts = alerter_for(ws)  # [alerts] command (engine/core/alerts.py)
        self.events = Events(ws.daemon_log, emit, self.alerts)
        # the state server as this daemon sees it (all its connections), and what stops
        # their waits (shutdown)
        self.outage = Outage(lambda ev: self.events.emit(ev, "daemon"))
        self.stopping = threading.Event()
        self.metrics = Exporter(ws, beat=not once, outage=self.outage)  # heartbeat + textfile
        try:
            self.db, presence = self._open_state()
        except BaseException:
            self.metrics.close()
            self.events.close()
            raise
        w = ws.settings.watch
        self.contain = Containment(
            self.events, self.outage, w.error_backoff_s, w.error_backoff_max_s
        )
        self.intake = Intake(
            ws,
            self.db,
            self.events,
            self.contain,
            self.outage,
            self.stopping,
            once=once,
            force_polling=polling,
        )
        self.streams = Streams(
            ws,
            self.db,
            self.task,
            make_launcher(ws.settings, max_jobs),
            self.events,
            self.contain,
            presence,
            once=once,
        )
        self.scan_interval = w.scan_interval_s
        self.stop = False
        self._prune_next = 0.0  # the first prune: at the first loop
        self._state_retry = Backoff()  # probes of an unreachable state server

    # ------------------------------------------------------------------ state database

    def _open_state(self) -> tuple[StateDB, Any]:
        """The main connection and, before anything is owned, the presence (on PostgreSQL
        the server sees this daemon die). A server that cannot be reached is waited for,
        with back-off and one ``state_unreachable`` line, beating meanwhile (``--once``:
        for ``[state] wait_s``, then StateUnavailable, exit 75). Afterwards the main
        connection never waits: a lost server is the main loop's outage mode."""
        wait_s = self.ws.settings.state.wait_s if self.once else math.inf
        deadline = time.monotonic() + wait_s
        patience = Patience(0.0, self.stopping, self.outage)
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

    def _state_probe(self) -> bool:
        """In outage mode: one try (when the back-off allows) whether the state server
        answers again; True once it does (``state_reachable`` logged with ``down_s``)."""
        now = time.monotonic()
        if not self._state_retry.due(now):
            return False
        try:
            self.db.q("SELECT 1")
        except StateUnavailable as err:
            self.contain.state_lost(err)
            self._state_retry.failed(time.monotonic())
            return False
        self._state_retry.reset()
        self.outage.up()
        return True

    def _outage_round(self) -> bool:
        """One round while the state server cannot be reached: job exits are collected
        (recorded once it is back), verifications that ended are taken in, the heartbeat
        says the state is unreachable, and the server is probed with back-off. Work that
        needs the database waits. True when the server answers again."""
        self.streams.poll_jobs()
        self.intake.collect_verified()
        self.tick_metrics()
        if self._state_probe():
            # what the outage kept: job exits first (their streams' runners stay ours)
            self.streams.step()
            self.reconcile()
            return True
        since = self.outage.since
        if self.once and since is not None and time.time() - since > self.ws.settings.state.wait_s:
            raise StateUnavailable(
                f"state database unreachable for more than "
                f"[state] wait_s = {self.ws.settings.state.wait_s:g} s: "
                f"{self.outage.error}",
                self.db.where,
                since=since,
            )
        time.sleep(0.05)
        return False

    # ------------------------------------------------------------------ reconciliation

    @contained_as("delivery scan")
    def reconcile(self) -> None:
        with self.contain.contained("presence"):
            self.streams.check_presence()
        with self.contain.contained("lock report"):  # a lock problem never stops intake
            self.streams.report_locks()
        if self.alerts.enabled:
            with self.contain.contained("alarm scan"):  # stuck streams, halts, disk pause
                alarm_scan(self.ws, self.db, self.alerts)
        self.intake.scan()

    # ------------------------------------------------------------------ ticks

    @contained_as("metrics")
    def tick_metrics(self, final: bool = False) -> None:
        """Heartbeat and metrics textfile every ``[metrics] interval_s`` (cheap when not due);
        ``final``: ``--once``'s one write at its end (engine/daemon/exporter.py)."""
        if final:
            self.metrics.final()
        elif not self.once:  # --once writes the textfile once, at its end
            self.metrics.tick()

    def tick_prune(self) -> None:
        """Apply the retention policy every ``[retention] interval_s`` (0: never; not under
        ``--once``), logged as one ``prune`` event with counts and bytes per area when it
        did something (engine/pipeline/retention.py); a failure is one ``error`` line (and
        one ``recovered`` once a prune succeeds again), never the daemon's end."""
        interval = self.ws.settings.retention.interval_s
        if self.once or interval <= 0 or time.monotonic() < self._prune_next:
            return  # not due: says nothing about whether pruning works
        self._prune_next = time.monotonic() + interval
        with self.contain.contained("prune"):
            from engine.pipeline.retention import apply, plan

            res = apply(self.ws, plan(self.ws, self.db), self.db)
            if res.removed or res.gone or res.kept or res.failed:  # an idle prune: silent
                self.events.ev(
                    "prune",
                    **res.summary(),
                    errors=[f"{c.path}: {err}" for c, err in res.failed][:20],
                )

    # ------------------------------------------------------------------ main loop

    def run(self) -> WatchResult:
        ev, intake, streams = self.events, self.intake, self.streams
        ev.debug(
            "config",
            workspace=str(self.ws.root),
            task=self.task.name,
            launcher=self.ws.settings.pipeline.launcher,
            max_streams=streams.max_streams,
            scan_interval_s=self.scan_interval,
            quiet_s=intake.quiet_s,
        )
        if not self.once:
            intake.start_observer()
        else:
            ev.ev("once", pid=os.getpid())
        intake.sweep_extracts()  # before any extraction of ours starts
        with self.contain.contained("metrics"):
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
                    if intake.pending and now - last_pending >= min(1.0, intake.quiet_s):
                        intake.recheck_pending()
                        last_pending = now
                    before = ev.count
                    intake.collect_verified()
                    if now - last_pickup >= 0.5 or not streams.runners:
                        streams.pick_up()
                        last_pickup = now
                    streams.step()
                    self.tick_metrics()
                    self.tick_prune()
                    busy = bool(intake.inflight) or streams.busy
                except StateUnavailable as err:  # (units contain their own; to be sure)
                    self.contain.state_lost(err)
                    continue
                except Exception as err:  # last resort: the loop itself goes on
                    self.contain.fault("daemon loop", err)
                    time.sleep(min(1.0, self.contain.backoff_s))
                    continue
                if "daemon loop" in self.contain.faults:
                    self.contain.recovered("daemon loop")
                if not self.outage.reachable:
                    continue
                if self.once:
                    if ev.count == before and not busy:
                        idle_rounds += 1
                        # pending deliveries get a quiet period to settle, then stay for later
                        settled = not intake.pending or now - started > 2 * intake.quiet_s + 1
                        if idle_rounds >= 3 and settled:
                            break
                        if idle_rounds > 3:
                            time.sleep(0.05)
                    else:
                        idle_rounds = 0
                    time.sleep(0.005 if busy else 0.0)
                    continue
                intake.drain_hints(0.01 if busy or ev.count != before else 0.1)
        except BaseException:
            self.shutdown()
            raise
        if self.stop:
            self.shutdown()
        else:
            streams.release_held()  # --once: held streams (halt flags) stay resumable
            intake.finish()
            self.tick_metrics(final=True)
        ev.result.errors = self.contain.open_errors()
        return ev.result

    def shutdown(self) -> None:
        self.stopping.set()  # a verify thread waiting for the state server gives up
        self.intake.drain()
        self.streams.shutdown()
        self.intake.stop()
        self.events.result.terminated = True
        self.events.ev("stopped", pid=os.getpid())

    def close(self) -> None:
        self.events.close()
        self.metrics.close()
        self.intake.close()
        self.db.close()


def run_daemon(
    ws: Workspace,
    *,
    polling: bool = False,
    once: bool = False,
    emit: Emit | None = None,
    metrics_port: int | None = None,
    metrics_addr: str = "127.0.0.1",
) -> WatchResult:
    d = Daemon(ws, polling=polling, once=once, emit=emit)
    if metrics_port is not None:
        try:
            port = d.metrics.serve(metrics_port, metrics_addr)
        except BaseException:
            d.close()
            raise
        d.events.ev("metrics_http", addr=metrics_addr, port=port, path="/metrics")

    def on_signal(signum: int, frame: object) -> None:
        d.stop = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return d.run()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        d.close()
