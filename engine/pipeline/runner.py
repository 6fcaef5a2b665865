"""The stream runner: drives one downlink's stream through its task's DAG.

A ``StreamRunner`` is a non-blocking state machine: ``step()`` creates the process
instances whose dependencies are done, starts what can start (honouring conditions, halt
flags, the disk reserve, locks and the launcher's capacity) and reports when the stream is
finished; ``on_exit()`` takes a job's exit. The daemon drives many runners with one
launcher; ``run_stream`` drives one in the foreground (``skydeck-engine run``).

Everything a runner decides is written to the state database first, so a runner that dies
(SIGKILL, power) can be replaced: ``resume()`` (``resume.py``) adopts the dead owner's batch
jobs, fails the instances whose supervisor died (killing the orphaned job if it provably
still runs), and makes new executions of them without charging the automatic-retry budget,
because the job was not at fault. What one instance sees (values, command, paths, job
environment) is ``instance.py``; the steps that run inside the engine are ``scriptlets.py``.

Instance identity is (process, key): key is the substream (chunk ``%05d``, run start in
decimal, or '' for a process that runs once). Only the latest execution counts; rollback
retires latest executions and the runner makes new ones (execution number + 1).
"""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from engine.core.errors import BadInput, Busy
from engine.core.owner import Owner
from engine.core.workspace import Workspace
from engine.pipeline import joblog, locks, resume, scriptlets
from engine.pipeline.halts import halt_flag
from engine.pipeline.instance import InstanceView, Running
from engine.pipeline.launchers import JobResult, JobSpec, Launcher, Unavailable
from engine.pipeline.task import ProcessDef, Task
from engine.pipeline.usage import launch_paused
from engine.store import DONE_PI, ProcessInstance, StateDB, Stream

Emit = Callable[[dict[str, Any]], None]  # one event; the CLI logs it (engine/core/log.py)
_FINAL_BAD = ("FAILED", "CANCELED", "TERMINATED")


