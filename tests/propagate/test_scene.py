"""Scene validation: every bad scene is exit 2 with one line naming the file and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import BadInput
from engine.core.workspace import SCENES, packaged_scene, scene_arg
from engine.propagate.scene import load_scene
from tests.conftest import run_engine
from tests.propagate.conftest import TBOX, TBOX_DETECT, base_scene, cli
from tests.props import total


def test_shipped_scenes_load():
    s = load_scene(TBOX)
    assert s.container_half == (450.0, 450.0, 450.0)
    assert s.objects[0].half_size == (150.0, 150.0, 100.0)
    assert s.surfaces[s.container_surface][1] == (0.0, 1.0, 0.0, 0.0)  # perfect absorber
    assert abs(float(s.arrays().mat[1, 0, 380 - 60]) - 1.6595) < 1e-4  # F2 at 380 nm, table
    d = load_scene(TBOX_DETECT)
    assert d.surfaces[d.container_surface][1] == (1.0, 0.0, 0.0, 0.0)


BAD = [
    (
        "surface probabilities",
        lambda d: d["surfaces"].update(det={"detect": 0.5, "absorb": 0.4}),
        "surfaces.det: probabilities sum to 0.9",
    ),
    (
        "negative container",
        lambda d: d["container"].update(half_size=[100.0, -1.0, 100.0]),
        "container.half_size: lengths must be positive",
    ),
    (
        "negative absorption",
        lambda d: d["materials"]["Glass"].update(absorption_length=-5.0),
        "materials.Glass.absorption_length: lengths must be positive",
    ),
    (
        "negative radius",
        lambda d: d.update(objects=[{"shape": "sphere", "radius": -3.0, "material": "Glass"}]),
        "objects[0].radius: lengths must be positive",
    ),
    (
        "overlap",
        lambda d: d.update(
            objects=[
                {
                    "shape": "box",
                    "center": [0.0, 0.0, 0.0],
                    "half_size": [10.0, 10.0, 10.0],
                    "material": "Glass",
                },
                {"shape": "sphere", "center": [15.0, 0.0, 0.0], "radius": 6.0, "material": "Glass"},
            ]
        ),
        "objects[1]: overlaps objects[0]",
    ),
    (
        "object outside",
        lambda d: d.update(
            objects=[
                {
                    "shape": "box",
                    "center": [95.0, 0.0, 0.0],
                    "half_size": [10.0, 10.0, 10.0],
                    "material": "Glass",
                }
            ]
        ),
        "objects[0]: extends outside the container",
    ),
    (
        "source outside",
        lambda d: d["source"].update(position=[0.0, 0.0, -150.0]),
        "source.position: source lies outside the container",
    ),
    (
        "unknown material",
        lambda d: d["container"].update(material="Unobtainium"),
        "container.material: unknown material 'Unobtainium'",
    ),
    (
        "unknown object material",
        lambda d: d.update(
            objects=[{"shape": "box", "half_size": [1.0, 1.0, 1.0], "material": "Glas"}]
        ),
        "objects[0].material: unknown material 'Glas'",
    ),
    (
        "unknown surface",
        lambda d: d["container"].update(surface="nope"),
        "container.surface: unknown surface 'nope'",
    ),
    ("bad source type", lambda d: d["source"].update(type="laser"), "source.type: must be one of"),
    ("wavelength off grid", lambda d: d["source"].update(wavelength=1000.0), "source.wavelength"),
    (
        "bad table",
        lambda d: d["materials"]["Glass"].update(refractive_index=[[500.0, 1.5], [400.0, 1.6]]),
        "materials.Glass.refractive_index: table wavelengths must increase",
    ),
]


@pytest.mark.parametrize("what,mutate,message", BAD, ids=[b[0] for b in BAD])
def test_bad_scene_exit_2(tmp_path, write_scene, what, mutate, message):
    doc = base_scene()
    mutate(doc)
    path = write_scene(doc)
    r = cli("propagate", path, "-o", tmp_path / "ev", "--photons", "10", "--backend", "numpy")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert str(path) in lines[0] and message in lines[0]
    assert not (tmp_path / "ev").exists()


def test_malformed_toml_exit_2(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("[container\nhalf_size = 3\n")
    r = cli("propagate", p, "-o", tmp_path / "ev")
    assert r.returncode == 2
    assert (
        len(r.stderr.strip().splitlines()) == 1
        and "malformed TOML" in r.stderr
        and str(p) in r.stderr
    )


def test_propagate_takes_a_packaged_scene_by_name(tmp_path):
    res = run_engine(
        "propagate",
        "tboolean-box",
        "-o",
        tmp_path / "ev",
        "--photons",
        "500",
        "--json",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["scene"]["path"] == str(TBOX)
    bad = run_engine("propagate", "no-such-scene", "-o", tmp_path / "ev2", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().endswith(
        "unknown scene 'no-such-scene' (packaged: juno-like, scint-tank, tboolean-box, "
        "tboolean-box-detect, water-tank)"
    )
    assert not (tmp_path / "ev2").exists()
    (tmp_path / "tboolean-box").write_text("not toml [")  # an existing file wins over a name
    clash = run_engine("propagate", "tboolean-box", "-o", tmp_path / "ev3", cwd=tmp_path)
    assert clash.returncode == 2 and clash.stderr.startswith("skydeck-engine: tboolean-box:")


def test_packaged_scene_names_are_plain(tmp_path):
    for name in ("../scenes/tboolean-box", "tboolean-box.toml", "", ".hidden"):
        with pytest.raises(BadInput, match="invalid scene name"):
            packaged_scene(name, tmp_path / "scene.txt")


@given(st.text(max_size=80))
def test_scene_arg_is_total(text):
    got = total(scene_arg, text)
    assert isinstance(got, (Path, BadInput))
    if isinstance(got, Path) and got.is_relative_to(SCENES):
        assert got.is_file()
