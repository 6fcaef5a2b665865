"""How a build's work is shared: one process, or MPI ranks in named roles.

The roles (psana2 names its ranks' jobs Smd0, EventBuilder and BigData; these are the
builder's own):

- **planner** (rank 0, ``plan_on_root``): plans the build and creates the output
  (``engine.builder.plan``, ``engine.builder.output``), then broadcasts to every rank either
  a ``WorkerSetup`` (sources, output, payload offsets) or a ``SetupFailed`` (message, exit
  code), so a bad input ends every rank with the same exit code and rank 0 prints it once;
- **dispatcher** (rank 0, ``Dispatcher``): hands out batches of output rows to workers that
  ask for them (pull-based, so a slow rank takes fewer), with explicit tags and int64
  buffers, never pickles of event data; it gathers each worker's counters, passes progress
  on, keeps the first error and then stops every worker at its next request;
- **worker** (ranks 1..K-1, ``Worker``): asks, copies the batch it gets with a
  ``BatchWorker`` (``engine.builder.batchio``), asks again; on a failure it sends the text
  (``TAG_ERROR``) and waits for rank 0's stop;
- **committer** (rank 0, after the last barrier): removes the temporary output if any rank
  failed, else fsyncs and renames it into place.

Run plainly, or under MPI with one rank, one process plays every role: ``run_serial`` calls
the same ``BatchWorker`` in a loop. ``engine.builder.build.build`` chooses ``run_serial`` or
``run_mpi``; this module decides nothing else about the environment.

Messages (all int64 unless noted):
    worker -> 0  TAG_REQUEST  [rank, batches done, events done, bytes read, peak RSS]
    0 -> worker  TAG_WORK     [start, count, rows of source 0 .. S-1 (count each)]
    0 -> worker  TAG_STOP     []  (no more work, or another rank failed)
    worker -> 0  TAG_ERROR    ERRLEN bytes of UTF-8 text, zero padded
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.builder.batchio import BatchWorker
from engine.builder.h5source import SourceInfo
from engine.builder.options import BuildOptions
from engine.builder.output import commit_output, create_output
from engine.builder.plan import Plan, plan_build
from engine.builder.report import BuildReport, PhaseClock, peak_rss
from engine.core import mpi
from engine.core.atomic import remove_path
from engine.core.errors import EXIT_FAILED, JobFailed, SkydeckError
from engine.core.interrupt import abort_job, probe, reason
from engine.core.progress import Progress

TAG_REQUEST, TAG_WORK, TAG_STOP, TAG_ERROR = 11, 12, 13, 14
ERRLEN = 2048  # bytes of an error message a worker sends to rank 0
# fault injection for tests: "<kill|term|int>:<rank>:<after batches>" sends that rank
# SIGKILL, SIGTERM or SIGINT once it has done that many batches
FAULT_ENV = "SKYDECK_FAULT"
_FAULT_SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT}


@dataclass
class WorkerSetup:
    """What rank 0 broadcasts to every rank once the output exists."""

    sources: list[SourceInfo]  # principal first
    output: str  # the temporary file the workers write into
    offsets: list[int]  # payload byte offset per source
    label: str  # the output's final name, for messages
    io_threads: int

    @property
    def nsrc(self) -> int:
        return len(self.sources)


@dataclass
class SetupFailed:
    """What rank 0 broadcasts instead when planning failed: every rank exits with ``code``."""

    message: str
    code: int

    def error(self) -> SkydeckError:
        err = SkydeckError(self.message)
        err.exit_code = self.code
        return err


def batches(n: int, batch: int) -> list[tuple[int, int]]:
    """The work: (first output row, rows) per batch, in output order."""
    return [(a, min(batch, n - a)) for a in range(0, n, batch)]


def fault_check(rank: int, done: int) -> None:
    kind, _, where = os.environ.get(FAULT_ENV, "").partition(":")
    if kind in _FAULT_SIGNALS:
        r, n = where.split(":")
        if int(r) == rank and done == int(n):
            os.kill(os.getpid(), _FAULT_SIGNALS[kind])


def _plan_phase(opt: BuildOptions, clock: PhaseClock) -> Plan:
    with clock.phase("plan") as ph:
        plan = plan_build(opt)
        ph["sources"] = len(plan.sources)
        ph["timestamps"] = sum(s.n for s in plan.sources)  # rows of timestamps read
        ph["events"] = len(plan.table)
    return plan


def _create_phase(plan: Plan, opt: BuildOptions, clock: PhaseClock) -> None:
    with clock.phase("create") as ph:
        ph["bytes"] = create_output(plan, opt)


def _payload_bytes(plan: Plan) -> int:
    return len(plan.table) * sum(s.row_bytes for s in plan.sources)


# --------------------------------------------------------------------------- one process


def run_serial(
    opt: BuildOptions, progress: Progress | None = None, clock: PhaseClock | None = None
) -> BuildReport:
    """One process plays every role: plan, create, the worker loop in-process, commit."""
    clock = clock or PhaseClock()
    plan = _plan_phase(opt, clock)
    if progress:
        progress.set_total(len(plan.table))
    try:
        _create_phase(plan, opt, clock)
        with clock.phase("copy") as ph:
            threads = opt.io_threads or min(4, len(os.sched_getaffinity(0)))
            worker = BatchWorker(
                plan.sources, str(plan.tmp), plan.offsets, opt.batch, str(opt.output), threads
            )
            try:
                t0 = time.perf_counter()
                for start, count in batches(len(plan.table), opt.batch):
                    worker.process(start, plan.table.rows[:, start : start + count])
                    fault_check(0, worker.batches)
                    if progress:
                        progress.advance(count)
                worker.finish()
                elapsed = time.perf_counter() - t0
            finally:
                worker.close()
            ph.update(rows=worker.events, bytes=_payload_bytes(plan), bytes_read=worker.bytes_read)
        with clock.phase("finalise"):
            commit_output(plan.tmp, opt.output)
    except SkydeckError:
        remove_path(plan.tmp)
        raise
    except OSError as err:
        remove_path(plan.tmp)
        raise JobFailed(
            f"I/O error while building: {err.strerror or err}", err.filename or opt.output
        ) from None
    except BaseException:
        remove_path(plan.tmp)
        raise
    return BuildReport(
        output=str(opt.output),
        events=len(plan.table),
        sources=plan.table.sources,
        selection=plan.selection,
        ranks=1,
        workers=1,
        batch=opt.batch,
        batches=worker.batches,
        bytes_read=worker.bytes_read,
        bytes_written=_payload_bytes(plan),
        elapsed_s=elapsed,
        per_rank_bytes=[worker.bytes_read],
        peak_rss_bytes=[peak_rss()],
    ).finish(clock)


# --------------------------------------------------------------------------- MPI ranks


def run_mpi(
    opt: BuildOptions, progress: Progress | None = None, clock: PhaseClock | None = None
) -> BuildReport | None:
    """Under mpiexec: rank 0 plans and dispatches, ranks 1.. work. Returns the report on rank 0."""
    comm = mpi.world()
    clock = clock or PhaseClock()
    if comm.Get_size() == 1:
        return run_serial(opt, progress, clock)
    held: dict[str, Path] = {}
    try:
        return _run_ranks(comm, opt, progress, clock, held)
    except KeyboardInterrupt as err:
        if comm.Get_rank() != 0:
            raise  # rank 0 got the signal too (mpiexec forwards it) and ends the job
        # the workers wait inside MPI calls and cannot be told: remove the temporary output,
        # then end every rank with 130/143
        if "tmp" in held:
            remove_path(held["tmp"])
        abort_job(comm, err)


def plan_on_root(
    opt: BuildOptions, progress: Progress | None, clock: PhaseClock, held: dict[str, Path]
) -> tuple[Plan | None, WorkerSetup | SetupFailed]:
    """The planner's role (rank 0): plan, create the output, say what every rank needs."""
    try:
        plan = _plan_phase(opt, clock)
        held["tmp"] = plan.tmp
        try:
            _create_phase(plan, opt, clock)
        except BaseException:
            remove_path(plan.tmp)
            raise
        if progress:
            progress.set_total(len(plan.table))
        return plan, WorkerSetup(
            sources=plan.sources,
            output=str(plan.tmp),
            offsets=plan.offsets,
            label=str(opt.output),
            io_threads=opt.io_threads or 1,
        )
    except SkydeckError as err:
        return None, SetupFailed(str(err), err.exit_code)
    except Exception as err:  # noqa: BLE001 - report any planning failure to every rank
        return None, SetupFailed(f"{opt.output}: {err}", EXIT_FAILED)