class StreamRunner:
    def __init__(
        self,
        ws: Workspace,
        db: StateDB,
        task: Task,
        stream: Stream,
        launcher: Launcher,
        emit: Emit | None = None,
    ) -> None:
        self.ws, self.db, self.task, self.launcher = ws, db, task, launcher
        self.stream = stream
        dl = db.downlink(stream.dlid)
        if dl is None:
            raise KeyError(stream.dlid)
        self.dl = dl
        self.view = InstanceView(ws, dl, task)
        self.owner = Owner.me()
        self.running: dict[int, Running] = {}
        self.emit = emit or (lambda ev: None)
        self.status: str | None = None
        self.note: str | None = None

    # ------------------------------------------------------------------ helpers

    @property
    def dlid(self) -> str:
        return self.stream.dlid

    def event(self, event: str, pi: ProcessInstance | None = None, **kw: Any) -> None:
        """One event of this stream (and of ``pi``), to the runner's ``emit``."""
        ev: dict[str, Any] = {
            "t": round(time.time(), 3),
            "event": event,
            "dlid": self.dlid,
            "stream": self.stream.id,
        }
        if pi is not None:
            ev |= {"process": pi.process, "key": pi.key, "pi": pi.id, "execution": pi.execution}
        ev |= kw
        self.emit(ev)

    def keys(self, pdef: ProcessDef, vars_: dict[str, Any]) -> list[str] | None:
        if pdef.foreach is None:
            return [""]
        val = vars_.get(pdef.foreach)
        if val is None:
            return None
        return [str(x) for x in val]

    def resume(self) -> None:
        """Take over from a dead owner (``resume.py``): adopt its batch jobs, fail its other
        in-flight instances and retry them, own the locks."""
        resume.resume(self)

    # ------------------------------------------------------------------ the state machine

    def step(self) -> str | None:
        """Advance the stream; returns its final status once finished, else None."""
        if self.status is not None:
            return self.status
        st = self.db.stream(self.stream.id)
        self.stream = st
        vars_ = st.vars
        self._follow_queue()
        latest = {(pi.process, pi.key): pi for pi in self.db.instances(st.id)}
        state: dict[str, str] = {}
        paused: tuple[bool, str] | None = None
        for pdef in self.task.processes:
            deps = [state[a] for a in pdef.after]
            if "failed" in deps:
                state[pdef.name] = "failed"
                continue
            if any(d != "done" for d in deps):
                state[pdef.name] = "pending"
                continue
            keys = self.keys(pdef, vars_)
            if keys is None:  # set by a scriptlet earlier in this very step?
                vars_ = self.db.stream(st.id).vars
                keys = self.keys(pdef, vars_)
            if keys is None:
                pi = latest.get((pdef.name, ""))
                if pi is None:
                    pi = self.db.create_instance(st.id, pdef.name, "", 0, status="FAILED")
                    self.db.update_instance(
                        pi.id,
                        note=f"stream variable {pdef.foreach!r} was not set by an upstream process",
                        ended=time.time(),
                    )
                state[pdef.name] = "failed"
                continue
            statuses = []
            for key in keys:
                pi = latest.get((pdef.name, key))
                if pi is None:
                    pi = self.db.create_instance(st.id, pdef.name, key, pdef.retries)
                    latest[(pdef.name, key)] = pi
                if self._startable(pdef, pi):
                    if paused is None:
                        paused = launch_paused(self.ws)
                    pi.status = self._try_start(pdef, pi, paused)
                statuses.append(pi.status)
            if all(s in DONE_PI for s in statuses):
                state[pdef.name] = "done"
            elif any(s not in DONE_PI and s not in _FINAL_BAD for s in statuses):
                state[pdef.name] = "pending"  # something still runs or waits to start
            else:
                state[pdef.name] = "failed"  # every retry used up
        if self.running:
            return None
        if all(s == "done" for s in state.values()):
            return self._finish("SUCCESS", None)
        if "failed" in state.values() and "pending" not in state.values():
            failed = [n for n, s in state.items() if s == "failed"]
            return self._finish("FAILED", _failure_note(failed, latest.values()))
        return None

    def _follow_queue(self) -> None:
        """A batch job is QUEUED while its queue holds it, saying why in its instance's note
        (squeue's reason: Priority, Resources, QOSMaxJobsPerUserLimit...), and RUNNING from
        the time the batch system started it (``started``: queue time and run time apart)."""
        for pi in (r.pi for r in self.running.values() if r.pi.status == "QUEUED"):
            began = self.launcher.started(pi.id)
            why = None if began is not None else self.launcher.pending_reason(pi.id)
            note = f"queued in {pi.launcher}: {why}" if why else None
            if began is not None:
                pi.status, pi.started = "RUNNING", began
                self.event("started", pi, job_id=pi.job_id, launcher=pi.launcher)
            elif note == pi.note:
                continue
            elif why:
                self.event("queued", pi, reason=why)
            self.db.update_instance(pi.id, status=pi.status, started=pi.started, note=note)
            pi.note = note

    def _startable(self, pdef: ProcessDef, pi: ProcessInstance) -> bool:
        """WAITING/READY and not started by us; or a scriptlet of ours left RUNNING: scriptlets
        run inside step(), so that is a step whose final write failed (disk full): run it
        again (scriptlets are idempotent)."""
        if pi.id in self.running:
            return False
        if pi.status in ("WAITING", "READY"):
            return True
        return (
            pdef.scriptlet is not None
            and pi.status == "RUNNING"
            and (pi.pid, pi.host) == (self.owner.pid, self.owner.host)
        )

    def _finish(self, status: str, note: str | None) -> str:
        if status == "FAILED":  # nothing runs any more: its stream locks are not left behind
            for name in _release_stream_locks(self.view, self.task, self.owner):
                self.event("lock_released", lock=name, why="stream failed")
        self.db.release_stream(self.stream.id, status, note)
        self.status, self.note = status, note
        self.event("stream_" + status.lower(), note=note)
        return status

    def _hold(self, pi: ProcessInstance, status: str, note: str) -> str:
        if pi.note != note or pi.status != status:
            self.db.update_instance(pi.id, status=status, note=note)
            pi.note = note
            self.event("held", pi, why=note)
        return status

    def _try_start(self, pdef: ProcessDef, pi: ProcessInstance, paused: tuple[bool, str]) -> str:
        if pdef.when == "gensteps" and not self.dl.gensteps:
            self.db.update_instance(
                pi.id, status="SKIPPED", ended=time.time(), note="delivery carries no gensteps"
            )
            self.event("skipped", pi, why="no gensteps")
            return "SKIPPED"
        if pdef.halt:
            flag = halt_flag(self.ws, self.dlid, pdef.halt)
            if flag is not None:
                return self._hold(pi, "WAITING", f"halted by {flag}")
        if pdef.scriptlet:
            return self._run_scriptlet(pdef, pi)
        if paused[0]:
            return self._hold(pi, "READY", f"launching paused: {paused[1]}")
        if self.launcher.capacity() <= 0:
            return pi.status
        view = self.view
        values = view.values(pdef, pi.key)
        try:
            log, summary = view.log_paths(pdef, pi)
            argv, ntasks = view.command(pdef, values)
            lock_path = view.lock_path(pdef.lock, values)
            stream_lock = view.lock_path(pdef.stream_lock, values)
            rm_lock = view.lock_path(pdef.removes_stream_lock, values)
            env = view.env(pdef, pi, values, summary)
        except ValueError as err:
            self.db.update_instance(pi.id, status="FAILED", ended=time.time(), note=str(err))
            return "FAILED"
        log_event: list[str] = []
        if stream_lock is not None:
            try:
                locks.acquire(stream_lock, self.dlid, pdef.name, self.owner, log=log_event)
            except Busy as err:
                return self._hold(pi, "READY", f"waiting for stream lock: {err}")
        if rm_lock is not None and locks.remove_own_or_stale(rm_lock, self.owner):
            self.event("lock_removed", lock=rm_lock.name)
        if lock_path is not None:
            try:
                locks.acquire(lock_path, self.dlid, pdef.name, self.owner, log=log_event)
            except Busy as err:
                return self._hold(pi, "READY", f"waiting for lock {lock_path.name}: {err.message}")
        for line in log_event:
            self.event("lock_reclaimed", pi, detail=line)
        summary.parent.mkdir(parents=True, exist_ok=True)
        summary.unlink(missing_ok=True)
        try:
            h = self.launcher.submit(
                JobSpec(
                    pi.id,
                    argv,
                    log,
                    env,
                    self.ws.root,
                    name=view.job_name(pdef, pi),
                    launcher=pdef.launcher,
                    batch=pdef.batch,
                    ntasks=ntasks,
                    gpus=pdef.gpus,
                )
            )
        except OSError as err:
            if lock_path is not None:
                locks.release(lock_path, self.owner)
            if isinstance(err, Unavailable):  # the batch system is away: wait, not FAILED
                return self._hold(pi, "READY", f"waiting: {err.strerror}")
            self.db.update_instance(
                pi.id,
                status="FAILED",
                ended=time.time(),
                exit_code=127,
                note=f"cannot start {argv[0]}: {err.strerror}",
                log_path=str(log),
            )
            self.event("failed", pi, why=f"cannot start: {err.strerror}")
            return self._after_failure(pdef, pi)
        now = time.time()
        # a batch job waits in its queue (QUEUED) until the launcher says it began
        began = self.launcher.started(pi.id)
        status = "RUNNING" if began is not None else "QUEUED"
        pi.status, pi.submitted, pi.started, pi.log_path = status, now, began, str(log)
        # ours before it is written: should the write fail (disk full), the job is not
        # started a second time and its exit is still routed here
        self.running[pi.id] = Running(pi, pdef, lock_path, summary, values)
        if h.detached:  # first: a successor adopts the job by this id
            self.db.set_job(pi.id, h.launcher, h.job_id)
            pi.launcher, pi.job_id = h.launcher, h.job_id
        self.db.update_instance(
            pi.id,
            status=status,
            host=h.host,
            pid=h.pid,
            pid_start=h.start,
            submitted=now,
            started=began,
            log_path=str(log),
            note=None,
        )
        pi.note = None
        if h.detached:
            self.event("submitted", pi, job_id=h.job_id, launcher=h.launcher, log=str(log))
        else:
            self.event("started", pi, pid=h.pid, log=str(log))
        return status

    def _after_failure(self, pdef: ProcessDef, pi: ProcessInstance) -> str:
        latest = self.db.latest_instance(self.stream.id, pi.process, pi.key)
        if latest is not None and latest.id != pi.id:  # already retried (a repeated on_exit)
            return latest.status
        if pi.auto_retry < pi.max_retries:
            new = self.db.create_instance(
                self.stream.id, pi.process, pi.key, pi.max_retries, pi.auto_retry + 1
            )
            self.event("retry", new, previous=pi.id)
            return new.status
        return "FAILED"

    # ------------------------------------------------------------------ scriptlets

    def _run_scriptlet(self, pdef: ProcessDef, pi: ProcessInstance) -> str:
        self.db.update_instance(
            pi.id,
            status="RUNNING",
            started=time.time(),
            host=self.owner.host,
            pid=self.owner.pid,
            pid_start=self.owner.start,
        )
        call = scriptlets.Call(
            self.dlid, Path(self.dl.level0), self.view.outdir, pdef.name, pi.id, self.stream.id
        )
        try:  # parse_task accepts only the registered names
            scriptlets.SCRIPTLETS[str(pdef.scriptlet)](call, self.db)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                # the disk is full, nothing is wrong with the downlink: held, run again on a
                # later step (scriptlets are idempotent). With the state on the same disk the
                # claim could not even be written; with PostgreSQL it was, and only this fails
                note = f"waiting for disk space: {err.strerror}"
                self.db.update_instance(pi.id, status="READY", note=note)
                if pi.note != note:
                    pi.note = note
                    self.event("held", pi, why=note)
                return "READY"
            self.db.update_instance(pi.id, status="FAILED", ended=time.time(), note=str(err))
            self.event("failed", pi, why=str(err))
            return "FAILED"
        except ValueError as err:
            self.db.update_instance(pi.id, status="FAILED", ended=time.time(), note=str(err))
            self.event("failed", pi, why=str(err))
            return "FAILED"
        self.db.update_instance(pi.id, status="SUCCESS", ended=time.time(), exit_code=0)
        self.event("success", pi)
        return "SUCCESS"

    # ------------------------------------------------------------------ job exits

    def on_exit(self, res: JobResult) -> None:
        """Record a job's exit. Safe to call again with the same result when a write failed
        (disk full): the job stays in ``running`` until everything about it is recorded."""
        r = self.running.get(res.pi_id)
        if r is None:
            return
        pi, pdef = r.pi, r.pdef
        if r.lock is not None:
            locks.release(r.lock, self.owner)
        note = None
        status = "SUCCESS" if res.exit_code == 0 else "FAILED"
        if status == "SUCCESS":
            try:
                joblog.collect(self.db, self.stream.id, self.view, pi, r)
            except (OSError, ValueError) as err:
                status, note = "FAILED", f"bad job report: {err}"
        else:
            note = (
                f"killed by signal {-res.exit_code}"
                if res.exit_code < 0
                else f"exit code {res.exit_code}"
            )
            log = Path(pi.log_path) if pi.log_path else self.view.log_paths(pdef, pi)[0]
            why = joblog.error_line(log)
            if why:  # the job's own reason travels with its status
                note = f"{note}: {why}"
        # a job that ended between two looks at its queue began when its launcher says
        began = pi.started if pi.started is not None else res.started
        self.db.update_instance(
            pi.id, status=status, exit_code=res.exit_code, ended=res.ended, note=note, started=began
        )
        pi.started, pi.ended = began, res.ended
        self.event(
            status.lower(),
            pi,
            exit_code=res.exit_code,
            wall_s=round(res.ended - (began or res.ended), 3),
            note=note,
        )
        if status == "FAILED" and res.lost:
            pi.status = "FAILED"
            # the batch system lost it (node failure, preemption): like a supervisor crash,
            # a new execution with the same retry count
            self.db.update_instance(
                pi.id,
                note=f"{res.lost}: the batch system lost the job; run again without using a retry",
            )
            latest = self.db.latest_instance(self.stream.id, pi.process, pi.key)
            if latest is None or latest.id == pi.id:  # not already made (a repeated on_exit)
                new = self.db.create_instance(
                    self.stream.id, pi.process, pi.key, pi.max_retries, pi.auto_retry
                )
                self.event("requeued", new, previous=pi.id, why=res.lost)
        elif status == "FAILED":
            pi.status = "FAILED"
            self._after_failure(pdef, pi)
        del self.running[res.pi_id]
        with contextlib.suppress(OSError):
            r.summary.unlink(missing_ok=True)

    # ------------------------------------------------------------------ shutdown

    def terminate(self, ids: list[int]) -> None:
        """The launcher stopped these jobs (SIGTERM of the daemon): mark them TERMINATED."""
        for pi_id in ids:
            r = self.running.pop(pi_id, None)
            if r is None:
                continue
            if r.lock is not None:
                locks.release(r.lock, self.owner)
            self.db.update_instance(
                pi_id, status="TERMINATED", ended=time.time(), note="daemon stopped"
            )
            # resumable: the next owner makes a new execution (not charged as a retry)
            self.db.create_instance(
                self.stream.id, r.pi.process, r.pi.key, r.pi.max_retries, r.pi.auto_retry
            )
            self.event("terminated", r.pi)


