"""The GPU backends on a real GPU (``gpu``-marked: each skips, with the reason, where its
library or a device is missing): for the same seed they agree with the NumPy backend photon
by photon, and the event's metadata carries the kernel time. Without a GPU, ``auto`` falls
back to NumPy and says why. The host-side code both backends share is tested without a GPU
in test_gpu_host_side.py; the kernel's compile in test_nvrtc.py."""

from __future__ import annotations

import numpy as np
import pytest

from engine.core.workspace import SCENES
from engine.propagate import gpu_host
from engine.propagate.backends import GPU_BACKENDS, gpu_module
from engine.propagate.event import Request, propagate
from tests.propagate.conftest import TBOX_DETECT, base_scene


def test_auto_falls_back_to_numpy_and_says_why(tmp_path):
    if any(gpu_module(b).available()[0] for b in GPU_BACKENDS):
        pytest.skip("a GPU is present: auto picks it here")
    meta = propagate(Request(TBOX_DETECT, tmp_path / "ev", photons=100, backend="auto", workers=1))
    assert meta["backend"] == "numpy" and "cuda unavailable" in meta["device"]
    assert "cupy unavailable" in meta["device"]


def _gpu_or_skip(backend: str) -> None:
    ok, why = gpu_module(backend).available()
    if not ok:
        pytest.skip(f"no {backend} GPU: {why}")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("scene", ["tbox", "mixed", "cerenkov", "scintillation"])
def test_gpu_numpy_parity(tmp_path, write_scene, scene, backend):
    _gpu_or_skip(backend)
    gensteps = None
    if scene in ("cerenkov", "scintillation"):  # muons in water; electrons in scintillator
        from engine.mock.gensteps import cerenkov_tracks, scintillation_tracks
        from engine.propagate.scene import load_scene

        path = SCENES / ("water-tank.toml" if scene == "cerenkov" else "scint-tank.toml")
        maker = cerenkov_tracks if scene == "cerenkov" else scintillation_tracks
        gensteps = tmp_path / "gensteps.npy"
        np.save(gensteps, maker(load_scene(path), 200_000, 5))
    elif scene == "tbox":
        path = TBOX_DETECT
    else:  # scattering, absorption, reemission, diffuse and specular surfaces, a sphere
        doc = base_scene(
            objects=[
                {
                    "shape": "sphere",
                    "center": [0.0, 0.0, 20.0],
                    "radius": 30.0,
                    "material": "Glass",
                },
                {
                    "shape": "box",
                    "center": [0.0, 60.0, 0.0],
                    "half_size": [20.0, 10.0, 20.0],
                    "material": "Glass",
                    "surface": "mirror",
                },
            ]
        )
        doc["materials"]["Vacuum"].update(
            scattering_length=80.0, absorption_length=300.0, reemission_prob=0.3
        )
        doc["surfaces"]["wall"] = {"detect": 0.5, "absorb": 0.2, "reflect_diffuse": 0.3}
        doc["surfaces"]["mirror"] = {"reflect_specular": 1.0}
        doc["container"]["surface"] = "wall"
        doc["source"].update(type="point", position=[0.0, 0.0, -50.0])
        del doc["source"]["direction"]
        path = write_scene(doc)
    n = None if gensteps is not None else 200_000
    a = propagate(
        Request(
            path,
            tmp_path / "np",
            photons=n,
            seed=11,
            backend="numpy",
            mode="development",
            gensteps=gensteps,
        )
    )
    b = propagate(
        Request(
            path,
            tmp_path / "gpu",
            photons=n,
            seed=11,
            backend=backend,
            mode="development",
            gensteps=gensteps,
        )
    )
    n = a["photons"]
    assert a["backend"] == "numpy" and b["backend"] == backend
    assert b["launches"] >= 1 and b["kernel_seconds"] > 0
    oa, ob = np.load(tmp_path / "np" / "ox.npy"), np.load(tmp_path / "gpu" / "ox.npy")
    sa, sb = np.load(tmp_path / "np" / "seq.npy"), np.load(tmp_path / "gpu" / "seq.npy")
    same_hist = sa == sb
    # same draws for the same decisions: histories agree except where float rounding
    # (libm vs CUDA sin/cos/log ulps) flips a comparison
    assert same_hist.mean() > 0.999, same_hist.mean()
    assert np.allclose(oa[same_hist, 0, :3], ob[same_hist, 0, :3], atol=1e-2)
    assert np.allclose(oa[same_hist, 0, 3], ob[same_hist, 0, 3], rtol=1e-4, atol=1e-4)
    ha, hb = np.load(tmp_path / "np" / "ht.npy"), np.load(tmp_path / "gpu" / "ht.npy")
    assert abs(len(ha) - len(hb)) <= 0.001 * n


@pytest.mark.gpu
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_gpu_production_slices_and_hit_order(tmp_path, backend, monkeypatch):
    """A production event forced into several launches (a small HEADROOM) keeps every
    photon, and its hits come back in photon order, as one launch gives them."""
    _gpu_or_skip(backend)
    one = propagate(
        Request(TBOX_DETECT, tmp_path / "one", photons=300_000, seed=4, backend=backend)
    )
    free = gpu_module(backend).device().free_bytes()
    monkeypatch.setattr(gpu_host, "HEADROOM", 100_000 * 64 / free)
    many = propagate(
        Request(TBOX_DETECT, tmp_path / "many", photons=300_000, seed=4, backend=backend)
    )
    assert one["launches"] == 1 and many["launches"] >= 3
    h1, hm = np.load(tmp_path / "one" / "ht.npy"), np.load(tmp_path / "many" / "ht.npy")
    assert np.array_equal(h1, hm)
    assert one["flagmask_counts"] == many["flagmask_counts"]


def test_slices_when_the_event_exceeds_device_memory():
    free = 80 * 2**30  # an H100's worth
    prod = gpu_host.slice_size(10**10, False, 10, free)
    assert prod * 64 <= free and 10**10 / prod > 1  # 1e10 photons: several launches
    dev = gpu_host.slice_size(10**10, True, 10, free)
    assert dev < prod and dev * (64 + 64 + 160 + 8) <= free
    assert gpu_host.slice_size(1000, False, 10, free) == 1000  # small events: one launch
