"""Property tests of the CLI's boundary parsers: ``--select`` expressions, scene TOML,
skydeck.toml and the numbers options take. For any input each returns a value or the
project's one-line BadInput (``tests.props.total``), never another exception."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from engine.builder.select import MAX_DEPTH, Selection
from engine.cli.numbers import INT64_MAX, parse_float, parse_int
from engine.core.errors import BadInput
from engine.core.settings import Settings, parse_settings
from engine.core.workspace import AREAS, Workspace
from engine.propagate.scene import load_scene, parse_scene
from tests.propagate.conftest import base_scene
from tests.props import total

# ----------------------------------------------------------------------------- --select

FIELDS = {
    "color": np.array([b"red", b"blue", b"green"], dtype="S5"),
    "run": np.array([7, 8, 9], dtype=np.int64),
    "timestamp": np.array([1, 2, 3], dtype=np.uint64),
    "good": np.array([True, False, True]),
}

atoms = st.one_of(
    st.sampled_from(
        [
            "color",
            "run",
            "timestamp",
            "good",
            "missing",
            "x.y",
            "f()",
            "1",
            "-1",
            "'red'",
            '"blue"',
            "3.5",
            "1e400",
            "-1e400",
            "10**100",
            "None",
            "b'red'",
            "[1, 2]",
            "(1,)",
            "lambda: 1",
            "__import__('os')",
            "...",
            "{}",
        ]
    ),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=8).map(repr),
)
ops = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "in", "not in", "is", "+", "and", "or"])


def _expr(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds(lambda a, o, b: f"{a} {o} {b}", children, ops, children),
        children.map(lambda e: f"not {e}"),
        children.map(lambda e: f"({e})"),
        st.builds(lambda a, b: f"{a} in ({b}, {a})", children, children),
    )


expressions = st.recursive(atoms, _expr, max_leaves=40)


@given(st.text(max_size=400))
def test_select_parse_is_total_on_any_text(text: str) -> None:
    total(Selection, text)


@given(expressions)
def test_select_parse_and_evaluate_are_total(expr: str) -> None:
    sel = total(Selection, expr)
    if isinstance(sel, Selection):
        mask = total(sel.evaluate, FIELDS, 3, "small.h5")
        if not isinstance(mask, BadInput):
            assert mask.shape == (3,) and mask.dtype == bool


@given(st.integers(0, 6000), st.sampled_from(["not ", "not (", "-", "("]))
def test_select_deep_nesting_is_bounded(depth: int, unit: str) -> None:
    closing = ")" * unit.count("(") * depth
    value = total(Selection, unit * depth + ("x" if unit != "-" else "1 < x") + closing)
    if depth > MAX_DEPTH and unit.startswith("not"):
        assert isinstance(value, BadInput)


# ----------------------------------------------------------------------------- geant4 options


@given(st.text(max_size=40))
def test_geant4_energy_and_vector_options_are_total(text: str) -> None:
    from engine.cli.geant4 import energy_mev, vector

    e = total(energy_mev, text)
    assert isinstance(e, BadInput) or (isinstance(e, float) and 0 < e <= 1e7)
    v = total(vector("--position"), text)
    assert isinstance(v, BadInput) or (len(v) == 3 and all(math.isfinite(x) for x in v))


def test_geant4_energy_units() -> None:
    from engine.cli.geant4 import energy_mev

    assert [energy_mev(t) for t in ("1GeV", "5 MeV", "500keV", "2.5", "1e3 eV")] == [
        1000.0,
        5.0,
        0.5,
        2.5,
        0.001,
    ]


# ----------------------------------------------------------------------------- scene TOML

toml_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=10),
    st.floats(allow_nan=True, allow_infinity=True),
)
toml_values = st.recursive(
    toml_scalars,
    lambda c: st.one_of(
        st.lists(c, max_size=4), st.dictionaries(st.text(max_size=6), c, max_size=4)
    ),
    max_leaves=12,
)
SCENE_PATHS = [
    ("name",),
    ("materials",),
    ("materials", "Glass"),
    ("materials", "Glass", "refractive_index"),
    ("materials", "Glass", "absorption_length"),
    ("materials", "Glass", "reemission_prob"),
    ("materials", "Glass", "reemission_spectrum"),
    ("surfaces",),
    ("surfaces", "det"),
    ("surfaces", "det", "detect"),
    ("container",),
    ("container", "half_size"),
    ("container", "material"),
    ("container", "surface"),
    ("objects",),
    ("source",),
    ("source", "type"),
    ("source", "position"),
    ("source", "direction"),
    ("source", "radius"),
    ("source", "wavelength"),
    ("source", "time"),
    ("source", "photons"),
    ("source", "polarization"),
    ("settings",),
    ("settings", "max_bounce"),
    ("settings", "hitmask"),
    # what a charged-particle simulation reads
    ("materials", "Glass", "density"),
    ("materials", "Glass", "composition"),
    ("materials", "Glass", "composition", "H"),
    ("materials", "Glass", "nist"),
    ("materials", "Glass", "scintillation_yield"),
    ("materials", "Glass", "scintillation_components"),
    ("materials", "Glass", "birks_constant"),
    ("materials", "Glass", "resolution_scale"),
]


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node = doc
    for k in path[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[path[-1]] = value
    return doc


@given(st.lists(st.tuples(st.sampled_from(SCENE_PATHS), toml_values), max_size=4))
def test_scene_parse_is_total_on_mutated_scenes(edits: list[tuple[tuple[str, ...], Any]]) -> None:
    doc = base_scene()
    for path, value in edits:
        doc = _set(doc, path, value)
    total(parse_scene, doc, Path("scene.toml"))


@given(st.dictionaries(st.text(max_size=10), toml_values, max_size=6))
def test_scene_parse_is_total_on_any_document(doc: dict[str, Any]) -> None:
    total(parse_scene, doc, Path("scene.toml"))


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_scene_load_is_total_on_any_file(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "scene.toml"
        p.write_bytes(raw)
        total(load_scene, p)


# ----------------------------------------------------------------------------- skydeck.toml

CONFIG_KEYS = [(s, k) for s, t in Settings().as_dict().items() for k in t]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(CONFIG_KEYS) | st.tuples(st.text(max_size=6), st.text(max_size=6)),
            toml_values,
        ),
        max_size=4,
    )
)
@example([(("\n", ""), [])])  # a quoted TOML key may hold a line break: still one line
@example([(("pipline", "launcher"), "slurm")])  # a typo'd section: BadInput, never ignored
@example([(("watch", "polling"), "YES"), (("watch", "quiet_s"), 0)])
def test_config_validation_is_total(edits: list[tuple[tuple[str, str], Any]]) -> None:
    doc: dict[str, Any] = {}
    for (section, key), value in edits:
        doc = _set(doc, (section, key), value)
    value = total(parse_settings, doc, Path("skydeck.toml"))
    if not isinstance(value, BadInput):  # accepted: every consumer's use of it works
        assert isinstance(value, Settings) and set(doc) <= set(value.as_dict())
        ws = Workspace(root=Path("/nonexistent"), settings=value)
        assert isinstance(ws.reserve_bytes, int)
        for area in (*AREAS, "state_db", "flags"):
            assert isinstance(ws.path(area), Path)
        for section, table in value.as_dict().items():
            for key, v in table.items():
                if (section, key) != ("watch", "polling"):  # "yes" is read as True
                    assert v == doc.get(section, {}).get(key, v)  # what the file says, else default
                if isinstance(v, int | float) and not isinstance(v, bool):
                    assert math.isfinite(v) and v >= 0, (section, key, v)


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_workspace_open_is_total_on_any_config_file(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "skydeck.toml").write_bytes(raw)
        ws = total(Workspace.open, root)
        if isinstance(ws, Workspace):
            assert isinstance(ws.reserve_bytes, int)


# ----------------------------------------------------------------------------- CLI numbers

number_texts = st.one_of(
    st.text(max_size=40),
    st.integers(-(2**80), 2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"{f:e}"),
    st.from_regex(r"[+-]?[0-9_]{0,20}(\.[0-9]{0,5})?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
)


@given(number_texts, st.integers(-(2**64), 2**64), st.integers(0, 2**65))
def test_int_options_are_total_and_bounded(text: str, lo: int, span: int) -> None:
    v = total(parse_int, "--n", text, lo, lo + span)
    if not isinstance(v, BadInput):
        assert isinstance(v, int) and lo <= v <= lo + span


@given(number_texts)
def test_float_options_are_total_and_finite(text: str) -> None:
    v = total(parse_float, "--interval", text, 0.01, 86400.0)
    if not isinstance(v, BadInput):
        assert math.isfinite(v) and 0.01 <= v <= 86400.0


def test_counts_accept_the_usual_spellings() -> None:
    assert parse_int("--photons", "1e6", 0, 2**40) == 1_000_000
    assert parse_int("--photons", "1_000_000", 0, 2**40) == 1_000_000
    assert parse_int("--reserve", str(INT64_MAX), 0, INT64_MAX) == INT64_MAX
    for bad in ("inf", "nan", "1e400", "1.5", "", "0x10", "--1", "٣", "１０"):  # ASCII only
        assert isinstance(total(parse_int, "--photons", bad, 0, 2**40), BadInput), bad


# ----------------------------------------------------------------------------- `hits` input

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)
META_KEYS = [
    "photons",
    "mode",
    "backend",
    "device",
    "hitmask",
    "scene",
    "photons_per_second",
    "flagmask_counts",
    "terminal_counts",
    "geometry",
]
GOOD_META: dict[str, Any] = {
    "photons": 10,
    "mode": "production",
    "backend": "numpy",
    "device": "cpu",
    "hitmask": {"label": "SD"},
    "scene": {"name": "t"},
    "photons_per_second": 5.0,
    "flagmask_counts": {"0x40": 3},
    "terminal_counts": {"SD": 3},
    "geometry": {
        "container_half": [1.0, 1.0, 1.0],
        "objects": [{"shape": "sphere", "center": [0.0, 0.0, 0.0], "half_size": [0.5, 0.5, 0.5]}],
    },
}


@given(
    st.lists(st.tuples(st.sampled_from(META_KEYS) | st.text(max_size=6), json_values), max_size=3),
    st.lists(st.floats(width=32) | st.integers(0, 40).map(float), min_size=0, max_size=48),
    st.booleans(),
)
def test_hits_summary_is_total_on_any_meta_and_hits(
    edits: list[tuple[str, Any]], values: list[float], replace_meta: bool
) -> None:
    import json

    from engine.propagate.hits import render_text, summarize

    meta: Any = copy.deepcopy(GOOD_META)
    for key, value in edits:
        meta[key] = value
    if replace_meta and edits:
        meta = edits[0][1]
    ht = np.zeros((len(values) // 16 + 1, 4, 4), np.float32)
    ht.reshape(-1)[: len(values)] = np.asarray(values, np.float32)
    ht.view(np.uint32)[:, 3, 1] = np.arange(len(ht)) % 10  # sensors: container faces, sphere
    with tempfile.TemporaryDirectory() as d:
        ev = Path(d)
        (ev / "meta.json").write_text(json.dumps(meta))
        np.save(ev / "ht.npy", ht)
        s = total(summarize, ev)
        if not isinstance(s, BadInput):
            assert render_text(s)
