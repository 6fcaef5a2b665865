"""TORCH photons (Opticks' ``storch``): disc, point and sphere sources from a torch genstep.

Genstep quads: q1 position, time; q2 direction, weight; q3 polarization, wavelength; q5
radius, distance, mode (1: isotropic), type (int: disc 1, point 2, sphere 3). Two Philox
blocks per photon (0 and 1); the photon's steps start at block 2 (``BLOCKS``).
"""

from __future__ import annotations

import numpy as np

from engine.propagate.philox import uniforms
from engine.propagate.vec import TWO_PI, dot, normalize, rotate_uz

_F = np.float32
BLOCKS = 2


def generate(q: np.ndarray, idx: np.ndarray, seed: int, event: int) -> dict[str, np.ndarray]:
    """Torch photons for global indices ``idx``; ``q`` (n,6,4) is each photon's genstep."""
    typ = q.view(np.int32)[:, 5, 3]
    n = idx.shape[0]
    a = uniforms(idx, 0, seed, event)
    center = q[:, 1, :3].T.astype(_F, copy=False)
    mom = q[:, 2, :3].T.astype(_F, copy=False)
    given_pol = q[:, 3, :3].T.astype(_F, copy=False)
    radius = q[:, 5, 0]
    iso = q[:, 5, 2] > 0
    pos = center.copy()
    d = mom.copy()
    pol = np.zeros((3, n), dtype=_F)
    disc, point, sph = typ == 1, typ == 2, typ == 3
    ph = TWO_PI * a[1]
    cph, sph_ = np.cos(ph), np.sin(ph)
    if (point & iso).any() or sph.any():
        # isotropic unit vector from (a0, a1): cos = 2 a0 - 1, phi = 2 pi a1
        ct = _F(2) * a[0] - _F(1)
        st = np.sqrt(np.maximum(_F(0), _F(1) - ct * ct))
        isov = np.stack((st * cph, st * sph_, ct))
        d = np.where(point & iso, isov, d)
        if sph.any():
            pos = np.where(sph, center + np.abs(radius) * isov, pos)
            d = np.where(sph, np.where(radius > 0, isov, -isov), d)
    if disc.any():
        r = radius * np.sqrt(a[0])
        zero = np.zeros(n, _F)
        off = rotate_uz(mom, np.stack((r * cph, r * sph_, zero)))
        pos = np.where(disc, center + off, pos)
        tang = rotate_uz(mom, np.stack((sph_, -cph, zero)))
        pol = np.where(disc, tang, pol)
    # polarization: the given vector made transverse, else (disc aside) a random transverse
    # one from block 1 (drawn only when needed: counter-based draws need no bookkeeping)
    has_pol = dot(given_pol, given_pol) > 0
    if has_pol.any():
        proj = normalize(given_pol - dot(given_pol, d) * d)
        pol = np.where(has_pol, proj, pol)
    rand = ~has_pol & ~disc
    if rand.any():
        k = np.flatnonzero(rand)
        b = uniforms(idx[k], 1, seed, event)
        psi = TWO_PI * b[0]
        pol[:, k] = rotate_uz(d[:, k], np.stack((np.cos(psi), np.sin(psi), np.zeros(k.size, _F))))
    return {
        "pos": pos.astype(_F, copy=False),
        "t": q[:, 1, 3].astype(_F, copy=False),
        "dir": d.astype(_F, copy=False),
        "pol": pol.astype(_F, copy=False),
        "wl": q[:, 3, 3].astype(_F, copy=False),
        "blk": np.full(n, BLOCKS, np.uint32),
    }
