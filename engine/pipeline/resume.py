"""Taking over a stream whose owner died: adopt its batch jobs, fail and retry its other
in-flight instances, own its locks.

Why a module of its own: this is the crash-recovery half of the stream runner (Pipeline-II's
"supervisor died" path), the part that reads what a dead runner left (its instances, its
jobs in the batch queue, its lock files) rather than driving a stream forward. The runner
calls ``resume`` once, right after it claimed the stream; everything here acts through the
``Supervisor`` face below, so it never imports the runner.

A batch job outlives its runner: an instance with a recorded job id whose job is still
queued or running, or ended leaving its status, is adopted (watched and collected as if this
runner had submitted it), never submitted a second time. A runner killed between the
launcher's submit and the write of the job id left an instance WAITING or READY whose job
runs: it is found by the log the job writes and adopted too. Any other in-flight instance
is FAILED with the reason (its orphaned local job killed when it provably still runs) and
made again as a new execution without charging the automatic-retry budget: the job was not
at fault.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

from engine.core.owner import Owner
from engine.core.workspace import Workspace
from engine.pipeline import locks
from engine.pipeline.instance import InstanceView, Running
from engine.pipeline.launchers import Launcher, kill_orphan
from engine.pipeline.task import Task
from engine.store import ACTIVE_PI, ProcessInstance, StateDB, Stream


class Supervisor(Protocol):
    """What taking over needs of the runner that claimed the stream."""

    ws: Workspace
    db: StateDB
    task: Task
    launcher: Launcher
    view: InstanceView
    owner: Owner
    stream: Stream
    running: dict[int, Running]

    @property
    def dlid(self) -> str: ...

    def event(self, event: str, pi: ProcessInstance | None = None, **kw: Any) -> None: ...


def resume(sup: Supervisor) -> None:
    """Take over from a dead owner: adopt its batch jobs, fail its other in-flight instances
    and retry them, own the locks (the module docstring)."""
    for pi in sup.db.instances(sup.stream.id):
        if pi.id in sup.running or pi.status not in ACTIVE_PI:
            continue
        if pi.job_id:  # recorded only for a job that outlives its runner (a batch job)
            if adopt(sup, pi):
                continue
            what = f"{pi.launcher} job {pi.job_id} is no longer known to the batch system"
        else:
            what = kill_orphan(pi.pid, pi.host, pi.pid_start)
        sup.db.update_instance(
            pi.id, status="FAILED", ended=time.time(), note=f"supervisor died; {what}"
        )
        sup.event("instance_failed_owner_died", pi, detail=what)
        pdef = sup.task.process(pi.process)
        # a crash of the supervisor is not the job's fault: same retry count
        sup.db.create_instance(sup.stream.id, pi.process, pi.key, pdef.retries, pi.auto_retry)
    adopt_unrecorded(sup)
    take_stream_locks(sup)


def take_stream_locks(sup: Supervisor) -> None:
    """The stream lock follows the stream claim. Besides a stale lock, a lock of this stream
    held by another live process on this host is taken over too: this runner holds the claim
    in the state db, so that process no longer runs the stream (a FAILED stream's runner
    releases its locks, but one written by an older skydeck or whose release failed stays)
    and would never release it. A lock held from another
    host is left alone unless the state server judged its owner dead (a ``takeover``): that
    may be another site's runner."""
    for pdef in sup.task.processes:
        if not pdef.stream_lock:
            continue
        try:
            p = sup.view.lock_path(pdef.stream_lock, sup.view.values(pdef, ""))
        except ValueError:  # outside the lock area: never touched
            continue
        if p is None:
            continue
        try:
            info = locks.read(p)
        except FileNotFoundError:
            continue
        if info.stale and info.host not in (None, sup.owner.host):
            # another host's owner, judged gone by the state server (PostgreSQL)
            detail: dict[str, Any] = {
                "what": "lock",
                "lock": p.name,
                "old_owner": info.owner,
                "new_owner": str(sup.owner),
                "why": info.reason,
            }
            locks.take_over(p, sup.dlid, pdef.name, sup.owner)
            sup.db.log_event("takeover", sup.dlid, **detail)
            sup.event("takeover", None, **detail)
            continue
        if info.stale:
            event, why = "lock_reclaimed", info.reason
        elif info.host == sup.owner.host and info.pid != sup.owner.pid and info.stream == sup.dlid:
            event, why = "lock_taken_over", "this runner holds the stream claim"
        else:
            continue
        locks.take_over(p, sup.dlid, pdef.name, sup.owner)
        sup.event(event, lock=p.name, previous_owner=info.owner, why=why)


def adopt(sup: Supervisor, pi: ProcessInstance) -> bool:
    """Watch the batch job of ``pi``, submitted by a dead runner; False when the batch
    system knows nothing of it any more (the caller fails and retries the instance)."""
    try:
        pdef = sup.task.process(pi.process)
    except KeyError:
        return False
    log, summary = sup.view.log_paths(pdef, pi)
    if pi.log_path:
        log = Path(pi.log_path)
    if not sup.launcher.adopt(pi.id, str(pi.job_id), log):
        return False
    values = sup.view.values(pdef, pi.key)
    lock_path = sup.view.lock_path(pdef.lock, values)
    if lock_path is not None:
        try:
            info = locks.read(lock_path)
            if info.stale or (info.stream == sup.dlid and info.process == pdef.name):
                locks.take_over(lock_path, sup.dlid, pdef.name, sup.owner)
            else:
                lock_path = None  # not the dead runner's: not ours to release
        except FileNotFoundError:
            lock_path = None
    sup.running[pi.id] = Running(pi, pdef, lock_path, summary, values)
    sup.event("adopted", pi, job_id=pi.job_id, launcher=pi.launcher)
    return True


def adopt_unrecorded(sup: Supervisor) -> None:
    """A runner killed between the submit and the write of the job id left an instance
    WAITING or READY whose job runs: find the job by the log it writes and adopt it, so that
    the instance does not get a second job."""
    waiting: dict[Path, ProcessInstance] = {}
    for pi in sup.db.instances(sup.stream.id):
        if pi.id in sup.running or pi.status not in ("WAITING", "READY"):
            continue
        try:
            pdef = sup.task.process(pi.process)
        except KeyError:
            continue
        if pdef.command:  # the launcher knows which of these it could have submitted
            waiting[sup.view.log_paths(pdef, pi)[0]] = pi
    for log, job_id in sup.launcher.find_submitted(list(waiting)).items():
        pi = waiting[log]
        sup.db.set_job(pi.id, sup.launcher.name, job_id)
        now = time.time()  # submitted about now; QUEUED until the launcher says it began
        sup.db.update_instance(
            pi.id, status="QUEUED", submitted=now, started=None, log_path=str(log), note=None
        )
        pi.status, pi.submitted, pi.started, pi.log_path, pi.note = (
            "QUEUED",
            now,
            None,
            str(log),
            None,
        )
        pi.launcher, pi.job_id = sup.launcher.name, job_id
        if not adopt(sup, pi):  # ended between the two questions: run it again
            sup.db.update_instance(pi.id, status="READY", started=None)
            pi.status = "READY"
