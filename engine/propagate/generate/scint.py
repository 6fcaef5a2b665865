"""SCINTILLATION photons from a charged track's step, as Opticks' ``qscint::generate`` (a port
of G4Scintillation's / DsG4Scintillation's photon loop; docs/opticks.md, "Scintillation
gensteps"). One genstep per time component.

Genstep quads (Opticks ``sscint``): q0 gentype, trackid, matline, numphoton; q1 pre-step
position, time; q2 DeltaPosition, step length; q3 PDG code, charge, weight, meanVelocity;
q4.x component index (int); q5.x ScintillationTime (ns) of this component.

Per photon: isotropic direction; polarization perpendicular to it at a random angle about
it; wavelength from the material's emission inverse CDF (the one reemission uses); position
uniform along the step for a charged particle (the post-step point for a neutral one); time
t0 + f * step / meanVelocity - ScintillationTime * ln(u).

Draws: block 0 (direction cos, azimuth, polarization angle, wavelength), block 1 (position
fraction, decay time); the photon's steps start at block 2.
"""

from __future__ import annotations

import numpy as np

from engine.propagate.lookup import icdf_sample
from engine.propagate.philox import uniforms
from engine.propagate.scene import SceneArrays
from engine.propagate.vec import TWO_PI, cross, normalize

_F = np.float32
BLOCKS = 2


def generate(
    q: np.ndarray, idx: np.ndarray, seed: int, event: int, sa: SceneArrays
) -> dict[str, np.ndarray]:
    n = idx.shape[0]
    mat = q.view(np.int32)[:, 0, 2]
    x0, t0 = q[:, 1, :3].T, q[:, 1, 3]
    dp, step = q[:, 2, :3].T, q[:, 2, 3]
    charge, mean_v, tau = q[:, 3, 1], q[:, 3, 3], q[:, 5, 0]
    u = uniforms(idx, 0, seed, event)
    cost = _F(1) - _F(2) * u[0]
    sint = np.sqrt((_F(1) - cost) * (_F(1) + cost))
    phi = TWO_PI * u[1]
    cosp, sinp = np.cos(phi), np.sin(phi)
    mom = np.stack((sint * cosp, sint * sinp, cost))
    pol = np.stack((cost * cosp, cost * sinp, -sint))
    phi = TWO_PI * u[2]
    cosp, sinp = np.cos(phi), np.sin(phi)
    pol = normalize(cosp * pol + sinp * cross(mom, pol))
    wl = icdf_sample(sa, mat, u[3])
    v = uniforms(idx, 1, seed, event)
    frac = np.where(charge == 0, _F(1), v[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        along = np.where(step > 0, frac * step / mean_v, _F(0))
    t = t0 + (along - tau * np.log(v[1]))
    pos = x0 + frac * dp
    return {
        "pos": pos.astype(_F, copy=False),
        "t": t.astype(_F, copy=False),
        "dir": mom.astype(_F, copy=False),
        "pol": pol.astype(_F, copy=False),
        "wl": wl,
        "blk": np.full(n, BLOCKS, np.uint32),
    }
