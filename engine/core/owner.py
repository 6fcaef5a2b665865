"""Process identity: who holds a claim or a lock, and whether that process is provably dead.

Why a module of its own: a claim in the state database, a lock file and a launched job all
name their owner the same way (pid, host, process start time), and every one of them needs
the same verdict "is that owner provably dead?" to be reclaimed after a crash. Locks and the
launcher must not import the database to ask that, so identity lives here, in ``core``,
below every user.

On one host a dead pid is proof; a pid reused by another process is told apart by its start
time. An owner on another host cannot be judged from here. With a PostgreSQL state database
every owning process holds a session lock on the server keyed by its identity
(``presence_keys``; engine/store/presence.py), and the server sees that lock go when the
process or its host dies: the store hands core a *remote judge* that asks for it. Core never
imports the store (tests/test_boundaries.py), so the judge comes down as a value: either
passed to ``owner_dead`` (the claim code, which has its own connection) or installed once per
process with ``set_remote_judge`` by the presence that process holds (lock files, the
heartbeat and extraction sweeps, temporaries). Without a judge (SQLite) the one-host rule
stays: another host's owner is never provably dead; an operator clears it.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

import psutil

PID_MAX = 2**22  # Linux's largest pid_max: no process has a pid outside 1..PID_MAX

# A judge of owners on other hosts: (pid, host, start or None) -> (dead, why), or None when it
# cannot tell (then the owner counts as alive). ``start`` None: only pid and host are known
# (a temporary's or an extraction's name, maybe a job's): the judge then answers for the host.
RemoteJudge = Callable[[int, str, float | None], tuple[bool, str] | None]
_remote_judge: RemoteJudge | None = None


def set_remote_judge(judge: RemoteJudge | None) -> RemoteJudge | None:
    """Install the judge ``owner_dead`` asks about other hosts' owners when none is passed
    (the presence this process holds on the state server); returns the one it replaces."""
    global _remote_judge
    previous, _remote_judge = _remote_judge, judge
    return previous


def remote_judge() -> RemoteJudge | None:
    """The installed judge (None: no state server sees this process; the one-host rule)."""
    return _remote_judge


def presence_keys(pid: int, host: str, start: float | None) -> tuple[int | None, int, int]:
    """The session-lock keys an owner holds while it lives: one 64-bit key of the whole
    identity (host, pid, start: pid reuse on a rebooted host is told apart), None without a
    start, and a (host hash, pid) pair for a name that carries only host and pid."""
    host_key = int.from_bytes(
        hashlib.sha256(host.encode("utf-8", "replace")).digest()[:4], "big", signed=True
    )
    when = _finite_start(start)
    if when is None:
        return None, host_key, int(pid)
    ident = f"{host}\n{int(pid)}\n{when:.3f}".encode("utf-8", "replace")
    full = int.from_bytes(hashlib.sha256(ident).digest()[:8], "big", signed=True)
    return full, host_key, int(pid)


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
        """(provably dead, why). Another host: only through a remote judge."""
        return owner_dead(self.pid, self.host, self.start)

    def keys(self) -> tuple[int | None, int, int]:
        """The session-lock keys this owner holds on a PostgreSQL state server."""
        return presence_keys(self.pid, self.host, self.start)

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"


def _finite_start(start: object) -> float | None:
    """A recorded start time usable as part of a key; None for a missing or broken one."""
    if start is None or isinstance(start, bool) or not isinstance(start, int | float):
        return None
    try:
        f = float(start)
    except OverflowError:
        return None
    return f if math.isfinite(f) and f > 0 else None


def process_start(pid: int) -> float | None:
    """The start time (epoch seconds) of process ``pid`` on this host; None when unknown."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, OverflowError, TypeError):
        return None


def owner_dead(
    pid: int | None, host: str | None, start: float | None, remote: RemoteJudge | None = None
) -> tuple[bool, str]:
    """Decide whether an owner is provably dead, with the reason shown to operators.

    Total over what a database row or lock file may hold: a pid that is no integer in
    1..PID_MAX names no process (dead on this host), a start that is no finite number is
    ignored; psutil is only asked about a valid pid. An owner on another host is judged by
    ``remote`` (else the installed judge); without one it is never provably dead.
    """
    if pid is None:
        return True, "no owner recorded"
    valid_pid = not isinstance(pid, bool) and isinstance(pid, int) and 1 <= pid <= PID_MAX
    if host != socket.gethostname():
        judge = remote or _remote_judge
        if judge is not None and valid_pid and isinstance(host, str) and host:
            assert isinstance(pid, int)
            when = _finite_start(start)
            told = judge(pid, host, when)
            if told is not None:
                return told
        return False, f"owner is on another host ({str(host)[:80]}); only an operator may clear it"
    if not valid_pid:
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