def _run_ranks(
    comm: Any,
    opt: BuildOptions,
    progress: Progress | None,
    clock: PhaseClock,
    held: dict[str, Path],
) -> BuildReport | None:
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    plan: Plan | None = None
    setup: WorkerSetup | SetupFailed | None = None
    if rank == 0:
        plan, setup = plan_on_root(opt, progress, clock, held)
    setup = comm.bcast(setup, root=0)
    assert setup is not None
    if isinstance(setup, SetupFailed):
        if rank == 0:
            raise setup.error()
        raise _QuietExit(setup.code)

    stats: np.ndarray | None = None
    with clock.phase("copy") as ph:
        comm.Barrier()
        t0 = MPI.Wtime()
        if rank == 0:
            assert plan is not None
            error, stats = Dispatcher(comm, plan, opt.batch, progress).run()
        else:
            error = Worker(comm, rank, setup, opt.batch).run()
        comm.Barrier()
        elapsed = MPI.Wtime() - t0
    error = next((e for e in comm.allgather(error) if e), "")
    if rank != 0:
        if error:
            raise _QuietExit(EXIT_FAILED)
        return None
    # the committer's role
    assert plan is not None and stats is not None
    if error:
        remove_path(plan.tmp)
        raise JobFailed(error)
    per_rank = [int(stats[r][3]) for r in range(1, size)]
    ph.update(rows=len(plan.table), bytes=_payload_bytes(plan), bytes_read=sum(per_rank))
    try:
        with clock.phase("finalise"):
            commit_output(plan.tmp, opt.output)
    except OSError as err:
        remove_path(plan.tmp)
        raise JobFailed(f"cannot rename output into place: {err.strerror}", opt.output) from None
    return BuildReport(
        output=str(opt.output),
        events=len(plan.table),
        sources=plan.table.sources,
        selection=plan.selection,
        ranks=size,
        workers=size - 1,
        batch=opt.batch,
        batches=int(sum(stats[r][1] for r in range(1, size))),
        bytes_read=sum(per_rank),
        bytes_written=_payload_bytes(plan),
        elapsed_s=elapsed,
        per_rank_bytes=per_rank,
        peak_rss_bytes=[int(stats[r][4]) for r in range(1, size)],
    ).finish(clock)


