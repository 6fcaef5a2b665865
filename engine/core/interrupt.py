"""SIGTERM and SIGINT end a job the same way: its process tree stopped, its temporaries gone.

Ctrl-C raises KeyboardInterrupt in the main thread, and every job already cleans up on
that (``except BaseException``: the temporary output removed, exit 130). SIGTERM, what
a batch system, systemd or ``kill`` sends, used to kill the process outright: the
propagation workers it had forked kept running as orphans and the temporary event
directory stayed. ``install`` makes both signals take one path: the handler raises
``KeyboardInterrupt`` (``Terminated`` for SIGTERM) in the main thread, so the ordinary
cleanup runs (a process pool is shut down, its pending chunks cancelled), and ``cli.main``
then stops whatever this process started and still runs (``stop_children``) and exits 130
or 143 (``exit_code``). Killing pool workers *before* the pool's own shutdown is what not
to do: CPython 3.11's ProcessPoolExecutor can then spin forever in ``terminate_broken``.
So forked workers, which inherit the handler, ignore both signals (a signal sent to the
whole process group reaches the parent, which stops them in order), and only a second
signal during the cleanup stops the children at once and exits without waiting.
Commands that stop gracefully (``watch``, ``run``) install their own handlers over these.

Under ``mpiexec`` the launcher forwards the signal to every rank, but a rank blocked in an
MPI call runs no Python handler until a message arrives, which may be never; so rank 0
waits for messages with ``probe`` (polling, handlers run), removes its temporaries, and
ends the whole MPI job with ``abort_job``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, NoReturn

from engine.core import mpi
from engine.core.errors import EXIT_FAILED, EXIT_INTERRUPTED, SkydeckError

EXIT_TERMINATED = 128 + signal.SIGTERM  # 143
STOP_GRACE_S = 2.0  # a child gets this long after SIGTERM before SIGKILL


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so one cleanup path serves both."""


_owner = {"pid": 0, "signalled": 0}


def stop_children(grace_s: float = STOP_GRACE_S) -> list[int]:
    """Terminate (then kill) every descendant of this process; return their pids."""
    import psutil  # here, not at the top: every `skydeck-engine` start imports this module

    try:
        kids = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    for k in kids:
        with contextlib.suppress(psutil.Error):
            k.terminate()
    _, alive = psutil.wait_procs(kids, timeout=grace_s)
    for k in alive:
        with contextlib.suppress(psutil.Error):
            k.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    return [k.pid for k in kids]


def _handler(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _owner["pid"]:
        return  # a forked pool worker: its parent shuts the pool down in order
    if _owner["signalled"]:  # asked again while cleaning up: stop now
        stop_children(grace_s=0.5)
        os._exit(EXIT_TERMINATED if _owner["signalled"] == signal.SIGTERM else EXIT_INTERRUPTED)
    _owner["signalled"] = signum
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


Handlers = dict[int, Callable[[int, FrameType | None], Any] | int | None]


def install() -> Handlers:
    """Route SIGTERM and SIGINT of this process through ``_handler``; return the previous
    handlers for ``restore``. Only the main thread can; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _owner["pid"], _owner["signalled"] = os.getpid(), 0
    return {s: signal.signal(s, _handler) for s in (signal.SIGTERM, signal.SIGINT)}


def restore(old: Handlers) -> None:
    for s, h in old.items():
        if h is not None:  # None: a handler not set from Python, which cannot be put back
            signal.signal(s, h)


def speaks_for_the_job() -> bool:
    """Whether this process prints the job's one line on an interrupt: a plain process, or
    rank 0 of an MPI job (mpiexec forwards SIGTERM to every rank; one line, not one per rank).
    """
    return mpi.rank_hint() in (None, 0)


def exit_code(err: BaseException) -> int:
    """130 for an interrupt (Ctrl-C), 143 for SIGTERM."""
    return EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED


def reason(err: BaseException) -> str:
    """The one line a job prints for an interrupt (or any other error)."""
    if isinstance(err, KeyboardInterrupt):
        return "terminated" if isinstance(err, Terminated) else "interrupted"
    return str(err) or type(err).__name__


def probe(comm: Any, source: int, tag: int, status: Any = None) -> None:
    """``comm.Probe`` that returns to Python between polls, so a SIGTERM or SIGINT handler
    runs while rank 0 waits (a blocking MPI call would defer it until a message comes)."""
    spins = 0
    while not comm.Iprobe(source=source, tag=tag, status=status):
        spins += 1
        if spins > 1000:  # answers come within microseconds while work flows; then back off
            time.sleep(50e-6)


def abort_job(comm: Any, err: BaseException) -> NoReturn:
    """Rank 0, after removing its temporaries: say why on stderr and end every rank of the
    MPI job with the code a plain run would give (130/143, a BadInput's 2, else 1)."""
    if isinstance(err, KeyboardInterrupt):
        code = exit_code(err)
    else:
        code = err.exit_code if isinstance(err, SkydeckError) else EXIT_FAILED
    print(f"skydeck-engine: {reason(err)}", file=sys.stderr, flush=True)
    # MPICH prints its own "Abort(143) on node 0 ... MPI_Abort" banner on this rank's
    # stderr; the line above already said why, so the job's stderr stays one line
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    comm.Abort(code)
    raise SystemExit(code)  # not reached: Abort ends this process too
