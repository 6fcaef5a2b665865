"""skydeck against Geant4 itself on torch scenes (docs/geant4.md, "A/B"): Geant4 tracks the
same photons (skydeck's torch generator, same seed) through the same scene, its histories
are written as a skydeck event, and the project's own ``hits A --vs B`` compares seqhis and
flagmask tables by chi2; hit times are compared per history. Also Geant4's own GROUPVEL
and RINDEX against the scene's tables.

The scenes: tboolean-box-detect (normal incidence on dispersive F2 glass, every photon a
hit), and an oblique variant: a tilted torch at 420 nm (between the table's nodes) onto an
absorbing, Rayleigh-scattering F2 box, beside a sphere whose skin surface detects, absorbs
and reflects specularly and diffusely, in a half-detecting container."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.core.workspace import SCENES
from engine.propagate import flags as F
from engine.propagate.scene import C_LIGHT_MM_NS, load_scene
from tests.geant4.conftest import engine, engine_json, z_of_chi2
from tests.propagate.conftest import TBOX_DETECT, to_toml

PHOTONS = 20_000


@pytest.mark.parametrize("name", ["tboolean-box", "water-tank", "scint-tank"])
def test_group_velocity_and_index_are_geant4s(name: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tests.geant4.g4tables", SCENES / f"{name}.toml"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    g4 = json.loads(out.stdout)
    scene = load_scene(SCENES / f"{name}.toml")
    mat = scene.arrays().mat
    for m, tabs in g4["materials"].items():
        i = scene.material_index[m]
        for row, key in ((0, "rindex"), (4, "groupvel")):
            ref = np.array(tabs[key])
            rel = np.abs(mat[i, row].astype(np.float64) / ref - 1)
            print(f"{name} {m} {key}: max relative difference {rel.max():.2e}")
            assert rel.max() < 2e-7  # float32 rounding of Geant4's own numbers
    if name == "tboolean-box":
        vg = g4["materials"]["GlassSchottF2"]["groupvel"][380 - 60]
        print(f"F2 at 380 nm: Geant4 GROUPVEL {vg:.4f} mm/ns, n_g {C_LIGHT_MM_NS / vg:.4f}")
        assert abs(C_LIGHT_MM_NS / vg - 1.8182) < 1e-3 and vg < C_LIGHT_MM_NS / 1.6595


def oblique_doc() -> dict[str, Any]:
    f2 = load_scene(TBOX_DETECT).materials[1].physics["tables"]["refractive_index"]
    return {
        "name": "oblique",
        "settings": {"max_bounce": 9, "hitmask": "SD"},
        "materials": {
            "Vacuum": {"refractive_index": 1.0},
            "F2": {"refractive_index": f2, "absorption_length": 800.0, "scattering_length": 400.0},
        },
        "surfaces": {
            "wall": {"detect": 0.5, "absorb": 0.5},
            "mixed": {
                "detect": 0.3,
                "absorb": 0.2,
                "reflect_specular": 0.25,
                "reflect_diffuse": 0.25,
            },
        },
        "container": {"half_size": [450.0, 450.0, 450.0], "material": "Vacuum", "surface": "wall"},
        "objects": [
            {
                "shape": "box",
                "center": [0.0, 0.0, 0.0],
                "half_size": [150.0, 150.0, 100.0],
                "material": "F2",
            },
            {
                "shape": "sphere",
                "center": [0.0, 0.0, 280.0],
                "radius": 120.0,
                "material": "Vacuum",
                "surface": "mixed",
            },
        ],
        "source": {
            "type": "disc",
            "position": [-150.0, 0.0, -380.0],
            "direction": [math.sin(math.radians(40)), 0.0, math.cos(math.radians(40))],
            "radius": 50.8,
            "wavelength": 420.0,
            "photons": PHOTONS,
        },
    }


def _ab(scene: Path, tmp: Path, seed: int) -> tuple[Path, Path, dict[str, Any]]:
    g4 = tmp / "geant4"
    sky = tmp / "skydeck"
    meta = engine_json("geant4", "propagate", scene, "-o", g4, "--photons", PHOTONS, "--seed", seed)
    assert meta["photons"] == PHOTONS and meta["backend"] == "geant4"
    r = engine(
        "propagate",
        scene,
        "-o",
        sky,
        "--photons",
        PHOTONS,
        "--seed",
        seed,
        "--mode",
        "development",
        "--backend",
        "numpy",
        "--workers",
        "1",
    )
    assert r.returncode == 0, r.stderr
    r = engine("hits", g4, "--vs", sky, "--json")
    assert r.returncode == 0, r.stderr
    cmp_ = json.loads(r.stdout)["comparison"]
    text = engine("hits", g4, "--vs", sky).stdout
    print("\n".join(text[text.index("A " + str(g4)) :].splitlines()[:40]))
    return g4, sky, cmp_


def _tables_agree(cmp_: dict[str, Any]) -> None:
    for table in ("flagmask", "seqhis"):
        chi2, ndf = cmp_[f"{table}_chi2"], cmp_[f"{table}_ndf"]
        z = z_of_chi2(chi2, ndf)
        print(f"{table}: chi2/ndf {chi2:.2f}/{ndf} (z {z:+.2f})")
        assert ndf >= 2 and z < 4, f"{table} chi2/ndf {chi2:.2f}/{ndf}"


def _times_per_history(g4: Path, sky: Path, exact: bool) -> None:
    """Hit times of each history: identical (every photon of a history flies the same path:
    normal incidence) or the same distribution (pulls of the means within 4.5 sigma, a
    Bonferroni margin for the histories compared)."""
    oa, ob = np.load(g4 / "ox.npy"), np.load(sky / "ox.npy")
    sa, sb = np.load(g4 / "seq.npy"), np.load(sky / "seq.npy")
    hit_a = (oa.view(np.uint32)[:, 3, 3] & F.SD) > 0
    hit_b = (ob.view(np.uint32)[:, 3, 3] & F.SD) > 0
    seqs, counts = np.unique(sa[hit_a], return_counts=True)
    compared = 0
    for s in seqs[np.argsort(-counts)][:8]:
        ta = oa[hit_a & (sa == s), 0, 3].astype(np.float64)
        tb = ob[hit_b & (sb == s), 0, 3].astype(np.float64)
        if min(len(ta), len(tb)) < 30:
            continue
        compared += 1
        label = F.seqhis_label(int(s))
        if exact:
            print(f"TIME {label}: Geant4 {ta.mean():.5f} ns, skydeck {tb.mean():.5f} ns")
            assert np.ptp(ta) < 1e-5 and np.ptp(tb) < 1e-5
            assert abs(ta.mean() - tb.mean()) < 2e-6 * ta.mean()
        else:
            pull = (ta.mean() - tb.mean()) / math.sqrt(
                ta.var() / len(ta) + tb.var() / len(tb) + 1e-24
            )
            print(
                f"TIME {label}: Geant4 {ta.mean():.4f} ns ({len(ta)}), skydeck "
                f"{tb.mean():.4f} ns ({len(tb)}), pull {pull:+.2f}"
            )
            assert abs(pull) < 4.5, label
    assert compared >= (2 if exact else 4)


def test_tboolean_box_detect_against_geant4(tmp_path: Path) -> None:
    g4, sky, cmp_ = _ab(TBOX_DETECT, tmp_path, seed=11)
    _tables_agree(cmp_)
    assert cmp_["hits_a"] == cmp_["hits_b"] == PHOTONS  # every photon reaches a detecting wall
    _times_per_history(g4, sky, exact=True)


@pytest.mark.slow
def test_oblique_absorbing_scattering_dispersive_scene_against_geant4(tmp_path: Path) -> None:
    scene = tmp_path / "oblique.toml"
    scene.write_text(to_toml(oblique_doc()))
    g4, sky, cmp_ = _ab(scene, tmp_path, seed=5)
    _tables_agree(cmp_)
    fm_a = {r["label"] for r in cmp_["flagmasks"] if r["a"]}
    for flag in ("SC", "AB", "SR", "DR", "BR", "BT", "SD", "SA"):  # every process met
        assert any(flag in lab.split("|") for lab in fm_a), flag
    ha, hb = cmp_["hits_a"], cmp_["hits_b"]
    p = (ha + hb) / (2 * PHOTONS)
    pull = (ha - hb) / math.sqrt(2 * PHOTONS * p * (1 - p))
    print(f"hits: Geant4 {ha}, skydeck {hb}, pull {pull:+.2f}")
    assert abs(pull) < 4
    _times_per_history(g4, sky, exact=False)
