"""Host-side tests of both GPU backends, without a GPU: ``fakegpu`` replaces PyCUDA or CuPy
by host memory and the kernel source compiled for the host, so what runs is our code from
the event writer to the driver's doorstep: backend choice, device choice, the NVRTC-compiled
and cached image PyCUDA loads, CuPy's RawModule over the same source and options, and the
shared ``gpu_host`` code (several launches, zeroed counters, device-side compaction, only
hits copied back, the flagmask histogram, development copies, hits in photon order).
The real-GPU counterparts are the ``gpu``-marked tests of test_cuda.py."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from engine.core import mpi
from engine.core.errors import BadInput, JobFailed
from engine.propagate import cuda_backend, cupy_backend, gpu_host, kernel
from engine.propagate.event import Request, propagate
from tests.propagate.conftest import TBOX_DETECT
from tests.propagate.fakegpu import FAKES, FakeGpu, absent

BACKENDS = ("cuda", "cupy")
MODULES = {"cuda": cuda_backend, "cupy": cupy_backend}
LOCAL_RANK_VARS = mpi.LOCAL_RANK_VARS + ("CUDA_VISIBLE_DEVICES",)


def _clear_caches() -> None:
    for m in MODULES.values():
        m.available.cache_clear()
        m.device.cache_clear()


@pytest.fixture
def fake(kernel_lib, monkeypatch, tmp_path):
    """install(backends, **FakeGpu fields) -> FakeGpu: the named libraries faked, the
    others absent; the kernel cache in tmp_path; no launcher's rank variables."""
    monkeypatch.setenv("SKYDECK_KERNEL_CACHE", str(tmp_path / "kcache"))
    for var in LOCAL_RANK_VARS:
        monkeypatch.delenv(var, raising=False)

    def install(backends: tuple[str, ...] = BACKENDS, **kw) -> FakeGpu:
        # room for ~7000 photon slots in production: 30k photons need several launches
        kw.setdefault("free_bytes", int(7000 * 64 / gpu_host.HEADROOM) + 64)
        gpu = FakeGpu(kernel_lib, **kw)
        for name in BACKENDS:
            mods = FAKES[name](gpu) if name in backends else absent(name)
            for k, v in mods.items():
                monkeypatch.setitem(sys.modules, k, v)
        _clear_caches()
        return gpu

    yield install
    _clear_caches()


@pytest.mark.parametrize("backend", BACKENDS)
def test_host_side_production_and_development(fake, tmp_path, backend):
    gpu = fake((backend,))
    n = 30_000
    a = propagate(
        Request(TBOX_DETECT, tmp_path / "np", photons=n, seed=5, backend="numpy", workers=1)
    )
    b = propagate(Request(TBOX_DETECT, tmp_path / "gpu", photons=n, seed=5, backend="auto"))
    assert b["backend"] == backend and b["device"].startswith("host-emulated kernel (cc 9.0")
    assert len(gpu.launches) >= 4 and sum(gpu.launches) == n  # several launches, every photon
    assert b["launches"] == len(gpu.launches) and b["kernel_seconds"] == pytest.approx(
        1e-3 * len(gpu.launches)
    )
    ha, hb = np.load(tmp_path / "np" / "ht.npy"), np.load(tmp_path / "gpu" / "ht.npy")
    idx = hb.view(np.uint32)[:, 3, 2]
    assert np.array_equal(idx, np.sort(idx))  # photon order across atomics and slices
    assert abs(len(ha) - len(hb)) <= 2
    assert a["flagmask_counts"].keys() == b["flagmask_counts"].keys()
    assert sum(b["flagmask_counts"].values()) == n  # histograms zeroed before each launch
    gpu.launches.clear()
    d = propagate(
        Request(
            TBOX_DETECT, tmp_path / "dev", photons=n, seed=5, backend=backend, mode="development"
        )
    )
    assert d["backend"] == backend and len(gpu.launches) >= 2
    ox = np.load(tmp_path / "dev" / "ox.npy")
    assert np.array_equal(ox.view(np.uint32)[:, 3, 2], np.arange(n))
    sel = (ox.view(np.uint32)[:, 3, 3] & (1 << 6)) != 0
    assert np.array_equal(np.load(tmp_path / "dev" / "ht.npy"), ox[sel])
    seq = np.load(tmp_path / "dev" / "seq.npy")
    assert np.mean(seq == np.uint64(0x7CCD)) > 0.85  # TO BT BT SD


def test_both_backends_give_the_same_event(fake, tmp_path):
    """One host-side code path: the PyCUDA and CuPy adapters move identical bytes."""
    fake()
    out = {}
    for backend in BACKENDS:
        propagate(
            Request(
                TBOX_DETECT,
                tmp_path / backend,
                photons=20_000,
                seed=9,
                backend=backend,
                mode="development",
            )
        )
        out[backend] = {
            f: np.load(tmp_path / backend / f) for f in ("ht.npy", "ox.npy", "rx.npy", "seq.npy")
        }
    for f, arr in out["cuda"].items():
        assert np.array_equal(arr, out["cupy"][f]), f


