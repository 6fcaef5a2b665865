"""The operations a front end performs on the pipeline (the console first, the CLI's rollback
and unlock too): run, roll back (checked first), re-run, unlock, halt flags, operator jobs.

Why this module exists: the console must act like the CLI acts, without reimplementing the
engine. A stream runs in a detached ``skydeck-engine run`` process that claims the stream in
the state database, so a daemon or a second console never runs a process twice; a rollback
changes the state database in a transaction and the runner (or a running daemon) acts on it;
an operator job (``build``, ``propagate``) reports progress as JSON lines, which ``Job``
parses, so a front end only shows what it yields. Nothing here imports Textual.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from engine.api.listings import last_line
from engine.core.errors import BadInput, Busy, SkydeckError
from engine.core.ids import parse_dlid
from engine.core.owner import owner_dead
from engine.core.workspace import Workspace
from engine.pipeline import halts as halt_flags
from engine.pipeline import locks as _locks
from engine.pipeline.runner import StreamRunner
from engine.pipeline.task import load_task
from engine.store import ACTIVE_PI, StateDB

# ------------------------------------------------------------------------ rollback

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

def unlock(ws: Workspace, name: str, force: bool = False) -> _locks.LockInfo:
    """Remove a stale lock; ``force`` only after the operator confirmed."""
    return _locks.unlock(ws.lock, name, force=force)


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


# ------------------------------------------------------------------------ launching

def engine_env() -> dict[str, str]:
    """The environment an engine subprocess needs: this checkout importable, this venv first."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def engine_argv(ws: Workspace, *args: str) -> list[str]:
    """The command line of ``skydeck-engine -w WS ARGS...`` with this interpreter."""
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
                                stderr=subprocess.STDOUT, env=engine_env(), start_new_session=True)
    return proc, log


def _spawn_job(ws: Workspace, name: str, args: list[str]) -> tuple[subprocess.Popen[str], Path]:
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
                                stderr=fh, env=engine_env(), text=True, start_new_session=True)
    finally:
        fh.close()
    return proc, log


@dataclass(frozen=True)
class Progress:
    """One progress report of an operator job (``total`` None: not known yet)."""

    done: int
    total: int | None
    what: str


@dataclass
class Job:
    """A running operator job: its process, its log, and its progress as it comes.

    The job writes one JSON object per line on stdout (``engine.cli.jsonprogress``); lines
    that are not a progress report are skipped. ``last`` is the latest report (kept for the
    final one a front end shows when the job ends).
    """

    name: str
    proc: subprocess.Popen[str]
    log: Path
    last: Progress = field(default_factory=lambda: Progress(0, None, ""))

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def title(self) -> str:
        """How a front end names it: ``build out.h5 (pid 4242)``."""
        return f"{self.name} (pid {self.pid})"

    def progress(self) -> Iterator[Progress]:
        """Each progress report as the job writes it; ends when the job closes its stdout."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and "progress" in ev:
                self.last = Progress(int(ev["progress"]), ev.get("total"), str(ev.get("what", "")))
                yield self.last

    def wait(self) -> int:
        """The job's exit status (waits for it)."""
        return self.proc.wait()

    def reason(self) -> str:
        """The last line of the job's log: its one-line reason when it failed."""
        return last_line(self.log)


def start_job(ws: Workspace, name: str, args: list[str]) -> Job:
    """Start an operator job (``build`` or ``propagate``) reporting progress as JSON lines.

    It runs under ``engine.cli.jsonprogress`` so its progress reaches any front end through a
    pipe; the job's own messages go to a log file. ``name`` is how the front end calls it.
    """
    proc, log = _spawn_job(ws, args[0], args)
    return Job(name, proc, log)
