"""The CUDA backend on PyCUDA (``--backend cuda``, the default GPU backend).

The kernel source is ``assets/kernels/propagate.cu``; it mirrors ``numpy_backend`` step by
step (same Philox keying, same draw blocks for the same decisions, float32 math), so the
backends agree photon by photon up to float rounding. This module only adapts PyCUDA's
driver API to ``gpu_host.Device``: the kernel image comes from ``engine.propagate.kernel``
(NVRTC-compiled, cached per kernel hash and architecture) and is loaded with
``module_from_buffer``, so a GPU node needs the driver, not nvcc; slicing, compaction and
copy-back are ``gpu_host``'s, shared with the CuPy backend. PyCUDA is imported lazily,
only here, so machines without a GPU never need it.
"""

from __future__ import annotations

import atexit
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.core.errors import JobFailed
from engine.propagate import gpu_host, kernel


def _load() -> Any:
    import pycuda.driver as drv  # type: ignore[import-not-found]

    drv.init()
    return drv


def _props(drv: Any, idx: int) -> tuple[str, tuple[int, int]]:
    dev = drv.Device(idx)
    return dev.name(), tuple(dev.compute_capability())


@functools.lru_cache(maxsize=1)
def available() -> tuple[bool, str]:
    """(True, device description) when PyCUDA imports and this process's device
    initialises; else (False, why)."""
    return gpu_host.availability("pycuda", _load, lambda drv: drv.Device.count(), _props)


class PyCudaDevice:
    """``gpu_host.Device`` over PyCUDA: a context on the chosen device, the kernel loaded
    from its compiled image."""

    def __init__(self) -> None:
        drv = _load()
        idx, _ = gpu_host.choose_device(drv.Device.count())
        dev = drv.Device(idx)
        self.drv = drv
        self.ctx = dev.make_context()
        atexit.register(self.ctx.pop)
        self.image = kernel.load_image(tuple(dev.compute_capability()))
        try:
            self.module = drv.module_from_buffer(self.image.data)
        except Exception as err:  # e.g. a cached image built for another chip or toolkit
            where = self.image.path or kernel.KERNEL_PATH
            raise JobFailed(
                f"the CUDA driver refused the {self.image.arch} kernel image "
                f"({type(err).__name__}: {err}); remove it to rebuild".splitlines()[0],
                where,
            ) from None
        self.fn = self.module.get_function(kernel.KERNEL_NAME)

    def free_bytes(self) -> int:
        return int(self.drv.mem_get_info()[0])

    def upload(self, a: np.ndarray) -> Any:
        return self.drv.to_device(np.ascontiguousarray(a))

    def alloc(self, nbytes: int) -> Any:
        return self.drv.mem_alloc(max(1, nbytes))

    def null(self) -> Any:
        return np.intp(0)

    def zero(self, buf: Any, nbytes: int) -> None:
        self.drv.memset_d32(buf, 0, nbytes // 4)

    def launch(self, args: Sequence[Any], grid: int, block: int) -> float:
        start, end = self.drv.Event(), self.drv.Event()
        start.record()
        self.fn(*args, block=(block, 1, 1), grid=(grid, 1))
        end.record()
        end.synchronize()
        return start.time_till(end) / 1e3

    def download(self, host: np.ndarray, buf: Any) -> None:
        self.drv.memcpy_dtoh(host, buf)


@functools.lru_cache(maxsize=1)
def device() -> PyCudaDevice:
    """This process's device, set up once (context, kernel image, module)."""
    return PyCudaDevice()
