"""Gensteps against Geant4 (docs/geant4.md, "Gensteps A/B"): Geant4 shoots the particle,
tracks every optical photon itself and records its hits (``geant4 gensteps --mode track``)
while it collects the gensteps of the same steps; skydeck then generates and propagates
those gensteps. Same primaries, same charged tracks, same photon counts: the photons'
cone angles and spectra, and the hits' counts, times, wavelengths and faces must agree
within their statistics. A 1 GeV muon crossing the 2 m water tank (Cerenkov); 2 MeV
electrons stopping in the liquid scintillator (scintillation in two time components, and
some Cerenkov light). The genstep file from the collector also runs through
``skydeck-engine propagate`` and through the pipeline (a delivery carrying it)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from engine.core.workspace import SCENES
from engine.propagate import flags as F
from engine.propagate import gensteps as G
from engine.propagate.generate import generate, genstep_of
from engine.propagate.generate.kinds import CERENKOV, SCINTILLATION
from engine.propagate.scene import load_scene
from tests.geant4.conftest import agree, counts_agree, engine, engine_json

WATER = SCENES / "water-tank.toml"
SCINT = SCENES / "scint-tank.toml"


def _run(tmp: Path, scene: Path, seed: int, *gun: str) -> tuple[dict, Path, Path, Path]:
    gs_path, g4 = tmp / "gensteps.npy", tmp / "geant4"
    summary = engine_json(
        "geant4",
        "gensteps",
        scene,
        "-o",
        gs_path,
        "--mode",
        "track",
        "--track-photons",
        g4,
        "--seed",
        seed,
        *gun,
    )
    sky = tmp / "skydeck"
    r = engine(
        "propagate",
        scene,
        "-o",
        sky,
        "--gensteps",
        gs_path,
        "--seed",
        seed,
        "--backend",
        "numpy",
        "--workers",
        "1",
    )
    assert r.returncode == 0, r.stderr
    return summary, gs_path, g4, sky


def _generated(
    scene_path: Path, gs_path: Path, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """skydeck's photons of the gensteps: wavelength, cosine to the step, time, kind."""
    scene = load_scene(scene_path)
    gs = G.load(gs_path, scene).array
    n = int(gs.view(np.int32)[:, 0, 3].astype(np.int64).sum())
    idx = np.arange(n, dtype=np.uint64)
    ph = generate(gs, idx, seed, 0, scene.arrays())
    q = gs[genstep_of(gs, idx)]
    u = q[:, 2, :3] / np.linalg.norm(q[:, 2, :3], axis=1)[:, None]
    cos = np.sum(ph["dir"].T * u, axis=1)
    return ph["wl"], cos, ph["t"], q.view(np.int32)[:, 0, 0]


def _hits_agree(g4: Path, sky: Path, photons: int, first: int, name: str) -> None:
    a, b = np.load(g4 / "ht.npy"), np.load(sky / "ht.npy")
    a = a[(a.view(np.uint32)[:, 3, 3] & first) > 0]
    b = b[(b.view(np.uint32)[:, 3, 3] & first) > 0]
    p = (len(a) + len(b)) / (2 * photons)
    counts_agree(f"{name} hits", len(a), len(b), math.sqrt(2 * photons * p * (1 - p)))
    agree(f"{name} hit time (ns)", a[:, 0, 3], b[:, 0, 3])
    agree(f"{name} hit wavelength (nm)", a[:, 2, 3], b[:, 2, 3])
    sa, sb = a.view(np.uint32)[:, 3, 1], b.view(np.uint32)[:, 3, 1]
    agree(f"{name} hit face", sa, sb, bins=6, lo_hi=(0.5, 6.5))


@pytest.mark.slow
def test_muon_in_water_against_geant4(tmp_path: Path) -> None:
    seed = 3
    s, gs_path, g4, sky = _run(
        tmp_path,
        WATER,
        seed,
        "--particle",
        "mu-",
        "--energy",
        "1GeV",
        "--position",
        "0,0,-990",
        "--direction",
        "0,0,1",
    )
    gs = np.load(gs_path)
    num = gs.view(np.int32)[:, 0, 3].astype(np.int64)
    photons = s["photons_by_kind"]["CERENKOV"]
    # photon counts: the gensteps hold exactly what Geant4 made, and that is the yield
    assert num.sum() == photons > 100_000 and s["photons_by_kind"]["SCINTILLATION"] == 0
    meta = json.loads((sky / "meta.json").read_text())
    assert meta["photons"] == photons == json.loads((g4 / "meta.json").read_text())["photons"]
    mean = float(
        np.sum(np.maximum(0, 0.5 * (gs[:, 5, 1].astype(np.float64) + gs[:, 5, 2])) * gs[:, 2, 3])
    )
    counts_agree("Cerenkov photons vs G4Cerenkov's yield", photons, round(mean), math.sqrt(mean))
    # generation: cone angle and spectrum of every photon
    ref = np.load(g4 / "generated.npy")
    wl, cos, _, _ = _generated(WATER, gs_path, seed)
    agree("Cerenkov cos(theta) to the step", ref[:, 1], cos, lo_hi=(0.6, 0.8))
    agree("Cerenkov wavelength (nm)", ref[:, 0], wl, lo_hi=(200.0, 800.0))
    mu = gs.view(np.int32)[:, 3, 0] == 13
    print(f"muon gensteps {mu.sum()}, delta-electron gensteps {(~mu).sum()}")
    _hits_agree(g4, sky, photons, F.CK, "muon Cerenkov")


