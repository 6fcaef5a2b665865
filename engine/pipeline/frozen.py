"""Frozen lock holders: a holder that is alive but makes no progress.

Why a module of its own: a lock is reclaimed only when its owner is provably dead (its pid
on this host, the PostgreSQL server's session for another host), but a live process, or a
live session, is not proof of progress. A daemon stopped with SIGSTOP, hung in the kernel or
paused in a debugger keeps its pid and its server session, so its locks (a stream's, a run
merge's, ``cleanup``) are held for ever while nothing happens. The evidence that it stopped
advancing is what only an alive process gives: its daemon heartbeat (rewritten every
``[metrics] interval_s``) no longer advances, or, on this host, the process is stopped or a
zombie. ``health`` fails on such a lock (held longer than the bound), ``locks`` shows the
evidence, and ``unlock`` releases it showing the same evidence (engine/cli/unlock.py).
"""

from __future__ import annotations

import socket
import time

from engine.core.heartbeat import Heartbeat
from engine.pipeline.locks import LockInfo


def frozen_evidence(
    info: LockInfo, beats: list[Heartbeat], max_age: float, now: float | None = None
) -> str | None:
    """Why the live holder of ``info`` is frozen, or None (dead holders are stale, not
    frozen). ``beats``: the workspace's daemon heartbeats; ``max_age``: how old a heartbeat
    may be (health's bound)."""
    if info.stale or info.pid is None or info.blocks:
        return None
    now = time.time() if now is None else now
    why: list[str] = []
    if info.host == socket.gethostname():
        import psutil

        try:
            status = psutil.Process(info.pid).status()
        except (psutil.Error, OSError):
            status = None
        if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP):
            why.append(f"process {info.pid} is stopped (SIGSTOP or a debugger)")
        elif status == psutil.STATUS_ZOMBIE:
            why.append(f"process {info.pid} is a zombie")
    for hb in beats:
        if (hb.host, hb.pid) == (info.host, info.pid) and now - hb.t > max_age:
            why.append(
                f"its daemon heartbeat has not advanced for {now - hb.t:.0f} s "
                f"(it beats every {hb.interval_s:g} s)"
            )
            break
    return "; ".join(why) or None
