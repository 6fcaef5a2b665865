"""Process identity: who holds a claim or a lock, and whether that process is provably dead.

Why a module of its own: a claim in the state database, a lock file and a launched job all
name their owner the same way (pid, host, process start time), and every one of them needs
the same verdict "is that owner provably dead?" to be reclaimed after a crash. Locks and the
launcher must not import the database to ask that, so identity lives here, in ``core``,
below every user.

On one host a dead pid is proof; a pid reused by another process is told apart by its start
time. An owner on another host is never provably dead from here: only an operator (or, with
a shared database, the database's own session lock) may clear it.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass

import psutil

PID_MAX = 2**22  # Linux's largest pid_max: no process has a pid outside 1..PID_MAX


@dataclass(frozen=True)
class Owner:
    """A process identity that survives pid reuse: pid + host + process start time."""

    pid: int
    host: str
    start: float

    @classmethod
    def me(cls) -> Owner:
        return cls(os.getpid(), socket.gethostname(), process_start(os.getpid()) or 0.0)

    def verdict(self) -> tuple[bool, str]:
        """(provably dead, why). Another host is never provably dead."""
        return owner_dead(self.pid, self.host, self.start)


def process_start(pid: int) -> float | None:
    """The start time (epoch seconds) of process ``pid`` on this host; None when unknown."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, OverflowError, TypeError):
        return None


def owner_dead(pid: int | None, host: str | None, start: float | None) -> tuple[bool, str]:
    """Decide whether an owner is provably dead, with the reason shown to operators.

    Total over what a database row or lock file may hold: a pid that is no integer in
    1..PID_MAX names no process (dead on this host), a start that is no finite number is
    ignored; psutil is only asked about a valid pid.
    """
    if pid is None:
        return True, "no owner recorded"
    if host != socket.gethostname():
        return False, f"owner is on another host ({str(host)[:80]}); only an operator may clear it"
    if isinstance(pid, bool) or not isinstance(pid, int) or not 1 <= pid <= PID_MAX:
        return True, f"pid {str(pid)[:24]} is no valid process id on this host"
    if not psutil.pid_exists(pid):
        return True, f"pid {pid} is not running on this host"
    actual = process_start(pid)
    if actual is None:
        return False, f"pid {pid} exists but its start time cannot be read"
    try:
        started = float(start or 0.0)
    except (TypeError, ValueError, OverflowError):
        started = 0.0
    if started and math.isfinite(started) and abs(actual - started) > 1.0:
        return True, f"pid {pid} was reused (start time differs)"
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True, f"pid {pid} is a zombie"
    except psutil.Error:
        pass
    return False, f"pid {pid} is alive"