def _release_stream_locks(view: InstanceView, task: Task, owner: Owner) -> list[str]:
    """Remove the stream locks ``owner`` holds (a FAILED stream's: shown STALE in the lock
    list once this runner is gone, they would block nothing but confuse an operator, and
    a rollback takes them again); returns their names."""
    out = []
    for pdef in task.processes:
        try:
            p = view.lock_path(pdef.stream_lock, view.values(pdef, ""))
            if p is not None and locks.release(p, owner):
                out.append(p.name)
        except (OSError, ValueError):  # left for `locks` to show: never stops the release
            continue
    return out


def _failure_note(failed: list[str], latest: Iterable[ProcessInstance]) -> str:
    """``failed: <processes>``, and the reason of the first instance that failed (its job's
    error line): what ``downlinks`` and the console show of the stream."""
    note = f"failed: {', '.join(failed)}"
    why = next(
        (pi for pi in latest if pi.process in failed and pi.status == "FAILED" and pi.note),
        None,
    )
    return f"{note} ({why.label}: {why.note})" if why is not None else note


def run_stream(
    ws: Workspace,
    db: StateDB,
    task: Task,
    dlid: str,
    launcher: Launcher,
    emit: Emit | None = None,
    poll_s: float = 0.01,
    should_stop: Callable[[], bool] | None = None,
) -> StreamRunner:
    """Claim and drive one stream to its end in this process (``skydeck-engine run``)."""
    st, why = db.claim_stream(dlid, task.name)
    if st is None:
        prev = db.latest_stream(dlid, task.name)
        if prev is not None and prev.status == "FAILED":
            raise BadInput(
                f"stream {dlid} FAILED ({prev.note}); `skydeck-engine rollback {dlid}` "
                "re-runs what failed",
                db.where,
            )
        if prev is not None and prev.status in ("SUCCESS", "CANCELED"):
            runner = StreamRunner(ws, db, task, prev, launcher, emit)
            runner.status, runner.note = prev.status, "already finished"
            return runner
        raise Busy(why)
    runner = StreamRunner(ws, db, task, st, launcher, emit)
    runner.resume()
    while True:
        for res in launcher.poll():
            runner.on_exit(res)
        if runner.step() is not None:
            return runner
        if should_stop is not None and should_stop():
            runner.terminate(launcher.cancel_all())
            db.release_stream(runner.stream.id, "TERMINATED", "stopped")
            runner.status = "TERMINATED"
            return runner
        time.sleep(poll_s)
