"""The tracer's flat path (a BVH of one leaf whose solids are each one convex leaf, as in an
analytic test scene) gives exactly what the BVH walk gives: it exists for speed only, so
every ray's distance, node, normal, face, side and side table must be bit for bit the walk's
on flat scenes (boxes, a sphere, rotated and translated GDML volumes), and a scene with a
boolean, a mesh or more than a BVH leaf of volumes must not take it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.core.workspace import ASSETS
from engine.propagate.geometry import flatten as FL
from engine.propagate.geometry.trace import nearest_sides
from engine.propagate.scene import load_scene

FLAT_GDML = (
    '<gdml><materials/><solids><box name="W" x="800" y="800" z="800"/>'
    '<box name="A" x="100" y="60" z="40"/><orb name="O" r="50"/>'
    '<ellipsoid name="E" ax="30" by="40" cz="50"/></solids><structure>'
    '<volume name="VA"><materialref ref="G4_WATER"/><solidref ref="A"/></volume>'
    '<volume name="VO"><materialref ref="G4_WATER"/><solidref ref="O"/></volume>'
    '<volume name="VE"><materialref ref="G4_WATER"/><solidref ref="E"/></volume>'
    '<volume name="World"><materialref ref="G4_AIR"/><solidref ref="W"/>'
    '<physvol><volumeref ref="VA"/><position name="pa" x="-150" y="20" z="10"/>'
    '<rotation name="ra" x="20" y="35" z="50" unit="deg"/></physvol>'
    '<physvol><volumeref ref="VO"/><position name="po" x="150" y="-30" z="0"/></physvol>'
    '<physvol><volumeref ref="VE"/><position name="pe" x="0" y="150" z="-100"/>'
    '<rotation name="re" x="-40" y="10" z="5" unit="deg"/></physvol>'
    '</volume></structure><setup name="Default" version="1"><world ref="World"/></setup></gdml>'
)


def _gdml_scene(tmp: Path) -> Path:
    (tmp / "d.gdml").write_text(FLAT_GDML)
    p = tmp / "d.toml"
    p.write_text(
        'name = "d"\n[geometry]\ngdml = "d.gdml"\n[source]\ntype = "point"\n'
        'position = [0.0, 0.0, 0.0]\nwavelength = 420.0\nphotons = 1000\n'
    )
    return p


def _sphere_scene(write_scene) -> Path:
    import tomllib

    doc = tomllib.loads((ASSETS / "scenes" / "tboolean-box.toml").read_text())
    doc["objects"].append(
        {
            "shape": "sphere",
            "center": [0.0, 0.0, 250.0],
            "radius": 80.0,
            "material": "GlassSchottF2",
        }
    )
    doc["objects"].append(
        {
            "shape": "box",
            "center": [-300.0, 200.0, 0.0],
            "half_size": [40.0, 30.0, 20.0],
            "material": "GlassSchottF2",
        }
    )
    return write_scene(doc)


def _rays(half: float, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random points in the world and random directions, a quarter of them axis-aligned
    (zero components: the slab tests' special case) and some on the objects' faces' planes."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(-0.95 * half, 0.95 * half, (3, m)).astype(np.float32)
    d = rng.normal(size=(3, m))
    q = m // 4
    d[:, :q] = 0.0
    d[rng.integers(0, 3, q), np.arange(q)] = rng.choice([-1.0, 1.0], q)
    d /= np.linalg.norm(d, axis=0)
    p[2, q : 2 * q] = np.float32(-100.0)  # the glass box's -z face plane in tboolean-box
    return p, d.astype(np.float32)


@pytest.mark.parametrize("which", ["tboolean-box", "sphere", "gdml"])
def test_flat_path_is_the_walk_bit_for_bit(which, tmp_path, write_scene):
    path = {
        "tboolean-box": lambda: ASSETS / "scenes" / "tboolean-box.toml",
        "sphere": lambda: _sphere_scene(write_scene),
        "gdml": lambda: _gdml_scene(tmp_path),
    }[which]()
    sa = load_scene(path).arrays()
    gi, gf = sa.geo_i, sa.geo_f
    assert gi[FL.H_FLAT] == 1
    walk = gi.copy()
    walk[FL.H_FLAT] = 0
    half = float(np.max(np.abs(gf[gi[FL.H_NODE_BOX] : gi[FL.H_NODE_BOX] + 6])))
    for seed in range(3):
        p, d = _rays(half, 20_000, seed)
        for tmin in (1e-3, float(sa.eps)):
            a = nearest_sides(gi, gf, p, d, tmin)
            b = nearest_sides(walk, gf, p, d, tmin)
            for x, y in zip(a, b, strict=True):
                assert np.array_equal(x, y, equal_nan=True)
            assert (a[1] >= 0).mean() > 0.99  # rays inside the world find a boundary


def test_booleans_meshes_and_many_volumes_walk_the_bvh():
    juno = load_scene(ASSETS / "scenes" / "juno-like.toml").arrays()
    assert juno.geo_i[FL.H_FLAT] == 0