def test_pycuda_loads_the_nvrtc_cubin_from_the_cache(fake, tmp_path, monkeypatch):
    gpu = fake(("cuda",))
    propagate(Request(TBOX_DETECT, tmp_path / "a", photons=1000, backend="cuda"))
    cached = tmp_path / "kcache" / kernel.image_name("sm_90")
    assert cached.is_file() and gpu.images == [cached.read_bytes()]
    assert gpu.images[0][:4] == b"\x7fELF"  # a cubin, not source: the node needs no compiler
    # a fresh process on the same node: the image comes from the cache, nothing compiles
    monkeypatch.setattr(kernel, "compile_image", lambda *a, **k: pytest.fail("compiled again"))
    _clear_caches()
    propagate(Request(TBOX_DETECT, tmp_path / "b", photons=1000, backend="cuda"))
    assert len(gpu.images) == 2 and gpu.images[1] == gpu.images[0]


def test_cupy_compiles_the_same_source_and_options(fake, tmp_path):
    gpu = fake(("cupy",))
    propagate(Request(TBOX_DETECT, tmp_path / "a", photons=1000, backend="cupy"))
    assert gpu.modules == [(kernel.kernel_source(), tuple(kernel.compile_options()))]


def test_auto_prefers_pycuda_then_cupy(fake, tmp_path):
    fake()
    assert propagate(Request(TBOX_DETECT, tmp_path / "a", photons=100))["backend"] == "cuda"
    fake(("cupy",))
    m = propagate(Request(TBOX_DETECT, tmp_path / "b", photons=100))
    assert m["backend"] == "cupy"
    fake(())
    m = propagate(Request(TBOX_DETECT, tmp_path / "c", photons=100, workers=1))
    assert m["backend"] == "numpy"
    assert (
        m["device"]
        == "cpu (cuda unavailable: pycuda not installed; cupy unavailable: cupy not installed)"
    )
    with pytest.raises(BadInput, match="cupy backend unavailable: cupy not installed"):
        propagate(Request(TBOX_DETECT, tmp_path / "d", photons=100, backend="cupy"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_rank_takes_its_own_device(fake, tmp_path, monkeypatch, backend):
    gpu = fake((backend,), count=2)
    monkeypatch.setenv("SLURM_LOCALID", "3")
    m = propagate(Request(TBOX_DETECT, tmp_path / "a", photons=100, backend=backend))
    assert gpu.chosen == [1]
    assert m["device"] == "host-emulated kernel (cc 9.0, device 1 of 2 visible, SLURM_LOCALID=3)"


def test_an_image_the_driver_refuses_is_one_line_naming_the_file(fake, tmp_path):
    fake(("cuda",), refuse_images=True)
    with pytest.raises(JobFailed) as err:
        propagate(Request(TBOX_DETECT, tmp_path / "a", photons=100, backend="cuda"))
    text = str(err.value)
    assert text.startswith(str(tmp_path / "kcache" / kernel.image_name("sm_90")))
    assert "the CUDA driver refused the sm_90 kernel image (RuntimeError: cuModuleLoadData" in text
    assert "remove it to rebuild" in text and "\n" not in text
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("backend", BACKENDS)
def test_host_side_cerenkov_and_scintillation_gensteps(fake, tmp_path, backend):
    """A genstep file of both step kinds through a GPU backend end to end (several
    launches): the same hits, photon for photon, as the NumPy backend gives."""
    from engine.core.workspace import SCENES
    from engine.mock.gensteps import scintillation_tracks
    from engine.propagate.scene import load_scene

    gpu = fake((backend,))
    scene = SCENES / "scint-tank.toml"
    path = tmp_path / "gensteps.npy"
    np.save(path, scintillation_tracks(load_scene(scene), 20_000, seed=3))
    a = propagate(
        Request(scene, tmp_path / "np", gensteps=path, seed=5, backend="numpy", workers=1)
    )
    b = propagate(Request(scene, tmp_path / "gpu", gensteps=path, seed=5, backend=backend))
    assert b["backend"] == backend and len(gpu.launches) >= 2 and a["photons"] == b["photons"]
    ha, hb = np.load(tmp_path / "np" / "ht.npy"), np.load(tmp_path / "gpu" / "ht.npy")
    ia, ib = ha.view(np.uint32)[:, 3, 2], hb.view(np.uint32)[:, 3, 2]
    assert len(np.setxor1d(ia, ib)) <= 0.002 * a["photons"]
    both = np.intersect1d(ia, ib)
    fa = ha.view(np.uint32)[np.isin(ia, both), 3]
    fb = hb.view(np.uint32)[np.isin(ib, both), 3]
    assert np.array_equal(fa, fb)  # flags, sensors, indices, flagmasks (CK|... and SI|...)
    assert b["gensteps"]["kinds"].keys() == {"CERENKOV", "SCINTILLATION"}