class _QuietExit(SystemExit):
    """A non-zero exit of a worker rank; rank 0 prints the message."""


class Dispatcher:
    """Rank 0 during the copy: answers each worker's request with a batch or a stop."""

    def __init__(self, comm: Any, plan: Plan, batch: int, progress: Progress | None) -> None:
        self.comm, self.plan, self.progress = comm, plan, progress
        self.nsrc = len(plan.sources)
        self.work = batches(len(plan.table), batch)
        self.msg = np.zeros(2 + self.nsrc * batch, dtype=np.int64)

    def run(self) -> tuple[str, np.ndarray]:
        """Serve until every worker is stopped; returns the first error ("" if none) and the
        workers' last counters, one row per rank (see TAG_REQUEST)."""
        from mpi4py import MPI

        comm, msg, nsrc = self.comm, self.msg, self.nsrc
        size = comm.Get_size()
        req = np.zeros(5, dtype=np.int64)
        errbuf = np.zeros(ERRLEN, dtype=np.uint8)
        stats = np.zeros((size, 5), dtype=np.int64)
        last_events = np.zeros(size, dtype=np.int64)
        status = MPI.Status()
        active, nxt, error = size - 1, 0, ""
        while active:
            probe(comm, MPI.ANY_SOURCE, MPI.ANY_TAG, status)  # SIGTERM/Ctrl-C can stop the wait
            src, tag = status.Get_source(), status.Get_tag()
            if tag == TAG_ERROR:
                comm.Recv([errbuf, MPI.BYTE], source=src, tag=TAG_ERROR)
                error = error or bytes(errbuf).rstrip(b"\0").decode(errors="replace")
                comm.Send([msg[:0], MPI.INT64_T], dest=src, tag=TAG_STOP)
                active -= 1
                continue
            comm.Recv([req, MPI.INT64_T], source=src, tag=TAG_REQUEST)
            stats[src] = req
            if self.progress and req[2] > last_events[src]:
                self.progress.advance(int(req[2] - last_events[src]))
                last_events[src] = req[2]
            if nxt < len(self.work) and not error:
                start, count = self.work[nxt]
                nxt += 1
                msg[0], msg[1] = start, count
                block = self.plan.table.rows[:, start : start + count]
                msg[2 : 2 + nsrc * count] = block.ravel()
                comm.Send([msg[: 2 + nsrc * count], MPI.INT64_T], dest=src, tag=TAG_WORK)
            else:
                comm.Send([msg[:0], MPI.INT64_T], dest=src, tag=TAG_STOP)
                active -= 1
        return error, stats


