"""Backend selection and the NumPy chunk driver (serial or a process pool).

Every backend yields ``ChunkResult`` objects in photon order; the event writer does not
care which produced them. ``--backend auto`` takes ``cuda`` (PyCUDA) when it imports and a
device initialises, else ``cupy``, else NumPy, and the choice (with the reasons) goes into
meta.json. The two GPU backends differ only in the library that talks to the driver; both
run ``gpu_host``'s host-side code.
"""

from __future__ import annotations

import importlib
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

from engine.core import mpi
from engine.core.errors import BadInput
from engine.core.interrupt import probe
from engine.propagate.numpy_backend import propagate_chunk
from engine.propagate.options import BACKENDS
from engine.propagate.params import ChunkResult, Params
from engine.propagate.scene import SceneArrays

GPU_BACKENDS = ("cuda", "cupy")  # PyCUDA first: the default GPU backend

_W: dict[str, object] = {}


def default_workers() -> int:
    """Cores this process may use (affinity mask, so `taskset`/cgroups are honoured)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def gpu_module(name: str):  # -> the backend's module (imports no GPU library yet)
    return importlib.import_module(f"engine.propagate.{name}_backend")


def resolve_backend(name: str) -> tuple[str, str]:
    """Return (backend, device description); BadInput when a GPU backend is asked for and
    absent."""
    if name not in BACKENDS:
        raise BadInput(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    if name == "numpy":
        return "numpy", "cpu"
    why = []
    for gpu in GPU_BACKENDS if name == "auto" else (name,):
        ok, text = gpu_module(gpu).available()
        if ok:
            return gpu, text
        if name == gpu:
            raise BadInput(f"{gpu} backend unavailable: {text}")
        why.append(f"{gpu} unavailable: {text}")
    return "numpy", f"cpu ({'; '.join(why)})"


def run_gpu(
    name: str,
    sa: SceneArrays,
    gs: np.ndarray,
    total: int,
    p: Params,
    advance: Callable[[int], None],
    stats: dict,
) -> Iterator[ChunkResult]:
    """A GPU backend's chunk results; ``stats`` receives kernel_seconds and launches."""
    from engine.propagate import gpu_host

    return gpu_host.run(gpu_module(name).device(), sa, gs, total, p, advance, stats)


def _init_worker(sa: SceneArrays, gs: np.ndarray, p: Params) -> None:
    # Ctrl-C reaches the whole process group; only the parent handles it (exit 130, temp
    # removed) and shuts the pool down, so workers must not die mid-chunk on their own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _W.update(sa=sa, gs=gs, p=p)


def _work(span: tuple[int, int]) -> ChunkResult:
    return propagate_chunk(_W["sa"], _W["gs"], span[0], span[1], _W["p"])  # type: ignore[arg-type]


def spans(total: int, chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, chunk):
        yield start, min(chunk, total - start)


def mpi_world():  # -> mpi4py.MPI.Comm | None
    """COMM_WORLD when started by ``mpiexec -n K`` with K > 1, else None. mpi4py is imported
    only then, so plain runs never initialise MPI."""
    return mpi.parallel_world()


def _owner(i: int, size: int) -> int:
    """Rank computing chunk i: ranks 1..size-1 in turn (rank 0 collects and writes)."""
    return 1 + i % (size - 1)


def run_mpi_root(
    comm,
    total: int,
    chunk: int,  # noqa: ANN001 - mpi4py is optional
    advance: Callable[[int], None],
) -> Iterator[ChunkResult]:
    """Rank 0: receive chunk results in photon order (MPI keeps each sender's order)."""
    for i, (_, c) in enumerate(spans(total, chunk)):
        probe(comm, _owner(i, comm.Get_size()), _TAG)  # SIGTERM/Ctrl-C can stop the wait
        r = comm.recv(source=_owner(i, comm.Get_size()), tag=_TAG)
        advance(c)
        yield r


def mpi_worker(
    comm,
    sa: SceneArrays,
    gs: np.ndarray,
    total: int,
    p: Params,  # noqa: ANN001
    chunk: int,
) -> None:
    """Ranks > 0: compute the chunks this rank owns and send each to rank 0."""
    me, size = comm.Get_rank(), comm.Get_size()
    for i, (s, c) in enumerate(spans(total, chunk)):
        if _owner(i, size) == me:
            comm.send(propagate_chunk(sa, gs, s, c, p), dest=0, tag=_TAG)


_TAG = 31


def run_numpy(
    sa: SceneArrays,
    gs: np.ndarray,
    total: int,
    p: Params,
    chunk: int,
    workers: int,
    advance: Callable[[int], None],
) -> Iterator[ChunkResult]:
    """Yield chunk results in photon order, with at most 2*workers chunks in flight so
    memory stays bounded whatever the photon count."""
    if workers <= 1 or total <= chunk:
        for s, c in spans(total, chunk):
            r = propagate_chunk(sa, gs, s, c, p)
            advance(c)
            yield r
        return
    ctx = get_context("fork")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(sa, gs, p)
    ) as pool:
        pending: deque[Future[ChunkResult]] = deque()
        it = spans(total, chunk)
        try:
            for span in it:
                pending.append(pool.submit(_work, span))
                if len(pending) >= 2 * workers:
                    break
            while pending:
                r = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(_work, nxt))
                advance(r.count)
                yield r
        except BaseException:  # SIGTERM/Ctrl-C (engine.core.interrupt) or the consumer gave up
            pool.shutdown(wait=True, cancel_futures=True)  # only running chunks finish
            raise
