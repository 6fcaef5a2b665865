"""skydeck against Geant4 on a GDML detector (docs/geant4.md, "GDML detectors"): the tank of
engine.propagate.geometry.examples (a water tank named "Water" with a computed Rayleigh
length, an acrylic sphere, 36 ellipsoidal PMTs rotated onto the wall, a boolean
absorber, a reflecting steel skin, dispersive materials), read by G4GDMLParser on the
Geant4 side and by skydeck's reader on the other; the same torch photons. Hit fraction,
hits per sensor (copynumber) and hit times agree within their statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from engine.propagate.geometry import examples as EX
from tests.geant4.conftest import engine, engine_json, z_of_chi2

PHOTONS = 100_000


def _tank(tmp: Path) -> Path:
    (tmp / "tank.gdml").write_text(EX.tank(36))
    scene = tmp / "tank.toml"
    scene.write_text(
        'name = "tank"\n[geometry]\ngdml = "tank.gdml"\n[settings]\nmax_bounce = 40\n'
        '[source]\ntype = "point"\nposition = [0.0, 0.0, 100.0]\nwavelength = 420.0\n'
        f"photons = {PHOTONS}\n"
    )
    return scene


def test_tank_hits_agree_with_geant4(tmp_path: Path) -> None:
    scene = _tank(tmp_path)
    g4, sky = tmp_path / "geant4", tmp_path / "skydeck"
    meta = engine_json("geant4", "propagate", scene, "-o", g4, "--seed", 3)
    assert meta["photons"] == PHOTONS and meta["geant4"]["geometry"] == "G4GDMLParser"
    r = engine("propagate", scene, "-o", sky, "--seed", 3, "--backend", "numpy", "--workers", "1")
    assert r.returncode == 0, r.stderr
    a, b = np.load(g4 / "ht.npy"), np.load(sky / "ht.npy")
    na, nb = len(a), len(b)
    p = (na + nb) / (2 * PHOTONS)
    pull = (na - nb) / math.sqrt(2 * PHOTONS * p * (1 - p))
    print(
        f"AB hit fraction: Geant4 {na / PHOTONS:.5f} ({na}), skydeck {nb / PHOTONS:.5f} ({nb}), "
        f"pull {pull:+.2f}"
    )
    assert na > 1000 and abs(pull) < 4
    # hits per sensor: every one of the 36 copynumbers, a two-sample chi2
    sa, sb = a.view(np.int32)[:, 3, 1], b.view(np.int32)[:, 3, 1]
    assert set(np.unique(sa)) == set(np.unique(sb)) == set(range(36))
    ca, cb = np.bincount(sa, minlength=36), np.bincount(sb, minlength=36)
    k = math.sqrt(nb / na)
    chi2 = float(np.sum((ca * k - cb / k) ** 2 / (ca + cb)))
    z = z_of_chi2(chi2, 35)
    print(
        f"AB hits per sensor: chi2/ndf {chi2:.1f}/35 (z {z:+.2f}); ring means "
        f"Geant4 {[int(ca[i * 12 : (i + 1) * 12].sum()) for i in range(3)]}, "
        f"skydeck {[int(cb[i * 12 : (i + 1) * 12].sum()) for i in range(3)]}"
    )
    assert z < 4
    # hit times: histogram chi2 and the means (group velocity in water and acrylic)
    ta, tb = a[:, 0, 3].astype(float), b[:, 0, 3].astype(float)
    edges = np.linspace(*np.percentile(np.concatenate([ta, tb]), [0.5, 99.5]), 31)
    ha, hb = np.histogram(ta, edges)[0], np.histogram(tb, edges)[0]
    keep = ha + hb >= 10
    chi2t = float(np.sum((ha[keep] * k - hb[keep] / k) ** 2 / (ha[keep] + hb[keep])))
    zt = z_of_chi2(chi2t, int(keep.sum()) - 1)
    pt = (ta.mean() - tb.mean()) / math.sqrt(ta.var() / na + tb.var() / nb)
    print(
        f"AB hit time: Geant4 mean {ta.mean():.4f} ns, skydeck {tb.mean():.4f} ns, pull "
        f"{pt:+.2f}; chi2/ndf {chi2t:.1f}/{int(keep.sum()) - 1} (z {zt:+.2f}); earliest "
        f"{ta.min():.4f} / {tb.min():.4f} ns"
    )
    assert abs(pt) < 4 and zt < 4
    # the direct light's first arrival: the same path, the same group velocities
    assert abs(ta.min() - tb.min()) < 0.02
    # hits carry their sensor's position: on the PMT's bulb, 875..1000 mm from the axis
    rb = np.hypot(b[:, 0, 0], b[:, 0, 1])
    assert np.all((rb > 870) & (rb < 1000))
