"""The local launcher: process instances as subprocesses on this host (the default).

Why it looks the way it does: local jobs get their own session (process group) so a
cancel reaches the whole job tree (mpiexec and its ranks), and are asked to die with their
launcher (PR_SET_PDEATHSIG), so a daemon killed with SIGKILL leaves no job running
unsupervised; resume logic still checks (``kill_orphan``) because a parent-death signal is
best effort. A local job cannot outlive the runner that did not record it, so it is never
adopted. The interface is ``engine.pipeline.launchers.base.Launcher``; the registry
(``engine.pipeline.launchers``) picks it for ``[pipeline] launcher = "local"``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import ClassVar

import psutil

from engine.core.owner import process_start
from engine.pipeline.launchers.base import JobHandle, JobResult, JobSpec

_LIBC: ctypes.CDLL | None
try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - non-glibc platforms
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class LocalLauncher:
    """Subprocesses on this host, at most ``max_jobs`` at a time."""

    name: ClassVar[str] = "local"
    settings_section: ClassVar[str | None] = None
    sibling_suffixes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, max_jobs: int = 2, options: object = None) -> None:
        self.max_jobs = max(1, int(max_jobs))
        self._procs: dict[int, subprocess.Popen] = {}
        self._started: dict[int, float] = {}

    def capacity(self) -> int:
        return self.max_jobs - len(self._procs)

    def active(self) -> list[int]:
        return list(self._procs)

    def adopt(self, pi_id: int, job_id: str, log: Path) -> bool:
        """A subprocess of a dead runner cannot be waited for (``kill_orphan`` ends it)."""
        return False

    def pending_reason(self, pi_id: int) -> str | None:
        """A local job never waits in a queue."""
        return None

    def started(self, pi_id: int) -> float | None:
        """A local job runs from its submission (None: not one of ours)."""
        return self._started.get(pi_id)

    def find_submitted(self, logs: list[Path]) -> dict[Path, str]:
        """A local job cannot outlive the runner that did not record it."""
        return {}

    def submit(self, spec: JobSpec) -> JobHandle:
        spec.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(spec.env)
        with open(spec.log, "ab") as log:
            log.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(spec.argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=spec.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._procs[spec.pi_id] = proc
        start = process_start(proc.pid) or time.time()
        self._started[spec.pi_id] = start
        return JobHandle(
            spec.pi_id, proc.pid, socket.gethostname(), start, str(proc.pid), launcher=self.name
        )

    def poll(self) -> list[JobResult]:
        done = []
        for pi_id, proc in list(self._procs.items()):
            code = proc.poll()
            if code is not None:
                del self._procs[pi_id]
                started = self._started.pop(pi_id, None)
                done.append(JobResult(pi_id, code, time.time(), started=started))
        return done

    def cancel(self, pi_id: int, grace_s: float = 5.0) -> None:
        proc = self._procs.get(pi_id)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def cancel_all(self, grace_s: float = 5.0) -> list[int]:
        ids = list(self._procs)
        for pi_id in ids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._procs[pi_id].pid, signal.SIGTERM)
        deadline = time.time() + grace_s
        for pi_id in ids:
            proc = self._procs[pi_id]
            try:
                proc.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return ids


def kill_orphan(pid: int | None, host: str | None, start: float | None) -> str:
    """Kill a job whose supervisor died, if it is provably that job (same host, same start).

    Returns what happened, for the structured log.
    """
    if pid is None or host != socket.gethostname():
        return "not on this host" if pid is not None else "no pid"
    try:
        proc = psutil.Process(pid)
        if start and abs(proc.create_time() - start) > 1.0:
            return f"pid {pid} reused; not killed"
    except psutil.NoSuchProcess:
        return f"pid {pid} already gone"
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(psutil.Error):
        proc.kill()
        proc.wait(5)
    return f"killed orphan pid {pid}"
