"""The CUDA backend (PyCUDA): one thread per photon, hits compacted on the device.

The kernel source is ``assets/kernels/propagate.cu``; it mirrors ``numpy_backend`` step by
step (same Philox keying, same draw blocks for the same decisions, float32 math), so the
two backends agree photon by photon up to float rounding. PyCUDA is imported lazily, only
here, so machines without a GPU never need it.

Memory: in production only a hit buffer (64 B per photon slot, worst case every photon a
hit) and a counter live on the device; the photon loop keeps the photon in registers.
Events larger than the device can hold run as several launches ("slices", as Opticks'
max-slot heuristic), each launch's hits compacted with an atomic counter and copied back
alone. Development mode adds ox/rx/seq buffers per slice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from engine.propagate.numpy_backend import GEN_BLOCKS, ChunkResult, Params, slice_order
from engine.propagate.scene import ICDF_N, WL_MIN, WL_N, WL_STEP, SceneArrays
from engine.workspace import ASSETS

KERNEL_PATH = ASSETS / "kernels" / "propagate.cu"
BLOCK = 256
HEADROOM = 0.75  # fraction of free device memory a slice may use


def kernel_source() -> str:
    return KERNEL_PATH.read_text()


def compile_options() -> list[str]:
    """Defines shared with the NumPy backend, so both read the same constants."""
    return [f"-DWL_MIN={WL_MIN}f", f"-DWL_STEP={WL_STEP}f", f"-DWL_N={WL_N}",
            f"-DICDF_N={ICDF_N}", f"-DGEN_BLOCKS={GEN_BLOCKS}",
            "--fmad=false"]  # no FMA contraction: NumPy rounds a*b and +c separately


@functools.lru_cache(maxsize=1)
def available() -> tuple[bool, str]:
    """(True, device name) when PyCUDA imports and a CUDA device initialises."""
    try:
        import pycuda.driver as drv  # type: ignore[import-not-found]
    except ModuleNotFoundError:
        return False, "pycuda not installed"
    except Exception as err:  # a broken CUDA install can raise anything on import
        return False, f"pycuda not importable ({type(err).__name__}: {err})".splitlines()[0]
    try:
        drv.init()
        if drv.Device.count() == 0:
            return False, "no CUDA device"
        dev = drv.Device(0)
        return True, f"{dev.name()} (cc {'.'.join(map(str, dev.compute_capability()))})"
    except Exception as err:
        return False, f"CUDA init failed ({type(err).__name__}: {err})".splitlines()[0]


_MODULE: dict[str, Any] = {}


def _context() -> Any:
    """Create (once) a context on device 0 and compile (once) the kernel; PyCUDA caches the
    cubin on disk too, keyed by source and options, so later processes skip nvcc."""
    if "mod" in _MODULE:
        return _MODULE
    import pycuda.driver as drv  # type: ignore[import-not-found]
    from pycuda.compiler import SourceModule  # type: ignore[import-not-found]

    drv.init()
    ctx = drv.Device(0).make_context()
    import atexit

    atexit.register(ctx.pop)
    cache = Path.home() / ".cache" / "skydeck" / "cuda"
    cache.mkdir(parents=True, exist_ok=True)
    mod = SourceModule(kernel_source(), options=compile_options(), no_extern_c=True,
                       cache_dir=str(cache))
    _MODULE.update(drv=drv, ctx=ctx, mod=mod, fn=mod.get_function("propagate"))
    return _MODULE


def kernel_inputs(sa: SceneArrays, gs: np.ndarray) -> tuple[list[np.ndarray], list[np.int32]]:
    """The kernel's leading arguments: scene arrays, gensteps and their cumulative photon
    ends (for the per-thread genstep search), then n_gs, n_obj, n_surf. Shared with the
    host-compiled kernel test so both call the kernel the same way."""
    arrays = [np.ascontiguousarray(a) for a in (
        sa.mat, sa.icdf, sa.surf if sa.surf.size else np.zeros((1, 4), np.float32),
        sa.objs if sa.objs.size else np.zeros((1, 10), np.float32), sa.container, gs)]
    arrays.append(np.cumsum(gs.view(np.int32)[:, 0, 3].astype(np.int64)).astype(np.uint64))
    counts = [np.int32(len(gs)), np.int32(len(sa.objs)), np.int32(sa.surf.shape[0])]
    return arrays, counts


def slice_size(total: int, development: bool, maxrec: int, free: int) -> int:
    per = 64 + (64 + maxrec * 16 + 8 if development else 0)
    return max(1, min(total, int(free * HEADROOM) // per, 2**31))  # thread index is 32-bit


def run(sa: SceneArrays, gs: np.ndarray, total: int, p: Params,
        advance: Callable[[int], None]) -> Iterator[ChunkResult]:
    m = _context()
    drv, fn = m["drv"], m["fn"]
    maxrec = p.max_bounce + 1
    arrays, counts = kernel_inputs(sa, gs)
    consts = [drv.to_device(a) for a in arrays]
    free, _ = drv.mem_get_info()
    n_slice = slice_size(total, p.development, maxrec, free)
    d_hits = drv.mem_alloc(max(1, n_slice) * 64)
    d_count = drv.mem_alloc(8)
    d_fm = drv.mem_alloc(4 * 65536)  # flagmask histogram (flags use 14 bits)
    if p.development:
        d_ox = drv.mem_alloc(n_slice * 64)
        d_rx = drv.mem_alloc(n_slice * maxrec * 16)
        d_seq = drv.mem_alloc(n_slice * 8)
    else:
        d_ox = d_rx = d_seq = np.intp(0)
    for start in range(0, total, n_slice):
        count = min(n_slice, total - start)
        drv.memset_d32(d_count, 0, 2)
        drv.memset_d32(d_fm, 0, 65536)
        grid = ((count + BLOCK - 1) // BLOCK, 1)
        fn(*consts, *counts, np.uint64(start), np.uint32(count),
           np.uint64(p.seed), np.uint32(p.event), np.int32(p.max_bounce), np.uint32(p.hitmask),
           np.int32(1 if p.development else 0), np.float32(p.domain[0]), np.float32(p.domain[1]),
           d_hits, d_count, d_fm, d_ox, d_rx, d_seq, block=(BLOCK, 1, 1), grid=grid)
        drv.Context.synchronize()
        nh = np.zeros(2, np.uint32)
        drv.memcpy_dtoh(nh, d_count)
        hits = np.empty((int(nh[0]), 4, 4), np.float32)
        if nh[0]:
            drv.memcpy_dtoh(hits, d_hits)  # only the compacted hits cross the bus
            order = np.argsort(slice_order(hits, start), kind="stable")
            hits = hits[order]  # atomics give arbitrary order; sort by photon index
        fm = np.zeros(65536, np.uint32)
        drv.memcpy_dtoh(fm, d_fm)
        nz = np.flatnonzero(fm)
        res = ChunkResult(start, count, hits, {int(k): int(fm[k]) for k in nz})
        if p.development:
            res.ox = np.empty((count, 4, 4), np.float32)
            res.rx = np.empty((count, maxrec, 2, 4), np.int16)
            res.seq = np.empty(count, np.uint64)
            drv.memcpy_dtoh(res.ox, d_ox)
            drv.memcpy_dtoh(res.rx, d_rx)
            drv.memcpy_dtoh(res.seq, d_seq)
        advance(count)
        yield res
