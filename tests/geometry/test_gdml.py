"""GDML detectors: the unit-expression parser and the reader take any input to a value or
BadInput (Hypothesis); Geant4's conventions (full-length boxes, the inverse of Rz*Ry*Rx for
a physvol, Rz*Ry*Rx for a boolean's operand, copynumbers); bad geometry is exit 2 with one
line naming the file and the volume; the tracer against analytic distances; the
host-compiled kernel against NumPy photon by photon on a GDML detector."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.errors import BadInput
from engine.propagate import flags as F
from engine.propagate.geometry import examples as EX
from engine.propagate.geometry import gdml as G
from engine.propagate.geometry.trace import nearest
from engine.propagate.geometry.units import evaluate
from engine.propagate.numpy_backend import propagate_chunk
from engine.propagate.params import Params
from engine.propagate.scene import gensteps, load_scene
from tests.propagate.conftest import cli
from tests.propagate.test_kernel_host import run_kernel

ALPHABET = "0123456789.eE+-*/^() abcmgkMeVnsdrx_"


@given(st.text(alphabet=ALPHABET, max_size=40))
@settings(max_examples=400, deadline=None)
def test_expression_gives_a_value_or_badinput(text):
    try:
        v = evaluate(text, {"x": 2.0})
    except BadInput:
        return
    assert math.isfinite(v)


def test_expressions_follow_clhep_units():
    assert evaluate("2.952*eV") == pytest.approx(2.952e-6)
    assert evaluate("20*m") == 20000.0
    assert evaluate("-(1+2)*2^2") == -12.0
    assert evaluate("90*deg") == pytest.approx(math.pi / 2)
    assert evaluate("r/2", {"r": 5.0}) == 2.5
    for bad in ("__import__('os')", "1/0", "2**3", "x", "(1", "1e999"):
        with pytest.raises(BadInput):
            evaluate(bad)


@given(st.binary(max_size=400))
@settings(max_examples=200, deadline=None)
def test_reader_gives_a_detector_or_badinput_for_any_bytes(data):
    with contextlib.suppress(BadInput):
        G.parse(data, Path("x.gdml"))


@given(st.integers(0, 12000), st.sampled_from(["<", ">", "=", '"', "/", "x", "1", " "]))
@settings(max_examples=150, deadline=None)
def test_reader_gives_a_detector_or_badinput_for_a_damaged_file(pos, ch):
    text = EX.tank(4, 1)
    pos %= len(text)
    data = (text[:pos] + ch + text[pos + 1 :]).encode()
    from engine.propagate.geometry import detector as D

    with contextlib.suppress(BadInput):
        D.build(G.parse(data, Path("x.gdml")))  # read, solids, tree: a detector or BadInput


def _cube_mesh(name: str, h: float) -> str:
    """A tessellated cube of half side h: 8 <position>s and 12 <triangular> facets (as a
    <define> part and a <solids> part joined; the caller puts it among the solids)."""
    corners = [(x, y, z) for x in (-h, h) for y in (-h, h) for z in (-h, h)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    tris = "".join(
        f'<quadrangular vertex1="{name}v{a}" vertex2="{name}v{b}" vertex3="{name}v{c}" '
        f'vertex4="{name}v{d}"/>'
        for a, b, c, d in faces
    )
    return f'<tessellated name="{name}">{tris}</tessellated>', "".join(
        f'<position name="{name}v{i}" x="{x}" y="{y}" z="{z}"/>'
        for i, (x, y, z) in enumerate(corners)
    )


def _scene(tmp: Path, gdml: str, extra: str = "") -> Path:
    (tmp / "d.gdml").write_text(gdml)
    p = tmp / "d.toml"
    p.write_text(
        'name = "d"\n[geometry]\ngdml = "d.gdml"\n[source]\ntype = "point"\n'
        'position = [0.0, 0.0, 100.0]\nwavelength = 420.0\nphotons = 1000\n' + extra
    )
    return p


def test_placements_are_geant4s(tmp_path):
    """A PMT of the tank is placed by the inverse of Rz*Ry*Rx: its bulb's +z faces the axis,
    so a ray from the centre meets the bulb's front at 935 - 60 mm."""
    s = load_scene(_scene(tmp_path, EX.tank(36)))
    g = s.tree()
    assert s.gdml["volumes"] == 42 and s.gdml["sensors"] == 36
    for phi in (2 * math.pi * 0.5 / 12, 2 * math.pi * 5.5 / 12):  # the z = 0 ring
        d = np.array([[math.cos(phi)], [math.sin(phi)], [0.0]], np.float32)
        p = np.array([[0.0], [0.0], [0.0]], np.float32)
        t, node, n, face, enter = nearest(g.geo_i, g.geo_f, p, d, 1e-3)
        # the acrylic's inner water (r 380, centre z = 100) first, leaving it
        assert abs(t[0] - math.sqrt(380**2 - 100**2)) < 1e-3 and not enter[0]
        q = d * np.float32(500.0)  # in the tank's water, beyond the acrylic
        t2, node2, n2, _, enter2 = nearest(g.geo_i, g.geo_f, q, d, 1e-3)
        assert enter2[0] and g.labels[node2[0]].startswith("pmt_")
        assert abs(t2[0] - (875.0 - 500.0)) < 1e-2  # the bulb's front, 935 - 60 mm out
        assert np.dot(n2[:, 0], d[:, 0]) == pytest.approx(-1.0, abs=1e-5)


