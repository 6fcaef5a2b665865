"""Disk-pressure guard: refuse work whose projected output would eat into the reserve.

The Opticks disk-pressure episode and HalfPipe's full staging areas both ended with jobs
dying half-way; checking before starting turns that into one clear refusal.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from engine.core.errors import BadInput


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def existing_parent(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(existing_parent(path)).free


def check_space(path: Path, need: int, reserve: int = 0, what: str = "output") -> None:
    """Raise BadInput when writing ``need`` bytes under ``path`` would leave less than ``reserve``."""
    free = free_bytes(path)
    if need > free - reserve:
        raise BadInput(
            f"not enough disk space: {what} needs about {human_bytes(need)}, "
            f"{human_bytes(free)} free with a reserve of {human_bytes(reserve)}",
            path,
        )


def env_reserve(default: int = 0) -> int:
    """Reserve override for commands run outside a workspace (``SKYDECK_RESERVE_BYTES``)."""
    text = os.environ.get("SKYDECK_RESERVE_BYTES")
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:  # never silently drop a reserve someone meant to keep
        raise BadInput(
            f"SKYDECK_RESERVE_BYTES must be a whole number of bytes, got {text[:40]!r}"
        ) from None
    if abs(value) >= 2**63:
        raise BadInput(f"SKYDECK_RESERVE_BYTES is out of range: {text[:40]}")
    return value
