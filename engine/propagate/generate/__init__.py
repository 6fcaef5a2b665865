"""Photon generation from gensteps: one module per genstep kind and one switch on the
gentype, as Opticks' ``qsim::generate_photon`` (docs/propagation.md, "Gensteps").

Why a room of its own: the stepping loop should not care where a photon came from. Each
kind's module turns its gensteps into photons (position, time, direction, polarization,
wavelength) and says how many Philox blocks it used, so the photon's steps draw from the
next block on; ``generate`` finds each photon's genstep (cumulative numphoton), sends every
photon to its kind's module and returns the first flag (TO, CK or SI) with the photons.
The CUDA kernel has the same switch and the same three generators.
"""

from __future__ import annotations

import numpy as np

from engine.propagate import flags as F
from engine.propagate.generate import cerenkov, scint, torch
from engine.propagate.generate.kinds import CERENKOV, SCINTILLATION, TORCH, kinds
from engine.propagate.scene import SceneArrays

FIRST_FLAG = {TORCH: F.TO, CERENKOV: F.CK, SCINTILLATION: F.SI}
_FIELDS = (("pos", 3), ("dir", 3), ("pol", 3), ("t", 0), ("wl", 0), ("blk", 0))


def genstep_of(gs: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Row of each photon's genstep: the first whose cumulative numphoton exceeds it."""
    ends = np.cumsum(gs.view(np.int32)[:, 0, 3].astype(np.int64))
    return np.searchsorted(ends, idx.astype(np.int64), side="right")


def _one(
    kind: int, q: np.ndarray, idx: np.ndarray, seed: int, event: int, sa: SceneArrays
) -> dict[str, np.ndarray]:
    if kind == CERENKOV:
        return cerenkov.generate(q, idx, seed, event, sa)
    if kind == SCINTILLATION:
        return scint.generate(q, idx, seed, event, sa)
    return torch.generate(q, idx, seed, event)


def generate(
    gs: np.ndarray, idx: np.ndarray, seed: int, event: int, sa: SceneArrays
) -> dict[str, np.ndarray]:
    """Photons for global indices ``idx``: pos, dir, pol (3, n); t, wl (n,) float32; blk
    (the first step's Philox block) and flag (the first flag) uint32."""
    row = genstep_of(gs, idx)
    row_kind = kinds(gs.view(np.int32)[:, 0, 0])  # per genstep row: G, not n, comparisons
    span = row_kind[row.min() : row.max() + 1] if idx.size else row_kind[:1]
    if span.size and (span == span[0]).all():
        k = int(span[0])  # the usual case: one kind, no gathering of results
        out = _one(k, gs[row], idx, seed, event, sa)
        out["flag"] = np.full(idx.shape[0], FIRST_FLAG[k], np.uint32)
        return out
    kind = row_kind[row]
    n = idx.shape[0]
    out = {
        name: np.empty((k, n) if k else n, np.uint32 if name == "blk" else np.float32)
        for name, k in _FIELDS
    }
    out["flag"] = np.empty(n, np.uint32)
    for k in np.unique(kind):
        sel = np.flatnonzero(kind == k)
        part = _one(int(k), gs[row[sel]], idx[sel], seed, event, sa)
        for name, dim in _FIELDS:
            if dim:
                out[name][:, sel] = part[name]
            else:
                out[name][sel] = part[name]
        out["flag"][sel] = FIRST_FLAG[int(k)]
    return out