def test_boolean_operand_uses_the_rotation_itself(tmp_path):
    """G4GDMLReadSolids::BooleanRead places the second solid with Rz*Ry*Rx (not its
    inverse, as a physvol): a box rotated 30 deg about z, unioned at the origin."""
    solids = (
        '<solids><box name="W" x="400" y="400" z="400"/><box name="A" x="10" y="10" z="10"/>'
        '<box name="B" x="200" y="2" z="2"/><union name="U"><first ref="A"/><second ref="B"/>'
        '<rotation name="r" z="30" unit="deg"/></union></solids>'
    )
    text = (
        '<gdml><materials/>' + solids + '<structure><volume name="V"><materialref ref="G4_AIR"/>'
        '<solidref ref="U"/></volume><volume name="World"><materialref ref="G4_AIR"/>'
        '<solidref ref="W"/><physvol><volumeref ref="V"/></physvol></volume></structure>'
        '<setup name="Default" version="1"><world ref="World"/></setup></gdml>'
    )
    from engine.propagate.geometry import detector as D

    det = G.parse(text.encode(), tmp_path / "b.gdml")
    g = D.build(det).geometry
    c = math.radians(30.0)
    # the rod's end lies along R_z(30) x (rotateZ: active rotation of the operand)
    for sign, hit in ((1.0, True), (-1.0, False)):
        a = np.array([[90 * math.cos(c)], [sign * 90 * math.sin(c)], [50.0]], np.float32)
        d = np.array([[0.0], [0.0], [-1.0]], np.float32)
        t, node, *_ = nearest(g.geo_i, g.geo_f, a, d, 1e-3)
        assert (node[0] == 1) == hit
        if hit:
            assert t[0] == pytest.approx(49.0, abs=1e-4)


@pytest.mark.parametrize(
    "edit, why",
    [
        (
            lambda t: t.replace(
                '<orb name="AcrylicBall" r="400" lunit="mm"/>',
                '<orb name="AcrylicBall" r="990" lunit="mm"/>',
            ),
            "overlap",
        ),
        (
            lambda t: t.replace('<position name="ap" z="100"/>', '<position name="ap" z="700"/>'),
            "sticks out",
        ),
        (
            lambda t: t.replace('<materialref ref="Pyrex"/>', '<materialref ref="Unobtainium"/>'),
            "missing material 'Unobtainium'",
        ),
        (
            lambda t: t.replace('<orb name="AcrylicBall"', '<paraboloid name="AcrylicBall"'),
            "unknown solid <paraboloid>",
        ),
        (
            lambda t: t.replace(
                '<orb name="AcrylicBall" r="400" lunit="mm"/>',
                '<torus name="AcrylicBall" rmax="50" rtor="300"/>',
            ),
            "torus is not supported",
        ),
        (
            lambda t: t.replace(
                '<physvol name="inner_pv"><volumeref ref="Inner"/>',
                '<physvol name="inner_pv"><volumeref ref="Inner"/><scale name="s" x="-1" y="1" z="1"/>',
            ),
            "not a rotation",
        ),
        (lambda t: t.replace("</gdml>", ""), "does not parse"),
    ],
)
def test_bad_geometry_is_exit_2_naming_file_and_volume(tmp_path, edit, why):
    scene = _scene(tmp_path, edit(EX.tank(12, 1)))
    r = cli("propagate", scene, "-o", tmp_path / "ev", "--backend", "numpy", "--workers", "1")
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "d.gdml" in line and why in line, line
    assert not (tmp_path / "ev").exists()


def test_geometry_check_command(tmp_path):
    (tmp_path / "t.gdml").write_text(EX.tank(36))
    r = cli("geometry", "check", tmp_path / "t.gdml", "--points", "300")
    assert r.returncode == 0, r.stderr
    assert "42 volumes" in r.stdout and "no overlaps" in r.stdout
    (tmp_path / "o.gdml").write_text(
        EX.tank(36).replace('x="400" y="400" z="40"', 'x="2400" y="400" z="40"')
    )
    r = cli("geometry", "check", tmp_path / "o.gdml")
    assert r.returncode == 2 and "o.gdml" in r.stderr and "Absorber" in r.stderr