class Worker:
    """A worker rank during the copy: request, copy, repeat until rank 0 says stop."""

    def __init__(self, comm: Any, rank: int, setup: WorkerSetup, batch: int) -> None:
        self.comm, self.rank, self.setup, self.batch = comm, rank, setup, batch

    def run(self) -> str:
        """Returns "" on success, else the error text (already sent to rank 0 if it was
        raised while copying; a failure of the last writes is reported after the barrier)."""
        from mpi4py import MPI

        comm, rank, setup = self.comm, self.rank, self.setup
        nsrc = setup.nsrc
        msg = np.zeros(2 + nsrc * self.batch, dtype=np.int64)
        status = MPI.Status()
        try:
            worker = BatchWorker(
                setup.sources,
                setup.output,
                setup.offsets,
                self.batch,
                setup.label,
                setup.io_threads,
            )
        except Exception as err:  # noqa: BLE001 - tell rank 0, which stops the job
            return self._send_error(f"rank {rank}: {err}")
        try:
            fault_check(rank, 0)
            while True:
                req = np.array(
                    [rank, worker.batches, worker.events, worker.bytes_read, peak_rss()],
                    dtype=np.int64,
                )
                comm.Send([req, MPI.INT64_T], dest=0, tag=TAG_REQUEST)
                comm.Recv([msg, MPI.INT64_T], source=0, tag=MPI.ANY_TAG, status=status)
                if status.Get_tag() == TAG_STOP:
                    try:
                        worker.finish()  # the last writes; an error here is reported after the barrier
                    except SkydeckError as err:
                        return f"{err} (rank {rank})"
                    return ""
                start, count = int(msg[0]), int(msg[1])
                rows = msg[2 : 2 + nsrc * count].reshape(nsrc, count)
                worker.process(start, rows)
                fault_check(rank, worker.batches)
        except SkydeckError as err:
            return self._send_error(f"{err} (rank {rank})")
        except KeyboardInterrupt as err:  # this rank alone was signalled: rank 0 stops the job
            return self._send_error(f"{setup.label}: rank {rank} {reason(err)}")
        except OSError as err:
            return self._send_error(
                f"{err.filename or setup.label}: "
                f"I/O error while building: {err.strerror or err} (rank {rank})"
            )
        except Exception as err:  # noqa: BLE001
            return self._send_error(f"rank {rank}: {type(err).__name__}: {err}")
        finally:
            worker.close()

    def _send_error(self, text: str) -> str:
        from mpi4py import MPI

        buf = np.zeros(ERRLEN, dtype=np.uint8)
        raw = text.encode()[:ERRLEN]
        buf[: len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        self.comm.Send([buf, MPI.BYTE], dest=0, tag=TAG_ERROR)
        self.comm.Recv([np.zeros(0, np.int64), MPI.INT64_T], source=0, tag=TAG_STOP)
        return text
