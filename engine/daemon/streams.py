"""The daemon's streams: claiming streams, stepping their runners, routing job exits, and
giving up what another owner took.

Why a module of its own: this is the daemon's half that runs the pipeline (Pipeline-II's
job-control loop), apart from the half that takes deliveries in. Every claim is a
state-database transaction (``StateDB.claim_stream``), so any number of daemons, ``skydeck-
engine run`` and the console share a workspace without processing a downlink twice; a
claim whose owner is provably dead is taken over (``StreamRunner.resume``). With a
PostgreSQL state the daemon holds its presence on the server (engine/store/presence.py): a
daemon on another host that dies is seen dead and its streams are taken over here (a
``takeover`` line); a presence this daemon lost is taken again, and a stream another owner
took meanwhile is given up. Each runner is stepped in its own containment.
"""

from __future__ import annotations

import os
import time
from typing import Any

from engine.core.workspace import Workspace
from engine.daemon.containment import Containment
from engine.daemon.events import Events
from engine.pipeline.halts import halt_flag, is_set_globally
from engine.pipeline.launchers import JobResult, Launcher
from engine.pipeline.runner import StreamRunner
from engine.pipeline.task import Task
from engine.store import StateDB


class Streams:
    """The streams this daemon runs, one ``StreamRunner`` each, over one launcher."""

    def __init__(
        self,
        ws: Workspace,
        db: StateDB,
        task: Task,
        launcher: Launcher,
        events: Events,
        contain: Containment,
        presence: Any,
        *,
        once: bool,
    ) -> None:
        self.ws, self.db, self.task, self.launcher = ws, db, task, launcher
        self.events, self.contain, self.presence, self.once = events, contain, presence, once
        self.max_streams = ws.settings.pipeline.max_streams
        self.runners: dict[int, StreamRunner] = {}
        self.restep_s = 0.5
        self._stepped: dict[int, float] = {}
        self._exits: list[JobResult] = []  # job exits not recorded yet (a write failed)
        self._stale_seen: set[str] = set()

    @property
    def busy(self) -> bool:
        """Jobs are running (``--once`` waits for them)."""
        return bool(self.launcher.active())

    # ------------------------------------------------------------------ claims

    def pick_up(self) -> None:
        """Claim streams for registered downlinks that need one (new, resumable, rolled back)."""
        if len(self.runners) >= self.max_streams:
            return
        if is_set_globally(self.ws, "halted"):
            return
        dlids: list[str] = []
        with self.contain.contained("stream pick-up"):
            dlids = self.db.streams_to_pick_up(self.task.name)
        mine = {r.dlid for r in self.runners.values()}
        for dlid in dlids:
            if len(self.runners) >= self.max_streams:
                break
            key = f"stream:{dlid}"
            if dlid in mine or self.contain.backing_off(key) or halt_flag(self.ws, dlid, "halted"):
                continue
            with self.contain.contained(key, dlid=dlid):
                st, _why = self.db.claim_stream(dlid, self.task.name)
                for detail in self.db.drain_takeovers():  # a dead owner on another host
                    self.events.ev("takeover", **detail)
                if st is None:
                    continue
                runner = StreamRunner(
                    self.ws, self.db, self.task, st, self.launcher, self.events.emit
                )
                runner.resume()
                self.runners[st.id] = runner
                self.events.ev("stream_claimed", dlid=dlid, stream=st.id)

    def check_presence(self) -> None:
        """On PostgreSQL: the connection holding this daemon's presence still stands. If it
        was lost (a server restart, a network cut) it is taken again, and said; meanwhile
        another host may have judged this daemon dead and taken over streams it ran: those
        are given up here (their jobs killed, nothing written: they are the new owner's)."""
        if self.presence is None or self.presence.check():
            return
        self.events.ev(
            "presence_lost",
            pid=os.getpid(),
            why="the state server connection holding this daemon's presence was lost; taken again",
        )
        me = (self.presence.owner.pid, self.presence.owner.host)
        for sid, r in list(self.runners.items()):
            st = self.db.stream(sid)
            if (st.owner_pid, st.owner_host) == me:
                continue
            for pi_id in list(r.running):
                self.launcher.cancel(pi_id, grace_s=0.0)
            del self.runners[sid]
            self._stepped.pop(sid, None)
            self.events.ev(
                "stream_lost",
                dlid=r.dlid,
                stream=sid,
                owner=f"{st.owner_host}:{st.owner_pid}" if st.owner_pid else None,
                why="taken over by another owner while this daemon's presence was "
                "lost; its jobs here were killed",
            )

    def report_locks(self) -> None:
        """Stale locks are reported once (reclaimed when a process needs them), and so is
        anything at a lock path that blocks its lock for good until an operator removes it
        (a directory, a FIFO, a link: no owner to prove dead)."""
        from engine.pipeline.locks import list_locks, sweep_temps

        for p in sweep_temps(self.ws.lock):
            self.events.ev("swept", path=str(p), why="lock temporary left by a killed process")
        infos = list_locks(self.ws.lock)
        self._stale_seen &= {i.name for i in infos}  # one that comes back is reported again
        for info in infos:
            if (info.stale or info.blocks) and info.name not in self._stale_seen:
                self._stale_seen.add(info.name)
                self.events.ev(
                    "stale_lock" if info.stale else "blocking_lock",
                    "pipeline",
                    lock=info.name,
                    kind=info.kind,
                    owner=info.owner,
                    why=info.reason,
                )

    # ------------------------------------------------------------------ stepping

    def poll_jobs(self) -> None:
        """Job exits since the last poll, queued for their runners."""
        with self.contain.contained("job poll"):
            self._exits.extend(self.launcher.poll())

    def step(self) -> None:
        """Route job exits, then step the runners that have news (or whose timer is due).

        A runner with only running jobs has nothing to decide until one exits, so it is
        stepped on an exit, when new, or every ``restep_s`` (halt flags, locks, disk space
        may have changed); this keeps an idle daemon from polling the database in a loop.
        Each runner is stepped in its own containment: an exception (a full disk failing a
        state write) backs that stream off and leaves its job exits queued for a retry.
        """
        self.poll_jobs()
        news = self.record_exits()
        now = time.monotonic()
        for sid, r in list(self.runners.items()):
            key = f"stream:{r.dlid}"
            due = now - self._stepped.get(sid, 0.0) >= self.restep_s
            if not (self.once or due or sid in news) or self.contain.backing_off(key):
                continue
            self._stepped[sid] = now
            final = None
            with self.contain.contained(key, dlid=r.dlid, stream=sid):
                final = r.step()
            if final is not None:
                del self.runners[sid]
                self._stepped.pop(sid, None)

    def record_exits(self, backing_off_too: bool = False) -> set[int]:
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
            if backing_off_too or not self.contain.backing_off(key):
                with self.contain.contained(key, dlid=r.dlid, stream=r.stream.id):
                    r.on_exit(res)
                news.add(r.stream.id)
            if res.pi_id in r.running:
                unrecorded.append(res)
        self._exits = unrecorded
        return news

    # ------------------------------------------------------------------ the end

    def shutdown(self) -> None:
        """Stop: jobs that ended are recorded once more (a job that succeeded is not left
        RUNNING and run again by the next owner), running jobs are terminated (TERMINATED,
        re-executed by the next owner without charging a retry), streams released."""
        self.record_exits(backing_off_too=True)
        ids = set(self.launcher.cancel_all())
        ids |= {res.pi_id for res in self._exits}  # ended, still unrecorded: resumable
        for r in self.runners.values():
            with self.contain.contained(f"stream:{r.dlid} release", dlid=r.dlid):
                r.terminate([i for i in r.running if i in ids])
                self.db.release_stream(
                    r.stream.id, "TERMINATED", "daemon stopped; resumes on restart"
                )
        self.runners.clear()

    def release_held(self) -> None:
        """``--once``'s end: streams still held (halt flags) stay resumable."""
        for r in self.runners.values():
            with self.contain.contained(f"stream:{r.dlid} release", dlid=r.dlid):
                self.db.release_stream(r.stream.id, "WAITING", r.note or "held")
        self.runners.clear()
