"""Rollback: re-run process instances of a stream, and everything downstream, as new executions.

Pipeline-II's rollback (docs/halfpipe.md): the chosen instances and their descendants stop
being the latest, the stream is WAITING again, and a runner (a ``skydeck-engine run`` or the
daemon) creates new executions. ``rollback_plan`` checks first what the CLI checks and, in
addition, whether the inputs a re-run needs are still there (``cleanup`` removes chunk
outputs once a downlink is staged), so a front end can refuse with the reason instead of
letting the re-run fail. Used by the CLI's ``rollback`` and the console through engine.api.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.errors import BadInput, Busy, SkydeckError
from engine.core.ids import parse_dlid
from engine.core.owner import owner_dead
from engine.core.workspace import Workspace
from engine.pipeline.instance import InstanceView
from engine.pipeline.task import load_task
from engine.store import ACTIVE_PI, StateDB


@dataclass
class RollbackResult:
    dlid: str
    retired: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)  # the retired instances' ids


def rollback(
    ws: Workspace,
    dlid: str,
    targets: list[str] | None = None,
    task_name: str | None = None,
    dry_run: bool = False,
) -> RollbackResult:
    """Retire the chosen instances and every latest instance downstream of them.

    The stream goes back to WAITING; its runner makes new executions (execution + 1) of what
    is missing. ``targets``: "process" (all its instances) or "process:key"; default: the
    latest instances that FAILED / were TERMINATED or CANCELED. ``dry_run``: make every check
    and return what would be retired, changing nothing (a front end asks before it acts).
    """
    dlid = parse_dlid(dlid)
    task = load_task(ws, task_name)
    with StateDB(ws.state) as db:
        st = db.latest_stream(dlid, task.name)
        if st is None:
            raise BadInput(f"downlink {dlid} has no {task.name} stream to roll back", db.where)
        if (
            st.owner_pid is not None
            and not owner_dead(st.owner_pid, st.owner_host, st.owner_start, db.remote_judge)[0]
        ):
            raise Busy(
                f"stream {dlid} is being run by {st.owner_host}:{st.owner_pid}; "
                "roll back once it stopped",
                db.where,
            )
        latest = db.instances(st.id)
        chosen: list[tuple[str, str | None]] = []
        for t in targets or []:
            name, _, key = t.partition(":")
            try:
                task.process(name)
            except KeyError:
                raise BadInput(
                    f"task {task.name} has no process {name!r} "
                    f"(processes: {', '.join(p.name for p in task.processes)})"
                ) from None
            if key and not any(pi.process == name and pi.key == key for pi in latest):
                keys = sorted({pi.key for pi in latest if pi.process == name and pi.key})
                raise BadInput(
                    f"stream {dlid} has no instance {name}:{key[:40]!r} (keys of {name}: "
                    f"{', '.join(keys[:20]) or 'none'})"
                )
            chosen.append((name, key or None))
        if not chosen:
            chosen = [
                (pi.process, pi.key)
                for pi in latest
                if pi.status in ("FAILED", "TERMINATED", "CANCELED")
            ]
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
        result = RollbackResult(
            dlid, [f"{pi.label} e{pi.execution}" for pi in retire], [pi.id for pi in retire]
        )
        if dry_run:
            return result
        db.reset_stream(
            st.id,
            f"rolled back {', '.join(sorted(names))} at {time.strftime('%H:%M:%S')}",
            retire=result.ids,
        )
        return result


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
    with StateDB(ws.state) as db:
        st = db.latest_stream(dlid, task.name)
        if st is None:  # gone between the two reads
            return RollbackPlan((), f"downlink {dlid} has no {task.name} stream")
        dl = db.downlink(dlid)
        if dl is None:
            return RollbackPlan((), f"downlink {dlid} is not registered")
        latest = db.instances(st.id)
        view = InstanceView(ws, dl, task)
        rerun = {pi.process for pi in latest if pi.id in res.ids}
        read = {r for name in rerun for r in task.process(name).reads}
        for pi in latest:
            if pi.id in res.ids or pi.status != "SUCCESS" or pi.process not in read:
                continue
            pdef = task.process(pi.process)
            if not pdef.outputs:
                continue
            out = view.output_path(pdef, pi.key)
            if not out.exists():
                return RollbackPlan(
                    tuple(res.retired),
                    (
                        f"{pi.label}'s output {out} is gone (cleaned up), and the re-run needs it: "
                        f"roll back {pi.process} as a whole (its group) instead"
                    ),
                )
        for name in sorted(rerun):
            pdef = task.process(name)
            if any("{level0}" in a for a in pdef.command) and not Path(dl.level0).exists():
                return RollbackPlan(
                    tuple(res.retired), (f"{name} reads the delivery {dl.level0}, which is gone")
                )
    return RollbackPlan(tuple(res.retired), None)