@pytest.mark.slow
def test_electrons_in_scintillator_against_geant4(tmp_path: Path) -> None:
    seed = 7
    s, gs_path, g4, sky = _run(
        tmp_path,
        SCINT,
        seed,
        "--particle",
        "e-",
        "--energy",
        "2MeV",
        "--position",
        "0,0,0",
        "--direction",
        "0,0,1",
        "--count",
        "8",
    )
    gs = np.load(gs_path)
    kinds = gs.view(np.int32)[:, 0, 0]
    num = gs.view(np.int32)[:, 0, 3].astype(np.int64)
    si, ck = s["photons_by_kind"]["SCINTILLATION"], s["photons_by_kind"]["CERENKOV"]
    assert num[kinds == SCINTILLATION].sum() == si > 50_000
    assert num[kinds == CERENKOV].sum() == ck > 0
    # one genstep per time component, split as G4Scintillation splits it (80 / 20)
    comp = gs.view(np.int32)[kinds == SCINTILLATION, 4, 0]
    tau = gs[kinds == SCINTILLATION, 5, 0]
    assert set(comp) == {0, 1} and set(tau[comp == 0]) == {np.float32(4.6)}
    share = num[kinds == SCINTILLATION][comp == 0].sum() / si
    assert abs(share - 0.8) < 0.01
    ref = np.load(g4 / "generated.npy")
    wl, cos, t, kind = _generated(SCINT, gs_path, seed)
    for code, name in ((SCINTILLATION, "scintillation"), (CERENKOV, "Cerenkov")):
        a, sel = ref[ref[:, 3] == code], kind == code
        assert len(a) == sel.sum()
        agree(f"{name} wavelength (nm)", a[:, 0], wl[sel])
        agree(f"{name} cos(theta) to the step", a[:, 1], cos[sel], lo_hi=(-1.0, 1.0))
        agree(f"{name} emission time (ns)", a[:, 2], t[sel])
    _hits_agree(g4, sky, si, F.SI, "scintillation")
    _hits_agree(g4, sky, ck, F.CK, "Cerenkov (electrons)")


def test_muon_genstep_file_through_propagate_and_the_pipeline(tmp_path: Path) -> None:
    """The collector's file for a 1 GeV muon in water: `propagate --gensteps` (its material
    map found beside it) and a delivery carrying it, whose stream propagates it."""
    gs_path = tmp_path / "mu" / "gensteps.npy"
    s = engine_json(
        "geant4",
        "gensteps",
        "water-tank",
        "-o",
        gs_path,
        "--particle",
        "mu-",
        "--energy",
        "1GeV",
        "--position",
        "0,0,-990",
        "--direction",
        "0,0,1",
    )
    side = json.loads(G.sidecar_for(gs_path).read_text())
    assert "Water" in side["materials"] and s["gensteps"] == len(np.load(gs_path))
    meta = engine_json(
        "propagate",
        "water-tank",
        "-o",
        tmp_path / "ev",
        "--gensteps",
        gs_path,
        "--backend",
        "numpy",
    )
    assert meta["photons"] == s["photons"] and meta["hits"] > 0
    assert meta["gensteps"]["material_map"] == str(G.sidecar_for(gs_path))
    ws = tmp_path / "ws"
    assert engine("-w", ws, "init").returncode == 0
    r = engine(
        "-w",
        ws,
        "mock",
        "--downlink",
        "251201001",
        "--events",
        "40",
        "--event-bytes",
        "400",
        "--sources",
        "2",
        "--runs",
        "1",
        "--chunks",
        "1",
        "--scene",
        "water-tank",
        "--gensteps-file",
        gs_path,
    )
    assert r.returncode == 0, r.stderr
    delivered = ws / "incoming" / "level0" / "251201001"
    assert (delivered / "gensteps.materials.json").is_file()
    r = engine("-w", ws, "run", "251201001", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    ev = ws / "events" / "water-tank" / "251201001"
    got = json.loads((ev / "meta.json").read_text())
    assert got["photons"] == s["photons"] and got["hits"] == len(np.load(ev / "ht.npy")) > 0
    summary = engine_json("hits", ev)
    assert summary["sources"]["CK"][0] == s["photons"]
