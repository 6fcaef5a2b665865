"""The operations a front end performs on the pipeline (the console first, the CLI's rollback
and unlock too): run, roll back (checked first), re-run, unlock, an inbox scan, halt flags,
operator jobs: everything a front end does that changes something (``listings`` only reads).

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
from engine.core.ids import parse_dlid
from engine.core.workspace import Workspace
from engine.intake import deliveries as _deliveries
from engine.pipeline import halts as halt_flags
from engine.pipeline import locks as _locks
from engine.store import StateDB


def unlock(ws: Workspace, name: str, force: bool = False) -> _locks.LockInfo:
    """Remove a stale lock (on PostgreSQL, also a dead owner's on another host); ``force``
    only after the operator confirmed."""
    with StateDB(ws.state) as db:
        return _locks.unlock(ws.lock, name, force=force, remote=db.remote_judge)


def scan_incoming(ws: Workspace) -> list[_deliveries.Outcome]:
    """One reconciliation pass over the inboxes (what `watch` does on its timer): registers
    complete deliveries, rejects bad ones."""
    with StateDB(ws.state) as db:
        return _deliveries.process_all(
            ws, db, ws.settings.watch.quiet_s, ws.settings.watch.incomplete_timeout_s
        )


# ------------------------------------------------------------------------ halt flags


def _flag_path(ws: Workspace, flag: str, dlid: str | None) -> Path:
    return halt_flags.flag_path(ws, flag, dlid)


def halts(ws: Workspace, dlid: str | None = None) -> dict[str, list[str]]:
    """Set halt flags: {flag: ["global"] and/or [dlid]} for the global and this downlink."""
    return halt_flags.halts(ws, dlid)


def set_halt(ws: Workspace, flag: str, dlid: str | None = None) -> Path:
    """Hold every process guarded by ``flag`` (globally, or for one downlink); its alert
    goes to ``[alerts] command`` on a background worker."""
    from engine.api.alarms import set_halt as _set_and_alert

    return _set_and_alert(ws, flag, dlid)


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
    log = ws.console_logs / f"run-{dlid}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            engine_argv(ws, "run", dlid),
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=engine_env(),
            start_new_session=True,
        )
    return proc, log


def _spawn_job(ws: Workspace, name: str, args: list[str]) -> tuple[subprocess.Popen[str], Path]:
    """Start an operator job (``build`` or ``propagate``) reporting progress as JSON lines.

    It runs under ``engine.cli.jsonprogress`` so its progress reaches any front end through a
    pipe (stdout: one JSON object per line); the job's own messages go to a log file.
    """
    log = ws.console_logs / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "ab")  # noqa: SIM115 - the child owns it; closed below after the fork
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli.jsonprogress", "-w", str(ws.root), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=fh,
            env=engine_env(),
            text=True,
            start_new_session=True,
        )
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
