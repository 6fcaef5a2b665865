"""The pipeline API the CLI and the console share (functions returning dataclasses).

Reads come from the state database (which the daemon and runners write); actions
(rollback) change it in transactions, and a running daemon or `skydeck-engine run` acts
on the change. Nothing here imports Textual.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from engine.core.errors import BadInput, Busy
from engine.core.ids import parse_dlid
from engine.core.owner import owner_dead
from engine.core.workspace import Workspace
from engine.intake import deliveries as _deliveries
from engine.pipeline import locks as _locks
from engine.pipeline.task import load_task
from engine.pipeline.usage import StageReport, stage_report
from engine.store import ACTIVE_PI, Delivery, Downlink, StateDB, StreamView


def downlinks(ws: Workspace) -> list[Downlink]:
    """Registered downlinks, by id."""
    with StateDB(ws.state_db) as db:
        return db.downlinks()


def rejected(ws: Workspace) -> list[Delivery]:
    """Deliveries moved to incoming/rejected/, with their reasons."""
    with StateDB(ws.state_db) as db:
        return db.deliveries("REJECTED")


def pending(ws: Workspace) -> list[Delivery]:
    """Deliveries seen but not complete yet (files missing or still being written)."""
    with StateDB(ws.state_db) as db:
        return db.deliveries("PENDING")


def locks(ws: Workspace) -> list[_locks.LockInfo]:
    """Every lock with kind, owner, age and stale verdict (files are the truth)."""
    return _locks.list_locks(ws.lock)


def unlock(ws: Workspace, name: str, force: bool = False) -> _locks.LockInfo:
    """Remove a stale lock; ``force`` only after the operator confirmed."""
    return _locks.unlock(ws.lock, name, force=force)


def stage(ws: Workspace, workers: int | None = None) -> StageReport:
    """Usage per area and downlink, free space, reserve, whether launching is paused."""
    return stage_report(ws, workers)


def scan_incoming(ws: Workspace) -> list[_deliveries.Outcome]:
    """One reconciliation pass over the inboxes (what `watch` does on its timer)."""
    with StateDB(ws.state_db) as db:
        return _deliveries.process_all(ws, db, ws.settings.watch.quiet_s,
                                       ws.settings.watch.incomplete_timeout_s)


def stream_views(ws: Workspace, dlid: str | None = None, latest_only: bool = True) -> list[StreamView]:
    """Streams with their (latest or all) process instances, by downlink."""
    with StateDB(ws.state_db) as db:
        out = []
        for s in db.streams(latest_only=True):
            if dlid is not None and s.dlid != dlid:
                continue
            out.append(StreamView(s, db.instances(s.id, latest_only=latest_only)))
        return out


@dataclass
class RollbackResult:
    dlid: str
    retired: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)  # the retired instances' ids


def rollback(ws: Workspace, dlid: str, targets: list[str] | None = None,
             task_name: str | None = None, dry_run: bool = False) -> RollbackResult:
    """Retire the chosen instances and every latest instance downstream of them.

    The stream goes back to WAITING; its runner makes new executions (execution + 1) of what
    is missing. ``targets``: "process" (all its instances) or "process:key"; default: the
    latest instances that FAILED / were TERMINATED or CANCELED. ``dry_run``: make every check
    and return what would be retired, changing nothing (a front end asks before it acts).
    """
    dlid = parse_dlid(dlid)
    task = load_task(ws, task_name)
    with StateDB(ws.state_db) as db:
        st = db.latest_stream(dlid, task.name)
        if st is None:
            raise BadInput(f"downlink {dlid} has no {task.name} stream to roll back", ws.state_db)
        if st.owner_pid is not None and not owner_dead(st.owner_pid, st.owner_host, st.owner_start)[0]:
            raise Busy(f"stream {dlid} is being run by {st.owner_host}:{st.owner_pid}; "
                       "roll back once it stopped", ws.state_db)
        latest = db.instances(st.id)
        chosen: list[tuple[str, str | None]] = []
        for t in targets or []:
            name, _, key = t.partition(":")
            try:
                task.process(name)
            except KeyError:
                raise BadInput(f"task {task.name} has no process {name!r} "
                               f"(processes: {', '.join(p.name for p in task.processes)})") from None
            if key and not any(pi.process == name and pi.key == key for pi in latest):
                keys = sorted({pi.key for pi in latest if pi.process == name and pi.key})
                raise BadInput(f"stream {dlid} has no instance {name}:{key[:40]!r} (keys of {name}: "
                               f"{', '.join(keys[:20]) or 'none'})")
            chosen.append((name, key or None))
        if not chosen:
            chosen = [(pi.process, pi.key) for pi in latest
                      if pi.status in ("FAILED", "TERMINATED", "CANCELED")]
        if not chosen:
            raise BadInput(f"stream {dlid} has no failed instance; name PROCESS[:KEY] to roll back")
        names = {n for n, _ in chosen}
        down = task.downstream(names)
        retire = []
        for pi in latest:
            if pi.status in ACTIVE_PI:
                continue
            direct = any(pi.process == n and (k is None or pi.key == k) for n, k in chosen)
            if direct or (pi.process in down and pi.process not in names):
                retire.append(pi)
        if not retire:
            raise BadInput(f"nothing to roll back in stream {dlid} for {', '.join(sorted(names))}")
        result = RollbackResult(dlid, [f"{pi.label} e{pi.execution}" for pi in retire],
                                [pi.id for pi in retire])
        if dry_run:
            return result
        db.reset_stream(st.id, f"rolled back {', '.join(sorted(names))} at "
                        f"{time.strftime('%H:%M:%S')}", retire=result.ids)
        return result
