"""Numbers given on the command line: parsed with bounds, at parse time, into one clear line.

A number a user types sizes what a job allocates or starts (``--batch`` buffers, ``--photons``
gensteps, ``--workers`` processes). Left unbounded, ``--photons inf`` ended in an
OverflowError traceback and ``--batch 99999999999999`` asked for petabytes. Every numeric
option therefore goes through one of these parsers: it returns a value within the option's
documented range or raises ``BadInput`` (exit 2) naming the option, never another exception.
``cli.main`` turns a BadInput raised while parsing into the usual one line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from engine.core.errors import BadInput

INT64_MAX = 2**63 - 1
# digits, optionally a fraction and an exponent: "1000000", "1e6", "1_000_000", "2.5e3"
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)  # not "٣"
_MAX_TEXT = 64  # characters: longer is no count a person means


def _text(option: str, text: object) -> str:
    if not isinstance(text, str):
        raise BadInput(f"{option}: expected a number, got {type(text).__name__}")
    t = text.strip().replace("_", "")
    if len(t) > _MAX_TEXT or not _NUMBER.fullmatch(t):
        raise BadInput(f"{option}: not a number: {text[:_MAX_TEXT]!r}")
    return t


def parse_int(option: str, text: object, lo: int, hi: int) -> int:
    """An integer within ``lo..hi``; ``1e6`` and ``1_000_000`` are accepted when whole."""
    t = _text(option, text)
    if re.fullmatch(r"[+-]?\d+", t, re.ASCII):
        v = int(t)
    else:
        exp = t.lower().partition("e")[2]
        if exp and abs(int(exp)) > 30:  # 1e400 is no count (and would be inf as a float)
            raise BadInput(f"{option}: {text!r} is outside {lo}..{hi}")
        f = float(t)
        if not math.isfinite(f) or f != math.floor(f):
            raise BadInput(f"{option}: not a whole number: {text!r}")
        v = int(f)
    if not lo <= v <= hi:
        raise BadInput(f"{option}: {v} is outside {lo}..{hi}")
    return v


def parse_float(option: str, text: object, lo: float, hi: float) -> float:
    """A finite number within ``lo..hi``."""
    t = _text(option, text)
    v = float(t)
    if not (math.isfinite(v) and lo <= v <= hi):
        raise BadInput(f"{option}: {text!r} is outside {lo:g}..{hi:g}")
    return v


def int_in(option: str, lo: int, hi: int) -> Callable[[str], int]:
    """An argparse ``type=`` for an integer option bounded to ``lo..hi``."""
    return lambda text: parse_int(option, text, lo, hi)


def float_in(option: str, lo: float, hi: float) -> Callable[[str], float]:
    """An argparse ``type=`` for a finite number option bounded to ``lo..hi``."""
    return lambda text: parse_float(option, text, lo, hi)
