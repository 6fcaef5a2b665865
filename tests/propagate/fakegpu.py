"""Fake ``pycuda`` and ``cupy`` modules whose "device" is host memory and whose kernel
launch runs the kernel source compiled for the host (conftest.py's ``kernel_lib``).

They stand in for the two GPU libraries only; the code under test is everything of ours
between the event writer and the driver: backend selection, device choice, the NVRTC
compile and kernel cache (PyCUDA's ``module_from_buffer`` receives the real cubin), the
shared host side in ``gpu_host`` (slices, kernel arguments, zeroing, compaction, copy-back,
hit order) and each backend's adapter. Fresh buffers are poisoned (0xFF bytes) so a counter
or histogram that is not zeroed before a launch shows.

A launch checks every argument against the kernel's signature (pointer positions take a
device buffer or the library's null, scalars the exact NumPy type), so a shifted or
mistyped argument fails here as it would on a GPU.
"""

from __future__ import annotations

import ctypes
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# the kernel's parameters (assets/kernels/propagate.cu): P pointer, i int32, I uint32,
# Q uint64, f float32
SIGNATURE = "PPPPPPPiiiQIQIiIifffPPPPPP"
_SCALARS = {
    "i": (np.int32, ctypes.c_int),
    "I": (np.uint32, ctypes.c_uint),
    "Q": (np.uint64, ctypes.c_ulonglong),
    "f": (np.float32, ctypes.c_float),
}
POISON = 0xFF


@dataclass
class FakeGpu:
    """What the fakes saw: launches (photons per launch), images loaded, modules built,
    the device index chosen."""

    lib: ctypes.CDLL
    free_bytes: int
    count: int = 1
    cc: tuple[int, int] = (9, 0)
    launches: list[int] = field(default_factory=list)
    images: list[bytes] = field(default_factory=list)
    modules: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    chosen: list[int] = field(default_factory=list)
    refuse_images: bool = False  # module_from_buffer fails as for an image of another chip

    def launch(
        self, args: tuple[Any, ...], grid: int, block: int, pointer: Callable[[Any], int | None]
    ) -> None:
        assert len(args) == len(SIGNATURE), f"{len(args)} kernel arguments, not {len(SIGNATURE)}"
        cargs: list[Any] = []
        for i, (kind, a) in enumerate(zip(SIGNATURE, args, strict=True)):
            if kind == "P":
                cargs.append(ctypes.c_void_p(pointer(a)))
            else:
                want, ctype = _SCALARS[kind]
                assert type(a) is want, (
                    f"argument {i}: {type(a).__name__}, kernel wants {want.__name__}"
                )
                cargs.append(ctype(a.item()))
        count = int(args[11])
        assert block * grid >= count, "grid does not cover the slice"
        self.launches.append(count)
        self.lib.run_host(*cargs)


def _poisoned(nbytes: int) -> np.ndarray:
    return np.full(max(1, nbytes), POISON, np.uint8)


# ---------------------------------------------------------------------------- pycuda


class PyCudaAlloc:
    def __init__(self, nbytes: int) -> None:
        self.buf = _poisoned(nbytes)


