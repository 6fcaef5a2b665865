"""cuda_backend.run end to end without a GPU: a fake ``pycuda`` whose "device" memory is
host memory and whose kernel launch runs the kernel source compiled for the host (see
test_kernel_host.py). This exercises the backend's own code: argument order, slicing into
several launches, device-side hit compaction, copying back only hits, the flagmask
histogram, development copies, and sorting hits into photon order."""

from __future__ import annotations

import ctypes
import sys
import types

import numpy as np
import pytest

from engine.propagate import cuda_backend
from engine.propagate.event import Request, propagate
from tests.propagate.conftest import TBOX_DETECT
from tests.propagate.test_kernel_host import kernel_lib  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(
    __import__("shutil").which("g++") is None, reason="g++ not on PATH")


class FakeAlloc:
    def __init__(self, nbytes: int) -> None:
        self.buf = np.zeros(max(1, nbytes), np.uint8)

    @property
    def ptr(self) -> int:
        return self.buf.ctypes.data


def make_fake_pycuda(lib, free_bytes: int, launches: list[int]):
    drv = types.ModuleType("pycuda.driver")
    drv.init = lambda: None

    class Device:
        def __init__(self, i: int) -> None:
            pass

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return "host-emulated kernel"

        def compute_capability(self) -> tuple[int, int]:
            return (9, 0)

        def make_context(self):
            return types.SimpleNamespace(pop=lambda: None)

    drv.Device = Device
    drv.Context = types.SimpleNamespace(synchronize=lambda: None)
    drv.mem_get_info = lambda: (free_bytes, free_bytes)
    drv.mem_alloc = lambda n: FakeAlloc(int(n))

    def to_device(a):
        al = FakeAlloc(a.nbytes)
        al.buf[:] = np.ascontiguousarray(a).view(np.uint8).reshape(-1)
        return al

    drv.to_device = to_device

    def memset_d32(al, value, count):
        al.buf.view(np.uint32)[:count] = value

    drv.memset_d32 = memset_d32

    def memcpy_dtoh(host, al):
        host.view(np.uint8).reshape(-1)[:] = al.buf[: host.nbytes]

    drv.memcpy_dtoh = memcpy_dtoh

    def launch(*args, block, grid):
        cargs = []
        for a in args:
            if isinstance(a, FakeAlloc):
                cargs.append(ctypes.c_void_p(a.ptr))
            elif isinstance(a, np.intp):
                cargs.append(ctypes.c_void_p(int(a) or None))
            elif isinstance(a, np.float32):
                cargs.append(ctypes.c_float(float(a)))
            elif isinstance(a, np.uint64):
                cargs.append(ctypes.c_ulonglong(int(a)))
            elif isinstance(a, np.uint32):
                cargs.append(ctypes.c_uint(int(a)))
            elif isinstance(a, np.int32):
                cargs.append(ctypes.c_int(int(a)))
            else:
                raise TypeError(f"kernel argument of unexpected type {type(a)}")
        assert len(cargs) == 25 and block[0] * grid[0] >= int(args[11])
        launches.append(int(args[11]))
        lib.run_host(*cargs)

    compiler = types.ModuleType("pycuda.compiler")

    class SourceModule:
        def __init__(self, src, options, no_extern_c, cache_dir):
            assert 'extern "C" __global__ void propagate' in src and "--fmad=false" in options

        def get_function(self, name):
            assert name == "propagate"
            return launch

    compiler.SourceModule = SourceModule
    pkg = types.ModuleType("pycuda")
    pkg.driver, pkg.compiler = drv, compiler
    return {"pycuda": pkg, "pycuda.driver": drv, "pycuda.compiler": compiler}


@pytest.fixture
def fake_gpu(kernel_lib, monkeypatch):  # noqa: F811
    launches: list[int] = []
    # room for ~7000 photon slots in production: 30k photons need several launches
    mods = make_fake_pycuda(kernel_lib, int(7000 * 64 / cuda_backend.HEADROOM) + 64, launches)
    for k, v in mods.items():
        monkeypatch.setitem(sys.modules, k, v)
    monkeypatch.setattr(cuda_backend, "available", lambda: (True, "host-emulated kernel"))
    cuda_backend._MODULE.clear()
    yield launches
    cuda_backend._MODULE.clear()


def test_cuda_backend_production_and_development(fake_gpu, tmp_path):
    n = 30_000
    a = propagate(Request(TBOX_DETECT, tmp_path / "np", photons=n, seed=5, backend="numpy",
                          workers=1))
    b = propagate(Request(TBOX_DETECT, tmp_path / "cu", photons=n, seed=5, backend="auto"))
    assert b["backend"] == "cuda" and b["device"] == "host-emulated kernel"
    assert len(fake_gpu) >= 4 and sum(fake_gpu) == n  # several launches cover every photon
    ha, hb = np.load(tmp_path / "np" / "ht.npy"), np.load(tmp_path / "cu" / "ht.npy")
    assert np.array_equal(hb.view(np.uint32)[:, 3, 2], np.sort(hb.view(np.uint32)[:, 3, 2]))
    assert abs(len(ha) - len(hb)) <= 2
    assert a["flagmask_counts"].keys() == b["flagmask_counts"].keys()
    assert sum(b["flagmask_counts"].values()) == n
    fake_gpu.clear()
    d = propagate(Request(TBOX_DETECT, tmp_path / "dev", photons=n, seed=5, backend="cuda",
                          mode="development"))
    assert d["backend"] == "cuda" and len(fake_gpu) >= 2
    ox = np.load(tmp_path / "dev" / "ox.npy")
    assert np.array_equal(ox.view(np.uint32)[:, 3, 2], np.arange(n))
    sel = (ox.view(np.uint32)[:, 3, 3] & (1 << 6)) != 0
    assert np.array_equal(np.load(tmp_path / "dev" / "ht.npy"), ox[sel])
    seq = np.load(tmp_path / "dev" / "seq.npy")
    assert np.mean(seq == np.uint64(0x7CCD)) > 0.85  # TO BT BT SD
