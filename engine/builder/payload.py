"""Payload rows derived from their timestamp, so any reader can check it got the right event.

The seed's mock data wrote identical rows, which made a wrong match invisible. Here row ``j``
of the event at timestamp ``ts`` in source ``salt`` is ``uint32(ts * K1 + salt * K2) + j``
(wrapping), viewed as int32. It is cheap to generate at GB/s and to verify.
"""

from __future__ import annotations

import numpy as np

PAYLOAD_SCHEME = "skydeck-ts-hash-v1"
_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xC2B2AE3D27D4EB4F)


def row_base(timestamps: np.ndarray, salt: int) -> np.ndarray:
    ts = np.asarray(timestamps, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = ts * _K1 + np.uint64(salt) * _K2
        h ^= h >> np.uint64(29)
    return (h & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def rows_for(
    timestamps: np.ndarray, width: int, salt: int, out: np.ndarray | None = None
) -> np.ndarray:
    """(len(timestamps), width) int32 payload rows; writes into ``out`` when given."""
    base = row_base(timestamps, salt)
    if out is None:
        out = np.empty((len(base), width), dtype=np.int32)
    u = out.view(np.uint32)
    np.add(base[:, None], np.arange(width, dtype=np.uint32)[None, :], out=u)
    return out
