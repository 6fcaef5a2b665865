"""Selection expressions: parsed with ast, walked against a whitelist, never eval'd."""

from __future__ import annotations

import numpy as np
import pytest

from engine.builder.select import Selection
from engine.core.errors import BadInput

FIELDS = {
    "color": np.array([b"red", b"blue", b"green", b"red", b"blue"], dtype="S5"),
    "run": np.array([10, 10, 20, 20, 30], dtype=np.int64),
    "energy": np.array([0.5, 1.5, 2.5, -1.0, 9.0]),
}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('color == "red"', [1, 0, 0, 1, 0]),
        ('"red" == color', [1, 0, 0, 1, 0]),
        ('color != "blue"', [1, 0, 1, 1, 0]),
        ('run >= 20 and color != "blue"', [0, 0, 1, 1, 0]),
        ('run == 10 or color == "green"', [1, 1, 1, 0, 0]),
        ('not color == "red"', [0, 1, 1, 0, 1]),
        ('color in ("red", "green")', [1, 0, 1, 1, 0]),
        ('color not in ["red"]', [0, 1, 1, 0, 1]),
        ("10 < run <= 20", [0, 0, 1, 1, 0]),
        ("energy < 0", [0, 0, 0, 1, 0]),
        ("energy > -2 and energy < 1", [1, 0, 0, 1, 0]),
        ('(run == 30 or run == 10) and not (color == "blue")', [1, 0, 0, 0, 0]),
    ],
)
def test_expressions(expr: str, expected: list[int]) -> None:
    got = Selection(expr).evaluate(FIELDS, 5)
    assert got.tolist() == [bool(x) for x in expected]


@pytest.mark.parametrize(
    "expr",
    [
        '__import__("os").system("true")',
        "run.real > 1",
        "run + 1 > 2",
        "lambda: 1",
        "[x for x in run]",
        "run[0] == 1",
        'open("f")',
        "run if run else run",
        "run == run2()",
    ],
)
def test_refuses_code(expr: str) -> None:
    with pytest.raises(BadInput, match="not allowed"):
        Selection(expr)


def test_syntax_error_and_missing_field() -> None:
    with pytest.raises(BadInput, match="syntax error"):
        Selection("color == ")
    with pytest.raises(BadInput, match="missing field 'colour'.*available: color, energy, run"):
        Selection('colour == "red"').evaluate(FIELDS, 5)


def test_names_lists_fields_read() -> None:
    assert Selection('run > 1 and color == "red" or energy < 2').names == {"run", "color", "energy"}
