"""GDML quantities: a tiny arithmetic evaluator over numbers, unit names and defined
constants, never ``eval`` (docs/propagation.md, "Geometry").

Why: GDML is XML from outside; its attributes hold expressions such as ``2.952*eV`` or
``20*m`` (hand-written files) or bare numbers in Geant4's internal units (mm, ns, MeV, rad:
what Geant4's own writer emits). Geant4 evaluates them with CLHEP's expression evaluator;
here a recursive-descent parser accepts only numbers, the unit names of ``UNITS`` (CLHEP's
values), the file's own ``<constant>``/``<variable>``/``<quantity>`` names, ``+ - * / ^``
and parentheses, bounded in length and depth. Anything else is ``BadInput`` naming the
text, never another exception (a Hypothesis test holds it to that).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from engine.core.errors import BadInput

MAX_EXPR = 256  # characters
MAX_DEPTH = 32  # nested parentheses / unary signs
MAX_ABS = 1e300

_E_SI = 1.602176634e-19
_JOULE = 1e-6 / _E_SI  # MeV
_KG = _JOULE * 1e9 * 1e9 / (1e3 * 1e3)  # joule * s^2 / m^2 in CLHEP units
# CLHEP's unit values (mm, ns, MeV, eplus, kelvin, mole, rad = 1)
UNITS: dict[str, float] = {
    "pi": math.pi,
    "twopi": 2 * math.pi,
    "halfpi": math.pi / 2,
    "mm": 1.0,
    "millimeter": 1.0,
    "cm": 10.0,
    "centimeter": 10.0,
    "m": 1000.0,
    "meter": 1000.0,
    "km": 1e6,
    "kilometer": 1e6,
    "um": 1e-3,
    "micrometer": 1e-3,
    "nm": 1e-6,
    "nanometer": 1e-6,
    "pc": 3.0856775807e19,
    "angstrom": 1e-7,
    "fermi": 1e-12,
    "mm2": 1.0,
    "cm2": 100.0,
    "m2": 1e6,
    "mm3": 1.0,
    "cm3": 1e3,
    "m3": 1e9,
    "L": 1e6,
    "ns": 1.0,
    "nanosecond": 1.0,
    "s": 1e9,
    "second": 1e9,
    "ms": 1e6,
    "millisecond": 1e6,
    "us": 1e3,
    "microsecond": 1e3,
    "ps": 1e-3,
    "picosecond": 1e-3,
    "eV": 1e-6,
    "electronvolt": 1e-6,
    "keV": 1e-3,
    "kiloelectronvolt": 1e-3,
    "MeV": 1.0,
    "megaelectronvolt": 1.0,
    "GeV": 1e3,
    "gigaelectronvolt": 1e3,
    "TeV": 1e6,
    "PeV": 1e9,
    "joule": _JOULE,
    "rad": 1.0,
    "radian": 1.0,
    "mrad": 1e-3,
    "milliradian": 1e-3,
    "deg": math.pi / 180,
    "degree": math.pi / 180,
    "sr": 1.0,
    "steradian": 1.0,
    "kg": _KG,
    "kilogram": _KG,
    "g": _KG * 1e-3,
    "gram": _KG * 1e-3,
    "mg": _KG * 1e-6,
    "milligram": _KG * 1e-6,
    "mole": 1.0,
    "mol": 1.0,
    "kelvin": 1.0,
    "K": 1.0,
    "percent": 0.01,
    "perCent": 0.01,
    "perThousand": 1e-3,
    "perMillion": 1e-6,
}
_TOKEN = re.compile(
    r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|(\S))"
)


def _tokens(text: str, where: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # only trailing blanks are left
            break
        num, name, op = m.groups()
        if num is not None:
            out.append(("num", num))
        elif name is not None:
            out.append(("name", name))
        elif op in "+-*/^()":
            out.append(("op", op))
        else:
            raise BadInput(f"{where}: {text[:64]!r}: unexpected {op!r}")
        pos = m.end()
    return out


class _Parser:
    def __init__(
        self, toks: list[tuple[str, str]], names: Mapping[str, float], where: str, text: str
    ) -> None:
        self.toks, self.names, self.where, self.text = toks, names, where, text
        self.i = 0
        self.depth = 0

    def bad(self, why: str) -> BadInput:
        return BadInput(f"{self.where}: {self.text[:64]!r}: {why}")

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        t = self.peek()
        if t is None:
            raise self.bad("ends too early")
        self.i += 1
        return t

    def expr(self) -> float:
        v = self.term()
        while (t := self.peek()) is not None and t in (("op", "+"), ("op", "-")):
            self.i += 1
            r = self.term()
            v = v + r if t[1] == "+" else v - r
        return self.check(v)

    def term(self) -> float:
        v = self.power()
        while (t := self.peek()) is not None and t in (("op", "*"), ("op", "/")):
            self.i += 1
            r = self.power()
            if t[1] == "/" and r == 0:
                raise self.bad("division by zero")
            v = v * r if t[1] == "*" else v / r
            v = self.check(v)
        return v

    def power(self) -> float:
        base = self.unary()
        if self.peek() == ("op", "^"):
            self.i += 1
            exp = self.power()  # right-associative
            try:
                v = math.pow(base, exp)
            except (OverflowError, ValueError):
                raise self.bad("power out of range") from None
            if isinstance(v, complex):  # pragma: no cover - math.pow never returns complex
                raise self.bad("power out of range")
            return self.check(v)
        return base

    def unary(self) -> float:
        t = self.peek()
        if t in (("op", "+"), ("op", "-")):
            self.i += 1
            self.enter()
            v = self.unary()
            self.depth -= 1
            return -v if t[1] == "-" else v
        return self.atom()

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.bad(f"nested deeper than {MAX_DEPTH}")

    def atom(self) -> float:
        kind, text = self.take()
        if kind == "num":
            return self.check(float(text))
        if kind == "name":
            if text in self.names:
                return self.check(float(self.names[text]))
            if text in UNITS:
                return UNITS[text]
            raise self.bad(f"unknown name {text!r} (not a unit or a defined constant)")
        if text == "(":
            self.enter()
            v = self.expr()
            if self.take() != ("op", ")"):
                raise self.bad("missing ')'")
            self.depth -= 1
            return v
        raise self.bad(f"unexpected {text!r}")

    def check(self, v: float) -> float:
        if not math.isfinite(v) or abs(v) > MAX_ABS:
            raise self.bad("value out of range")
        return v


def evaluate(text: str, names: Mapping[str, float] | None = None, where: str = "value") -> float:
    """The value of ``text`` in CLHEP internal units; BadInput naming ``where`` otherwise."""
    if not isinstance(text, str):
        raise BadInput(f"{where}: expected an expression, got {type(text).__name__}")
    if len(text) > MAX_EXPR:
        raise BadInput(f"{where}: expression longer than {MAX_EXPR} characters")
    toks = _tokens(text, where)
    if not toks:
        raise BadInput(f"{where}: empty expression")
    p = _Parser(toks, names or {}, where, text)
    v = p.expr()
    if p.i != len(toks):
        raise p.bad(f"unexpected {toks[p.i][1]!r}")
    return v


def unit(text: str | None, kind: str, where: str) -> float:
    """A unit attribute (``lunit="cm"``, ``unit="g/cm3"``): evaluated like a value, and
    positive; None gives 1 (Geant4's default: internal units)."""
    if text is None:
        return 1.0
    v = evaluate(text, None, f"{where} {kind}")
    if not v > 0:
        raise BadInput(f"{where}: {kind} {text!r} is not a positive unit")
    return v
