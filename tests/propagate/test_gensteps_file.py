"""Genstep files at the boundary (engine/propagate/gensteps.py): Cerenkov and scintillation
gensteps through `propagate --gensteps`, the Geant4 material map, and every bad file exit 2
with one line naming the file, the genstep row and the field; Hypothesis for the parsers
(any input gives a value or BadInput) and for the generators (any genstep the checks let
through gives finite photons)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from engine.core.errors import BadInput
from engine.core.workspace import SCENES
from engine.mock.gensteps import cerenkov_tracks, scintillation_tracks
from engine.propagate import flags as F
from engine.propagate import gensteps as G
from engine.propagate.generate import generate
from engine.propagate.scene import load_scene
from tests.propagate.conftest import TBOX, cli
from tests.props import total

WATER = SCENES / "water-tank.toml"
SCINT = SCENES / "scint-tank.toml"


@functools.cache
def _tracks(which: str, photons: int) -> np.ndarray:
    if which == "water":
        return cerenkov_tracks(load_scene(WATER), photons, seed=1)
    return scintillation_tracks(load_scene(SCINT), photons, seed=1)


def _water_gs(photons: int = 20_000) -> np.ndarray:
    return _tracks("water", photons).copy()


def _scint_gs(photons: int = 20_000) -> np.ndarray:
    return _tracks("scint", photons).copy()


def _one_line(r, *needles: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("skydeck-engine: "), r.stderr
    for n in needles:
        assert n in line, (n, line)
    return line


def test_cerenkov_and_scintillation_gensteps_propagate(tmp_path: Path) -> None:
    for scene, gs in ((WATER, _water_gs()), (SCINT, _scint_gs())):
        path = tmp_path / f"{scene.stem}.npy"
        np.save(path, gs)
        out = tmp_path / f"{scene.stem}-ev"
        r = cli(
            "propagate",
            scene,
            "-o",
            out,
            "--gensteps",
            path,
            "--backend",
            "numpy",
            "--workers",
            "1",
            "--json",
        )
        assert r.returncode == 0, r.stderr
        meta = json.loads(r.stdout)
        num = gs.view(np.int32)[:, 0, 3].astype(np.int64)
        assert meta["photons"] == num.sum() and meta["gensteps"]["rows"] == len(gs)
        kinds = gs.view(np.int32)[:, 0, 0]
        for code, name in ((15, "CERENKOV"), (16, "SCINTILLATION")):
            if (kinds == code).any():
                assert meta["gensteps"]["kinds"][name]["photons"] == num[kinds == code].sum()
        ht = np.load(out / "ht.npy")
        fm = ht.view(np.uint32)[:, 3, 3]
        assert len(ht) == meta["hits"] > 0 and np.all(fm & F.SD)
        first = fm & (F.CK | F.SI)
        assert np.all((first == F.CK) | (first == F.SI))  # exactly one generation flag
        assert np.array_equal(np.load(out / "gs.npy"), gs)
        labels = {k for k in meta["flagmask_counts"]}
        assert any(int(k, 16) & (F.CK | F.SI) for k in labels)


def test_a_scene_without_source_needs_gensteps(tmp_path: Path) -> None:
    _one_line(
        cli("propagate", WATER, "-o", tmp_path / "ev", "--backend", "numpy"),
        str(WATER),
        "no [source]",
        "--gensteps",
    )
    assert not (tmp_path / "ev").exists()


# ----------------------------------------------------------------------------- material map


def test_geant4_material_indices_through_the_map(tmp_path: Path) -> None:
    gs = _water_gs(5000)
    gs.view(np.int32)[:, 0, 2] = 2  # Geant4's index of the water in its material table
    path = tmp_path / "gensteps.npy"
    np.save(path, gs)
    r = cli("propagate", WATER, "-o", tmp_path / "ev0", "--gensteps", path)
    _one_line(r, str(path), "row 0, q0.z matline", "2 is not a scene material index")
    side = G.sidecar_for(path)
    side.write_text(json.dumps({"materials": ["G4_AIR", "G4_Galactic", "Water"]}))
    r = cli(
        "propagate",
        WATER,
        "-o",
        tmp_path / "ev",
        "--gensteps",
        path,
        "--backend",
        "numpy",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    meta = json.loads(r.stdout)
    assert meta["gensteps"]["material_map"] == str(side)
    assert np.all(np.load(tmp_path / "ev" / "gs.npy").view(np.int32)[:, 0, 2] == 0)  # scene's
    side.write_text(json.dumps({"materials": ["G4_AIR", "G4_Galactic", "G4_WATER"]}))
    _one_line(
        cli("propagate", WATER, "-o", tmp_path / "ev2", "--gensteps", path),
        str(path),
        "row 0, q0.z matline",
        "'G4_WATER' is not a scene material",
    )
    other = tmp_path / "map.json"
    other.write_text(json.dumps({"materials": ["Water", "X", "Water"]}))
    r = cli(
        "propagate",
        WATER,
        "-o",
        tmp_path / "ev3",
        "--gensteps",
        path,
        "--genstep-materials",
        other,
        "--backend",
        "numpy",
    )
    assert r.returncode == 0, r.stderr
    other.write_text("{not json")
    _one_line(
        cli(
            "propagate",
            WATER,
            "-o",
            tmp_path / "ev4",
            "--gensteps",
            path,
            "--genstep-materials",
            other,
        ),
        str(other),
        "not JSON",
    )


# ----------------------------------------------------------------------------- bad files


def _mut(q: int, lane: int, value: float, row: int = 3, as_int: bool = False):
    def f(gs: np.ndarray) -> None:
        (gs.view(np.int32) if as_int else gs)[row, q, lane] = value

    return f


BAD: list[tuple[str, str, Callable[[np.ndarray], None], tuple[str, ...]]] = [
    (
        "unknown gentype",
        "water",
        _mut(0, 0, 7, as_int=True),
        ("row 3, q0.x gentype: unknown gentype 7",),
    ),
    (
        "negative numphoton",
        "water",
        _mut(0, 3, -5, as_int=True),
        ("row 3, q0.w numphoton: -5 is negative",),
    ),
    (
        "absurd numphoton",
        "water",
        _mut(0, 3, 50_000_000, as_int=True),
        ("row 3, q0.w numphoton", "absurd"),
    ),
    (
        "implausible numphoton",
        "water",
        _mut(0, 3, 5000, as_int=True),
        ("row 3, q0.w numphoton", "absurd for MeanNumberOfPhotons"),
    ),
    ("NaN time", "water", _mut(1, 3, np.nan), ("row 3, q1.w time: nan is not a finite number",)),
    (
        "infinite BetaInverse",
        "water",
        _mut(4, 0, np.inf),
        ("row 3, q4.x: inf is not a finite number",),
    ),
    (
        "matline outside",
        "water",
        _mut(0, 2, 4, as_int=True),
        ("row 3, q0.z matline: 4 is not a scene material",),
    ),
    (
        "below threshold",
        "water",
        _mut(4, 0, 1.45),
        ("row 3, q4.x BetaInverse", "below the Cerenkov threshold"),
    ),
    (
        "faster than light",
        "water",
        _mut(4, 0, 0.5),
        ("row 3, q4.x BetaInverse: 0.5 means faster than light",),
    ),
    ("Wmax below Wmin", "water", _mut(4, 2, 150.0), ("row 3, q4.z Wmax: must exceed Wmin",)),
    ("velocity", "water", _mut(3, 3, 400.0), ("row 3, q3.w preVelocity",)),
    ("outside the container", "water", _mut(1, 0, 5000.0), ("row 3, q1 position", "outside")),
    (
        "zero-length Cerenkov step",
        "water",
        lambda gs: gs[3, 2].__setitem__(slice(None), 0.0),
        ("row 3, q2.w step_length: a Cerenkov step must have a length",),
    ),
    ("negative decay time", "scint", _mut(5, 0, -1.0, row=0), ("row 0, q5.x ScintillationTime",)),
    ("component", "scint", _mut(4, 0, 9, row=0, as_int=True), ("row 0, q4.x component: 9",)),
]


@pytest.mark.parametrize("what,which,mutate,needles", BAD, ids=[b[0] for b in BAD])
def test_bad_genstep_files_exit_2_naming_row_and_field(
    tmp_path: Path, what, which, mutate, needles
) -> None:
    gs = _water_gs(3000) if which == "water" else _scint_gs(3000)
    if which == "scint":
        gs = gs[gs.view(np.int32)[:, 0, 0] == 16]
    mutate(gs)
    path = tmp_path / "gensteps.npy"
    np.save(path, gs)
    scene = WATER if which == "water" else SCINT
    _one_line(
        cli("propagate", scene, "-o", tmp_path / "ev", "--gensteps", path, "--backend", "numpy"),
        str(path),
        *needles,
    )
    assert not (tmp_path / "ev").exists()


def test_wrong_shape_and_a_scintillator_without_spectrum(tmp_path: Path) -> None:
    path = tmp_path / "gensteps.npy"
    np.save(path, np.zeros((3, 4, 4), np.float32))
    _one_line(
        cli("propagate", WATER, "-o", tmp_path / "ev", "--gensteps", path),
        str(path),
        "gensteps must be (G,6,4) float32, got (3, 4, 4)",
    )
    si = _scint_gs(2000)
    np.save(path, si[si.view(np.int32)[:, 0, 0] == 16])  # in water: no emission spectrum
    _one_line(
        cli("propagate", WATER, "-o", tmp_path / "ev", "--gensteps", path),
        str(path),
        "q0.z matline: Water has no reemission_spectrum",
    )


# ----------------------------------------------------------------------------- properties


@given(st.binary(max_size=4096))
def test_material_map_parser_is_total(data: bytes) -> None:
    got = total(G.parse_material_map, data, "map.json")
    assert isinstance(got, list | BadInput)


@given(
    st.one_of(
        st.binary(max_size=2048),
        hnp.arrays(
            np.float32,
            st.tuples(st.integers(0, 4), st.sampled_from([6, 4]), st.sampled_from([4, 3])),
        ),
    )
)
def test_genstep_file_reader_is_total(tmp_path_factory, blob) -> None:
    path = tmp_path_factory.mktemp("g") / "gensteps.npy"
    if isinstance(blob, bytes):
        path.write_bytes(blob)
    else:
        np.save(path, blob)
    got = total(G.read_array, path)
    assert isinstance(got, np.ndarray | BadInput)


_SCENES: dict[str, object] = {}


def _scene(name: str):
    if name not in _SCENES:
        _SCENES[name] = load_scene(SCENES / f"{name}.toml")
    return _SCENES[name]


_LANE = st.one_of(
    st.floats(width=32, allow_nan=True, allow_infinity=True),
    st.floats(-2.0, 2.0, width=32),
    st.floats(-1200.0, 1200.0, width=32),
)


@st.composite
def genstep_arrays(draw) -> np.ndarray:
    """Mostly-plausible gensteps with any field disturbed: real mock rows as a base, then a
    few lanes replaced by anything (NaN, inf, huge, negative, integers as floats)."""
    base = _scint_gs(300) if draw(st.booleans()) else _water_gs(300)
    rows = draw(st.lists(st.integers(0, len(base) - 1), min_size=1, max_size=6))
    gs = base[rows].copy()
    for _ in range(draw(st.integers(0, 4))):
        r, q, lane = (
            draw(st.integers(0, len(gs) - 1)),
            draw(st.integers(0, 5)),
            draw(st.integers(0, 3)),
        )
        if q == 0 or draw(st.booleans()) and (q, lane) in ((3, 0), (4, 0), (5, 3)):
            gs.view(np.int32)[r, q, lane] = draw(
                st.integers(-(2**31), 2**31 - 1) | st.integers(-3, 20)
            )
        else:
            gs[r, q, lane] = draw(_LANE)
    return gs


@given(genstep_arrays(), st.sampled_from(["water-tank", "scint-tank", "tboolean-box"]))
def test_genstep_checks_are_total_and_what_passes_generates_finite_photons(gs, name) -> None:
    scene = _scene(name)
    got = total(G.check, gs, scene, "gensteps.npy")
    assert isinstance(got, G.Gensteps | BadInput)
    if isinstance(got, G.Gensteps):
        arr = got.array.copy()
        num = arr.view(np.int32)[:, 0, 3]
        num[:] = np.minimum(num, 50)  # a few photons of every genstep that passed
        n = int(num.sum())
        if n:
            ph = generate(arr, np.arange(n, dtype=np.uint64), 1, 0, scene.arrays())
            for key in ("pos", "dir", "pol", "t", "wl"):
                assert np.all(np.isfinite(ph[key])), key
            assert np.all((ph["wl"] >= 60) & (ph["wl"] <= 820))


def test_torch_gensteps_still_load(tmp_path: Path) -> None:
    """The torch gensteps a run writes are accepted back unchanged (gs.npy round trip)."""
    r = cli("propagate", TBOX, "-o", tmp_path / "a", "--photons", "2000", "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    got = G.load(tmp_path / "a" / "gs.npy", load_scene(TBOX))
    assert got.photons == 2000 and set(got.kinds) == {"TORCH"}


def test_mock_delivers_cerenkov_gensteps_that_propagate(tmp_path: Path) -> None:
    out = tmp_path / "delivery"
    r = cli(
        "mock",
        "--downlink",
        "251201002",
        "--events",
        "20",
        "--event-bytes",
        "400",
        "--sources",
        "1",
        "--runs",
        "1",
        "--chunks",
        "1",
        "--scene",
        "water-tank",
        "--gensteps-kind",
        "cerenkov",
        "--gensteps-photons",
        "50000",
        "-o",
        out,
    )
    assert r.returncode == 0, r.stderr
    gs = np.load(out / "gensteps.npy")
    assert (out / "scene.txt").read_text().strip() == "water-tank"
    assert set(gs.view(np.int32)[:, 0, 0]) == {15} and gs.view(np.int32)[:, 0, 3].sum() >= 50_000
    r = cli(
        "propagate",
        WATER,
        "-o",
        tmp_path / "ev",
        "--gensteps",
        out / "gensteps.npy",
        "--backend",
        "numpy",
    )
    assert r.returncode == 0, r.stderr
    _one_line(
        cli(
            "mock", "--downlink", "251201003", "--gensteps-kind", "cerenkov", "-o", tmp_path / "d2"
        ),
        "--gensteps-kind and --gensteps-file need --scene",
    )
    _one_line(
        cli("mock", "--downlink", "251201004", "--scene", "water-tank", "-o", tmp_path / "d3"),
        "water-tank has no [source]",
        "--gensteps-kind",
    )