def test_water_gets_geant4s_computed_rayleigh(tmp_path):
    s = load_scene(_scene(tmp_path, EX.tank(4, 1)))
    water = s.materials[s.material_index["Water"]]
    acrylic = s.materials[s.material_index["Acrylic"]]
    assert water.physics.get("rayleigh", "").startswith("computed")
    ls = water.props[2]
    i400 = 400 - 60
    # Einstein-Smoluchowski: grows as lambda^4; tens of metres in the blue
    assert 2e4 < ls[i400] < 1e6 and ls[i400 + 200] / ls[i400] > 3.0
    assert np.all(acrylic.props[2] >= 1e29)  # no RAYLEIGH, not named Water: never


def test_kernel_matches_numpy_on_a_gdml_detector(kernel_lib, tmp_path):
    """Every leaf kind the reader makes (box, ellipsoid with a cut, cylinder, cone, wedge,
    nappe, union, subtraction) on the kernel and NumPy, photon by photon."""
    text = EX.juno_like(2000, radius=19500.0)
    extra = (
        '<cone name="C" rmin1="0" rmax1="300" rmin2="100" rmax2="500" z="400" '
        'startphi="30" deltaphi="250" aunit="deg"/>'
        '<sphere name="S" rmin="200" rmax="600" startphi="0" deltaphi="300" starttheta="20" '
        'deltatheta="120" aunit="deg"/>'
        '<polycone name="P" startphi="0" deltaphi="360" aunit="deg"><zplane rmin="0" rmax="300" z="-200"/>'
        '<zplane rmin="50" rmax="400" z="0"/><zplane rmin="0" rmax="100" z="300"/></polycone>'
        + _cube_mesh("T", 300.0)[0]
    )
    text = text.replace("</define>", _cube_mesh("T", 300.0)[1] + "</define>")
    text = text.replace("</solids>", extra + "</solids>")
    vols = (
        '<volume name="CV"><materialref ref="Acrylic"/><solidref ref="C"/></volume>'
        '<volume name="SV"><materialref ref="Pyrex"/><solidref ref="S"/></volume>'
        '<volume name="PV"><materialref ref="Acrylic"/><solidref ref="P"/></volume>'
        '<volume name="TV"><materialref ref="Pyrex"/><solidref ref="T"/></volume>'
    )
    text = text.replace('  <volume name="PMT">', vols + '  <volume name="PMT">')
    text = text.replace(
        '<physvol name="ls_pv"><volumeref ref="LS"/></physvol>',
        '<physvol name="ls_pv"><volumeref ref="LS"/></physvol>',
    )
    text = text.replace(
        '  <volume name="LS"><materialref ref="LS"/><solidref ref="LSBall"/></volume>',
        '  <volume name="LS"><materialref ref="LS"/><solidref ref="LSBall"/>'
        '<physvol name="c"><volumeref ref="CV"/><position name="cp" x="2000"/>'
        '<rotation name="cr" x="20" y="40" unit="deg"/></physvol>'
        '<physvol name="s"><volumeref ref="SV"/><position name="sp" x="-2000"/></physvol>'
        '<physvol name="p"><volumeref ref="PV"/><position name="pp" y="2000"/></physvol>'
        '<physvol name="t"><volumeref ref="TV"/><position name="tp" y="-2000"/>'
        '<rotation name="tr" z="30" unit="deg"/></physvol>'
        '</volume>',
    )
    scene = load_scene(_scene(tmp_path, text, "[settings]\nmax_bounce = 16\n"))
    assert scene.source is not None
    sa = scene.arrays()
    n = 6000
    srcs = []
    for pos in (
        [0.0, 0.0, 100.0],
        [1500.0, 0.0, 0.0],
        [-1500.0, 0.0, 0.0],
        [0.0, 1500.0, 0.0],
        [0.0, -1500.0, 0.0],
    ):
        scene.source.position = tuple(pos)  # type: ignore[assignment]
        srcs.append(gensteps(scene.source, n // 5))
    gs = np.concatenate(srcs)
    p = Params(5, 1, 16, F.parse_mask("SD"), True, (20000.0, 500.0))
    ref = propagate_chunk(sa, gs, 0, n, p)
    hits, fm, ox, rx, seq = run_kernel(kernel_lib, sa, gs, n, p)
    same = seq == ref.seq
    print(
        f"GDML: seqhis identical for {same.mean():.5f} of {n}, {len(np.unique(ref.seq))} histories"
    )
    assert same.mean() > 0.998
    fmask = np.bitwise_or.reduce(ref.ox.view(np.uint32)[:, 3, 3])
    assert scene.gdml["solids"] >= 9  # world, pool, acrylic, LS, PMT, cone, sphere, polycone, mesh
    for f in (F.BT, F.BR, F.SD, F.SA, F.AB, F.RE, F.SC):
        assert fmask & f, F.mask_label(f)
    assert np.array_equal(ox.view(np.uint32)[same, 3], ref.ox.view(np.uint32)[same, 3])
    diff = np.abs(ox[same, :3] - ref.ox[same, :3]).max(axis=(1, 2))
    assert np.mean(diff < 2e-2) > 0.995
    assert len(hits) == len(ref.hits) or abs(len(hits) - len(ref.hits)) <= 0.002 * n


def test_shipped_juno_like_is_the_scripts_output():
    """assets/scenes/juno-like.gdml is generated, never edited: the script reproduces it."""
    from engine.core.workspace import SCENES

    assert (SCENES / "juno-like.gdml").read_text() == EX.juno_like(2000)
    s = load_scene(SCENES / "juno-like.toml")
    assert s.gdml["sensors"] == 2000 and s.gdml["volumes"] == 2000 + 4


def test_a_tessellated_cube_traces_as_a_box(tmp_path):
    """Crossings of a closed triangle mesh pair into intervals: a ray meets the meshed cube
    where it meets the box, entering and leaving, with the face's normal."""
    solids, defs = _cube_mesh("T", 100.0)
    text = (
        "<gdml><define>"
        + defs
        + "</define><materials/><solids>"
        + solids
        + '<box name="W" x="1000" y="1000" z="1000"/></solids><structure>'
        '<volume name="V"><materialref ref="G4_AIR"/><solidref ref="T"/></volume>'
        '<volume name="World"><materialref ref="G4_AIR"/><solidref ref="W"/>'
        '<physvol><volumeref ref="V"/><position name="p" x="10" y="20" z="30"/></physvol>'
        '</volume></structure><setup name="Default" version="1"><world ref="World"/></setup></gdml>'
    )
    from engine.propagate.geometry import detector as D

    g = D.build(G.parse(text.encode(), tmp_path / "m.gdml")).geometry
    rng = np.random.default_rng(4)
    p = np.zeros((3, 400), np.float32)
    d = rng.normal(size=(3, 400))
    d = (d / np.linalg.norm(d, axis=0)).astype(np.float32)
    t, node, n, _, enter = nearest(
        g.geo_i, g.geo_f, p - np.array([[0], [0], [200]], np.float32), d, 1e-3
    )
    o = (p - np.array([[0], [0], [200]], np.float32) - np.array([[10], [20], [30]])).astype(float)
    inv = 1.0 / d.astype(float)
    t1, t2 = (-100 - o) * inv, (100 - o) * inv
    tin = np.minimum(t1, t2).max(axis=0)
    tout = np.maximum(t1, t2).min(axis=0)
    hit = (tin <= tout) & (tin > 0)
    assert hit.sum() > 20 and np.all(node[hit] == 1) and np.all(enter[hit])
    assert np.allclose(t[hit], tin[hit], atol=1e-3)
    assert np.allclose(np.abs(n[:, hit]).max(axis=0), 1.0, atol=1e-6)


def test_a_delivery_names_the_juno_like_detector(tmp_path):
    """The pipeline's path: a mock delivery whose gensteps are electrons stopping in the
    JUNO-like detector's scintillator (the volume at its origin), propagated through it."""
    d = tmp_path / "dl"
    r = cli(
        "mock",
        "--downlink",
        "261207001",
        "--scene",
        "juno-like",
        "--gensteps-kind",
        "scintillation",
        "--events",
        "10",
        "-o",
        d,
    )
    assert r.returncode == 0, r.stderr
    r = cli(
        "propagate",
        "juno-like",
        "--gensteps",
        d / "gensteps.npy",
        "-o",
        tmp_path / "ev",
        "--backend",
        "numpy",
        "--workers",
        "1",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    import json

    meta = json.loads(r.stdout.strip().splitlines()[-1])
    assert meta["gensteps"]["kinds"]["SCINTILLATION"]["photons"] > 1000 and meta["hits"] > 0
    ht = np.load(tmp_path / "ev" / "ht.npy")
    assert np.all(ht.view(np.uint32)[:, 3, 3] & (F.SI | F.CK)) and np.all(
        np.linalg.norm(ht[:, 0, :3], axis=1) > 19000
    )  # on the PMTs, 19.5 m out