def fake_pycuda(gpu: FakeGpu) -> dict[str, types.ModuleType]:
    drv = types.ModuleType("pycuda.driver")
    drv.init = lambda: None

    class Device:
        def __init__(self, i: int) -> None:
            assert 0 <= i < gpu.count
            self.i = i

        @staticmethod
        def count() -> int:
            return gpu.count

        def name(self) -> str:
            return "host-emulated kernel"

        def compute_capability(self) -> tuple[int, int]:
            return gpu.cc

        def make_context(self) -> Any:
            gpu.chosen.append(self.i)
            return types.SimpleNamespace(pop=lambda: None)

    class Event:
        def record(self, stream: Any = None) -> None:
            pass

        def synchronize(self) -> None:
            pass

        def time_till(self, other: Event) -> float:
            return 1.0  # ms

    def to_device(a: np.ndarray) -> PyCudaAlloc:
        al = PyCudaAlloc(a.nbytes)
        al.buf[: a.nbytes] = np.ascontiguousarray(a).view(np.uint8).reshape(-1)
        return al

    def memset_d32(al: PyCudaAlloc, value: int, count: int) -> None:
        al.buf.view(np.uint32)[:count] = value

    def memcpy_dtoh(host: np.ndarray, al: PyCudaAlloc) -> None:
        host.view(np.uint8).reshape(-1)[:] = al.buf[: host.nbytes]

    def pointer(a: Any) -> int | None:
        if isinstance(a, PyCudaAlloc):
            return a.buf.ctypes.data
        assert type(a) is np.intp and a == 0, f"not a device pointer: {a!r}"
        return None

    class Module:
        def get_function(self, name: str) -> Callable[..., None]:
            assert name == "propagate"

            def fn(*args: Any, block: tuple[int, int, int], grid: tuple[int, int]) -> None:
                gpu.launch(args, grid[0], block[0], pointer)

            return fn

    def module_from_buffer(data: bytes) -> Module:
        gpu.images.append(bytes(data))
        if gpu.refuse_images:
            raise RuntimeError("cuModuleLoadData failed: device kernel image is invalid")
        return Module()

    drv.Device = Device
    drv.Event = Event
    drv.mem_get_info = lambda: (gpu.free_bytes, gpu.free_bytes)
    drv.mem_alloc = lambda n: PyCudaAlloc(int(n))
    drv.to_device = to_device
    drv.memset_d32 = memset_d32
    drv.memcpy_dtoh = memcpy_dtoh
    drv.module_from_buffer = module_from_buffer
    pkg = types.ModuleType("pycuda")
    pkg.driver = drv
    return {"pycuda": pkg, "pycuda.driver": drv}


# ---------------------------------------------------------------------------- cupy


class CupyArray(np.ndarray):
    """A host array posing as a CuPy device array (``get(out=...)`` copies back)."""

    def get(self, out: np.ndarray | None = None) -> np.ndarray:
        host = np.asarray(self)
        if out is None:
            return host.copy()
        assert out.shape == host.shape and out.dtype == host.dtype and out.flags.c_contiguous
        out[...] = host
        return out


def fake_cupy(gpu: FakeGpu) -> dict[str, types.ModuleType]:
    cp = types.ModuleType("cupy")
    cuda = types.ModuleType("cupy.cuda")
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: gpu.count,
        getDeviceProperties=lambda i: {
            "name": b"host-emulated kernel",
            "major": gpu.cc[0],
            "minor": gpu.cc[1],
        },
        memGetInfo=lambda: (gpu.free_bytes, gpu.free_bytes),
    )

    class Device:
        def __init__(self, i: int) -> None:
            assert 0 <= i < gpu.count
            self.i = i

        def use(self) -> None:
            gpu.chosen.append(self.i)

    class Event:
        def record(self, stream: Any = None) -> None:
            pass

        def synchronize(self) -> None:
            pass

    def pointer(a: Any) -> int | None:
        if isinstance(a, CupyArray):
            return a.ctypes.data
        assert type(a) is np.uint64 and a == 0, f"not a device pointer: {a!r}"
        return None

    class RawModule:
        def __init__(self, code: str, options: tuple[str, ...], backend: str) -> None:
            assert backend == "nvrtc"
            gpu.modules.append((code, options))

        def get_function(self, name: str) -> Callable[..., None]:
            assert name == "propagate"

            def fn(grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
                gpu.launch(args, grid[0], block[0], pointer)

            return fn

    def asarray(a: np.ndarray) -> CupyArray:
        return np.array(a, copy=True).view(CupyArray)

    def empty(n: int, dtype: Any) -> CupyArray:
        assert dtype is np.uint8
        return _poisoned(int(n)).view(CupyArray)

    cuda.runtime = runtime
    cuda.Device = Device
    cuda.Event = Event
    cuda.get_elapsed_time = lambda a, b: 1.0  # ms
    cp.cuda = cuda
    cp.uint8 = np.uint8
    cp.asarray = asarray
    cp.empty = empty
    cp.RawModule = RawModule
    cp.get_default_memory_pool = lambda: types.SimpleNamespace(free_all_blocks=lambda: None)
    return {"cupy": cp, "cupy.cuda": cuda}


FAKES = {"cuda": fake_pycuda, "cupy": fake_cupy}


def absent(name: str) -> dict[str, None]:
    """sys.modules entries that make ``import`` of the backend's library fail as if it were
    not installed (ModuleNotFoundError)."""
    return {
        "cuda": {"pycuda": None, "pycuda.driver": None},
        "cupy": {"cupy": None, "cupy.cuda": None},
    }[name]
