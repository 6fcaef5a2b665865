"""CERENKOV photons from a charged track's step, as Opticks' ``qcerenkov::generate`` (a port
of G4Cerenkov::PostStepDoIt's photon loop; docs/opticks.md, "Cerenkov gensteps").

Genstep quads (Opticks ``scerenkov``): q0 gentype, trackid, matline, numphoton; q1 pre-step
position, time; q2 DeltaPosition (not normalized), step length; q3 PDG code, charge, weight,
preVelocity; q4 BetaInverse, Wmin, Wmax (nm), maxCos; q5 maxSin2, MeanNumberOfPhotons1,
MeanNumberOfPhotons2, postVelocity.

Per photon:
1. wavelength: uniform in energy between Wmin and Wmax (lambda = Wmin Wmax / w with w
   uniform in [Wmin, Wmax]), n from the material's table there, cos(theta) = BetaInverse / n;
   accept when u * maxSin2 <= sin^2(theta), at most ``MAX_CK_TRIES`` tries (Opticks' cap);
2. azimuth phi uniform about the step direction; direction (sin cos phi, sin sin phi, cos)
   and polarization (cos cos phi, cos sin phi, -sin), both rotateUz'd onto the step;
3. position along the step by rejection on the linear yield between MeanNumberOfPhotons1
   and 2; time from the mid velocity between pre- and post-step velocities.

Draws: one Philox block per wavelength try (x wavelength, y acceptance, z the azimuth if
this try is accepted), then one block per position try (x fraction, y acceptance). The
photon's steps start at the block after the last one it used.
"""

from __future__ import annotations

import numpy as np

from engine.propagate.lookup import index_at
from engine.propagate.params import MAX_TRIES, tries_per_pass
from engine.propagate.philox import first_accepted, try_uniforms
from engine.propagate.scene import SceneArrays
from engine.propagate.vec import TWO_PI, normalize, rotate_uz

_F = np.float32
MAX_CK_TRIES = 100  # qcerenkov::wavelength_sampled_bndtex's loop cap


def generate(
    q: np.ndarray, idx: np.ndarray, seed: int, event: int, sa: SceneArrays
) -> dict[str, np.ndarray]:
    n = idx.shape[0]
    mat = q.view(np.int32)[:, 0, 2]
    x0, t0 = q[:, 1, :3].T, q[:, 1, 3]
    dp, step = q[:, 2, :3].T, q[:, 2, 3]
    pre_v, post_v = q[:, 3, 3], q[:, 5, 3]
    bi, wmin, wmax = q[:, 4, 0], q[:, 4, 1], q[:, 4, 2]
    maxsin2, mnp1, mnp2 = q[:, 5, 0], q[:, 5, 1], q[:, 5, 2]
    p0 = normalize(dp)
    blk = np.zeros(n, np.uint32)
    wl = np.empty(n, _F)
    ct = np.empty(n, _F)
    s2 = np.empty(n, _F)
    uphi = np.empty(n, _F)
    # tries are drawn several per pass (philox.try_uniforms): the same numbers, the same
    # first accepted try, the same blocks used as the kernel's one-at-a-time loop
    todo = np.arange(n)
    done = 0
    while todo.size and done < MAX_CK_TRIES:
        t = tries_per_pass(done, todo.size, MAX_CK_TRIES)
        u = try_uniforms(idx[todo], blk[todo], t, 1, seed, event)[:, 0]  # (t, 4, m)
        lo, hi = wmin[todo], wmax[todo]
        w = lo + u[:, 0] * (hi - lo)
        lam = lo * hi / w  # reciprocal: uniform in photon energy
        m = np.broadcast_to(mat[todo], lam.shape)
        c = bi[todo] / index_at(sa, m.ravel(), lam.ravel()).reshape(lam.shape)
        s = np.maximum(_F(0), (_F(1) - c) * (_F(1) + c))
        anyok, k = first_accepted(~(u[:, 1] * maxsin2[todo] > s))
        k = np.where(anyok, k, t - 1)  # none accepted: the last try's values stand
        cols = np.arange(todo.size)
        wl[todo], ct[todo], s2[todo] = lam[k, cols], c[k, cols], s[k, cols]
        uphi[todo] = u[k, 2, cols]
        blk[todo] += (k + 1).astype(np.uint32)
        todo = todo[~anyok]
        done += t
    st = np.sqrt(s2)
    ph = TWO_PI * uphi
    cp, sp = np.cos(ph), np.sin(ph)
    mom = rotate_uz(p0, np.stack((st * cp, st * sp, ct)))
    pol = rotate_uz(p0, np.stack((ct * cp, ct * sp, -st)))

    mx = np.maximum(mnp1, mnp2)
    dn = mnp1 - mnp2
    frac = np.empty(n, _F)
    todo = np.arange(n)
    done = 0
    while todo.size and done < MAX_TRIES:
        t = tries_per_pass(done, todo.size)
        u = try_uniforms(idx[todo], blk[todo], t, 1, seed, event)[:, 0]
        f = u[:, 0]
        anyok, k = first_accepted(~(u[:, 1] * mx[todo] > mnp1[todo] - f * dn[todo]))
        k = np.where(anyok, k, t - 1)
        frac[todo] = f[k, np.arange(todo.size)]
        blk[todo] += (k + 1).astype(np.uint32)
        todo = todo[~anyok]
        done += t
    mid_v = pre_v + frac * (post_v - pre_v) * _F(0.5)
    t = t0 + frac * step / mid_v
    pos = x0 + frac * dp
    return {
        "pos": pos.astype(_F, copy=False),
        "t": t.astype(_F, copy=False),
        "dir": mom,
        "pol": pol,
        "wl": wl,
        "blk": blk,
    }
