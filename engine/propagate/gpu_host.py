"""The host side of GPU propagation, shared by the PyCUDA (``cuda``) and CuPy backends.

Why one module: slicing an event into launches that fit the device, the kernel's argument
list, resetting the hit counter and flagmask histogram, copying back only the compacted
hits (and, in development mode, ox/rx/seq), sorting hits into photon order and timing the
kernel are the same whichever library talks to the driver. Each backend supplies a small
``Device`` adapter (allocate, upload, zero, launch, download); everything else lives here
once, so the host-side tests (a fake device whose memory is host memory, running the kernel
compiled for the host) cover both backends.

Device selection also lives here: each process of an MPI job or a Slurm step takes the
device of its node-local rank, modulo the devices it can see (so ``CUDA_VISIBLE_DEVICES``,
which limits what it sees, is respected).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from engine.core.errors import BadInput
from engine.core.mpi import local_rank
from engine.propagate.params import ChunkResult, Params, slice_order
from engine.propagate.scene import SceneArrays

BLOCK = 256
HEADROOM = 0.75  # fraction of free device memory a slice may use
FM_BINS = 65536  # flagmask histogram (flags use 14 bits)
N_KERNEL_ARGS = 26


def choose_device(count: int, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """(device index among the visible ones, why): the node-local rank modulo ``count``,
    so K processes on a node with K devices (or K visible ones) each take their own."""
    if count < 1:
        raise ValueError("no CUDA device to choose from")
    env = os.environ if env is None else env
    rank, var = local_rank(env)
    idx = rank % count
    why = f"device {idx} of {count} visible"
    if "CUDA_VISIBLE_DEVICES" in env:
        why += f" (CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']})"
    if var is not None:
        why += f", {var}={rank}"
    return idx, why


def availability(
    lib: str,
    load: Callable[[], Any],
    count: Callable[[Any], int],
    props: Callable[[Any, int], tuple[str, tuple[int, int]]],
) -> tuple[bool, str]:
    """(True, "NAME (cc X.Y, device I of N visible...)") when the library imports and this
    process's device answers, else (False, one line saying why). ``load`` imports the
    library; ``count`` and ``props`` ask it for the device count and a device's name and
    compute capability."""
    try:
        mod = load()
    except ModuleNotFoundError:
        return False, f"{lib} not installed"
    except Exception as err:  # a broken CUDA install can raise anything on import
        return False, f"{lib} not importable ({type(err).__name__}: {err})".splitlines()[0]
    try:
        n = count(mod)
        if n == 0:
            return False, "no CUDA device"
        idx, why = choose_device(n)
        name, cc = props(mod, idx)
        return True, f"{name} (cc {cc[0]}.{cc[1]}, {why})"
    except BadInput:
        raise
    except Exception as err:
        return False, f"CUDA init failed ({type(err).__name__}: {err})".splitlines()[0]


class Device(Protocol):
    """What a GPU library must do for ``run``; buffers are whatever the library uses."""

    def free_bytes(self) -> int: ...
    def upload(self, a: np.ndarray) -> Any: ...
    def alloc(self, nbytes: int) -> Any: ...
    def null(self) -> Any: ...
    def zero(self, buf: Any, nbytes: int) -> None: ...
    def launch(self, args: Sequence[Any], grid: int, block: int) -> float:
        """Run the kernel to completion; return its device time in seconds."""
        ...

    def download(self, host: np.ndarray, buf: Any) -> None:
        """Copy the first ``host.nbytes`` bytes of ``buf`` into ``host``."""
        ...


def kernel_inputs(sa: SceneArrays, gs: np.ndarray) -> tuple[list[np.ndarray], list[np.int32]]:
    """The kernel's leading arguments: material, emission and surface tables, the geometry
    blobs (engine.propagate.geometry.flatten), gensteps and their cumulative photon ends (for
    the per-thread genstep search), then n_gs, face_ids, n_surf. Shared with the
    host-compiled kernel test so every caller passes the kernel the same arguments."""
    surf = sa.surf if sa.surf.size else np.zeros((1, 4, sa.mat.shape[2]), np.float32)
    arrays = [
        np.ascontiguousarray(a)
        for a in (sa.mat, sa.icdf, surf, sa.geo_i.astype(np.int32), sa.geo_f.astype(np.float64), gs)
    ]
    arrays.append(np.cumsum(gs.view(np.int32)[:, 0, 3].astype(np.int64)).astype(np.uint64))
    counts = [np.int32(len(gs)), np.int32(1 if sa.face_ids else 0), np.int32(sa.surf.shape[0])]
    return arrays, counts


def slice_size(total: int, development: bool, maxrec: int, free: int) -> int:
    """Photons per launch: what fits in HEADROOM of free memory (64 B hit slot per photon,
    plus ox/rx/seq in development), at most 2**31 (the thread index is 32-bit)."""
    per = 64 + (64 + maxrec * 16 + 8 if development else 0)
    return max(1, min(total, int(free * HEADROOM) // per, 2**31))


def run(
    dev: Device,
    sa: SceneArrays,
    gs: np.ndarray,
    total: int,
    p: Params,
    advance: Callable[[int], None],
    stats: dict[str, Any] | None = None,
) -> Iterator[ChunkResult]:
    """Propagate photons [0, total) in launches; yield one ChunkResult per launch, in
    photon order. ``stats`` collects kernel_seconds, launches and slice_photons."""
    stats = {} if stats is None else stats
    stats.update(kernel_seconds=0.0, launches=0)
    maxrec = p.max_bounce + 1
    arrays, counts = kernel_inputs(sa, gs)
    consts = [dev.upload(a) for a in arrays]
    n_slice = slice_size(total, p.development, maxrec, dev.free_bytes())
    stats["slice_photons"] = n_slice
    d_hits = dev.alloc(n_slice * 64)
    d_count = dev.alloc(8)
    d_fm = dev.alloc(4 * FM_BINS)
    if p.development:
        d_ox = dev.alloc(n_slice * 64)
        d_rx = dev.alloc(n_slice * maxrec * 16)
        d_seq = dev.alloc(n_slice * 8)
    else:
        d_ox = d_rx = d_seq = dev.null()
    for start in range(0, total, n_slice):
        count = min(n_slice, total - start)
        dev.zero(d_count, 8)
        dev.zero(d_fm, 4 * FM_BINS)
        args = [
            *consts,
            *counts,
            np.uint64(start),
            np.uint32(count),
            np.uint64(p.seed),
            np.uint32(p.event),
            np.int32(p.max_bounce),
            np.uint32(p.hitmask),
            np.int32(1 if p.development else 0),
            np.float32(p.domain[0]),
            np.float32(p.domain[1]),
            np.float32(sa.eps),
            d_hits,
            d_count,
            d_fm,
            d_ox,
            d_rx,
            d_seq,
        ]
        assert len(args) == N_KERNEL_ARGS
        stats["kernel_seconds"] += dev.launch(args, (count + BLOCK - 1) // BLOCK, BLOCK)
        stats["launches"] += 1
        nh = np.zeros(2, np.uint32)
        dev.download(nh, d_count)
        hits = np.empty((int(nh[0]), 4, 4), np.float32)
        if nh[0]:
            dev.download(hits, d_hits)  # only the compacted hits cross the bus
            order = np.argsort(slice_order(hits, start), kind="stable")
            hits = hits[order]  # atomics give arbitrary order; sort by photon index
        fm = np.zeros(FM_BINS, np.uint32)
        dev.download(fm, d_fm)
        nz = np.flatnonzero(fm)
        res = ChunkResult(start, count, hits, {int(k): int(fm[k]) for k in nz})
        if p.development:
            res.ox = np.empty((count, 4, 4), np.float32)
            res.rx = np.empty((count, maxrec, 2, 4), np.int16)
            res.seq = np.empty(count, np.uint64)
            dev.download(res.ox, d_ox)
            dev.download(res.rx, d_rx)
            dev.download(res.seq, d_seq)
        advance(count)
        yield res
