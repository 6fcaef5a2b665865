"""The CUDA backend on CuPy (``--backend cupy``): the same kernel, a second host library.

Why: CuPy ships as binary wheels with its own NVRTC, so a site with CuPy needs no build
(PyCUDA compiles against the local CUDA headers), and the kernel can be proven on a machine
where PyCUDA fails to build. ``RawModule`` compiles the very source and options the PyCUDA
backend uses (``engine.propagate.kernel``); CuPy caches the result itself. Everything on
the host side (slices, arguments, compaction, copy-back, hit order) is ``gpu_host``'s, the
code the PyCUDA backend runs too; this module only adapts CuPy to ``gpu_host.Device``.
CuPy is imported lazily, only here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.propagate import gpu_host, kernel


def _load() -> Any:
    import cupy  # type: ignore[import-not-found]

    return cupy


def _props(cp: Any, idx: int) -> tuple[str, tuple[int, int]]:
    pr = cp.cuda.runtime.getDeviceProperties(idx)
    name = pr["name"]
    name = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return name, (int(pr["major"]), int(pr["minor"]))


@functools.lru_cache(maxsize=1)
def available() -> tuple[bool, str]:
    """(True, device description) when CuPy imports and this process's device answers."""
    return gpu_host.availability("cupy", _load, lambda cp: cp.cuda.runtime.getDeviceCount(), _props)


class CupyDevice:
    """``gpu_host.Device`` over CuPy: buffers are uint8 CuPy arrays on the chosen device."""

    def __init__(self) -> None:
        cp = _load()
        self.cp = cp
        idx, _ = gpu_host.choose_device(cp.cuda.runtime.getDeviceCount())
        cp.cuda.Device(idx).use()
        self.module = cp.RawModule(
            code=kernel.kernel_source(), options=tuple(kernel.compile_options()), backend="nvrtc"
        )
        self.fn = self.module.get_function(kernel.KERNEL_NAME)

    def free_bytes(self) -> int:
        self.cp.get_default_memory_pool().free_all_blocks()  # the pool's cache is free too
        return int(self.cp.cuda.runtime.memGetInfo()[0])

    def upload(self, a: np.ndarray) -> Any:
        return self.cp.asarray(np.ascontiguousarray(a))

    def alloc(self, nbytes: int) -> Any:
        return self.cp.empty(max(1, nbytes), dtype=self.cp.uint8)

    def null(self) -> Any:
        return np.uint64(0)

    def zero(self, buf: Any, nbytes: int) -> None:
        buf[:nbytes].fill(0)

    def launch(self, args: Sequence[Any], grid: int, block: int) -> float:
        start, end = self.cp.cuda.Event(), self.cp.cuda.Event()
        start.record()
        self.fn((grid,), (block,), tuple(args))
        end.record()
        end.synchronize()
        return float(self.cp.cuda.get_elapsed_time(start, end)) / 1e3

    def download(self, host: np.ndarray, buf: Any) -> None:
        flat = host.reshape(-1).view(np.uint8)
        buf[: flat.nbytes].get(out=flat)


@functools.lru_cache(maxsize=1)
def device() -> CupyDevice:
    """This process's device, set up once (device chosen, kernel compiled by CuPy)."""
    return CupyDevice()
