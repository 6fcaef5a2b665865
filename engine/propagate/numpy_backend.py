"""The NumPy backend: one vector lane per photon, vectorized over the photons still alive.

A chunk of photons is generated from the gensteps and stepped together; every loop
iteration is one step for every live photon, so the bounce count is the loop counter and
dead photons are compacted away after each step. Chunks bound the memory at any photon
count, and chunks are independent (their random numbers depend only on photon index), so
they can run in any number of processes with identical results.

Random numbers: each decision takes whole Philox blocks (4 uniforms) from the photon's own
block counter, in the same order as ``assets/kernels/propagate.cu``:
    generation   blocks 0.. (``engine.propagate.generate``: torch and scintillation 2,
                 Cerenkov one per rejection try); the steps go on from the next block
    each step    1 block: u0 scatter distance, u1 absorption distance, u2 boundary or
                 surface decision, u3 reemission decision
    reemission   2 blocks; Rayleigh 2 blocks per rejection try; Lambertian 1 block per try.

Time advances with the group velocity of the medium at the photon's wavelength (the
scene's GROUPVEL row, derived from the refractive index as Geant4 does).

Its inputs, outputs and shared constants (``Params``, ``ChunkResult``, ``C_LIGHT`` ...) live
in ``engine.propagate.params``, which the GPU host side imports as well.
"""

from __future__ import annotations

import numpy as np

from engine.propagate import flags as F
from engine.propagate.generate import generate
from engine.propagate.geometry.trace import nearest_sides
from engine.propagate.lookup import icdf_sample, index_at, props_at, surface_at
from engine.propagate.params import (
    MAX_TRIES,
    ChunkResult,
    Params,
    slice_order,
    tries_per_pass,
)
from engine.propagate.philox import first_accepted, try_uniforms, uniforms
from engine.propagate.scene import WL_MIN, SceneArrays
from engine.propagate.vec import TWO_PI, cross, dot, normalize, rotate_uz

_F = np.float32


# ----------------------------------------------------------------------------- physics


def fresnel(
    d: np.ndarray,
    pol: np.ndarray,
    normal: np.ndarray,
    n1: np.ndarray,
    n2: np.ndarray,
    u: np.ndarray,
):
    """Dielectric boundary with polarization (G4OpBoundaryProcess dielectric_dielectric as
    in Opticks propagate_at_boundary, docs/opticks.md 3.4). Returns dir, pol, reflect."""
    c1 = -dot(d, normal)
    nrm = normal * np.where(c1 < 0, _F(-1), _F(1))  # exact: a sign flip
    c1 = np.abs(c1)
    eta = n1 / n2
    c2sq = _F(1) - eta * eta * (_F(1) - c1 * c1)
    tir = c2sq < 0
    c2 = np.sqrt(np.maximum(c2sq, _F(0)))
    a = cross(d, nrm)
    alen = np.sqrt(dot(a, a))
    normal_inc = alen < _F(1e-6)
    if normal_inc.all():
        return _fresnel_normal(d, pol, nrm, n1, n2, u, c1, c2, eta, tir)
    with np.errstate(divide="ignore", invalid="ignore"):
        a_trans = np.where(normal_inc, pol, a / alen)
    e_perp = np.where(normal_inc, _F(0), dot(pol, a_trans))
    ev = pol - e_perp * a_trans
    e_parl = np.where(normal_inc, _F(1), np.sqrt(dot(ev, ev)))
    n1c1 = n1 * c1
    n2c2 = n2 * c2
    n2c1 = n2 * c1
    n1c2 = n1 * c2
    t_s = _F(2) * n1c1 * e_perp / (n1c1 + n2c2)
    t_p = _F(2) * n1c1 * e_parl / (n2c1 + n1c2)
    r_s = t_s - e_perp
    r_p = (n2 / n1) * t_p - e_parl
    with np.errstate(divide="ignore", invalid="ignore"):
        trans = np.where(tir, _F(0), (n2c2 / n1c1) * (t_s * t_s + t_p * t_p))
    reflect = u > trans
    # reflect: 1*d + (2 c1) N, transmit: eta d + (eta c1 - c2) N (1*d is exact)
    ka = np.where(reflect, _F(1), eta)
    kb = np.where(reflect, _F(2) * c1, eta * c1 - c2)
    new_d = ka * d + kb * nrm
    a_paral = normalize(cross(new_d, a_trans))
    es = np.where(reflect, r_s, t_s)
    ep = np.where(reflect, r_p, t_p)
    with np.errstate(divide="ignore", invalid="ignore"):
        el = np.sqrt(es * es + ep * ep)
        es, ep = es / el, ep / el
    new_pol = es * a_trans + ep * a_paral
    if tir.any():
        k = np.flatnonzero(tir)
        pk, nk = pol[:, k], nrm[:, k]
        new_pol[:, k] = -pk + _F(2) * dot(pk, nk) * nk
    if normal_inc.any():
        k = np.flatnonzero(normal_inc)
        flip = np.where(reflect[k] & (n2[k] > n1[k]), _F(-1), _F(1))
        new_pol[:, k] = flip * pol[:, k]
    return new_d.astype(_F, copy=False), new_pol.astype(_F, copy=False), reflect


def _fresnel_normal(d, pol, nrm, n1, n2, u, c1, c2, eta, tir):
    """``fresnel`` when every photon is at normal incidence (e_perp = 0, e_parl = 1): the
    same expressions in the same order, minus the ones whose results are overwritten, so
    the result is bit-identical to the general path (and to the kernel)."""
    n1c1 = n1 * c1
    n2c2 = n2 * c2
    t_p = _F(2) * n1c1 / (n2 * c1 + n1 * c2)
    with np.errstate(divide="ignore", invalid="ignore"):
        trans = np.where(tir, _F(0), (n2c2 / n1c1) * (t_p * t_p))
    reflect = u > trans
    ka = np.where(reflect, _F(1), eta)
    kb = np.where(reflect, _F(2) * c1, eta * c1 - c2)
    new_d = ka * d + kb * nrm
    flip = np.where(reflect & (n2 > n1), _F(-1), _F(1))
    return new_d.astype(_F, copy=False), (flip * pol).astype(_F, copy=False), reflect


def rayleigh(
    d: np.ndarray, pol: np.ndarray, idx: np.ndarray, blk: np.ndarray, seed: int, event: int
):
    """Rayleigh scatter (G4OpRayleigh as in Opticks rayleigh_scatter;
    docs/opticks.md, "Rayleigh scattering").
    Rejection sampling; each try takes two blocks. Updates ``blk`` in place."""
    d, pol = d.copy(), pol.copy()
    todo = np.arange(d.shape[1])
    done = 0
    while todo.size and done < MAX_TRIES:
        t = tries_per_pass(done, todo.size)
        u = try_uniforms(idx[todo], blk[todo], t, 2, seed, event)
        ua, ub = u[:, 0], u[:, 1]  # (t, 4, m)
        od, op = d[:, None, todo], pol[:, None, todo]
        ct = np.where(ua[:, 1] < _F(0.5), -ua[:, 0], ua[:, 0])
        st = np.sqrt(np.maximum(_F(0), _F(1) - ct * ct))
        ph = TWO_PI * ua[:, 2]
        nd = rotate_uz(od, np.stack((st * np.cos(ph), st * np.sin(ph), ct)))
        cp = op - dot(op, nd) * nd
        clen = np.sqrt(dot(cp, cp))
        with np.errstate(divide="ignore", invalid="ignore"):
            cp = np.where(ua[:, 3] < _F(0.5), -cp, cp) / clen
        deg = clen == 0  # new direction along the old polarization: a random transverse one
        if deg.any():
            ph3 = TWO_PI * ua[:, 3][deg]
            cp[:, deg] = rotate_uz(
                nd[:, deg], np.stack((np.cos(ph3), np.sin(ph3), np.zeros_like(ph3)))
            )
        c = dot(cp, op)
        anyok, k = first_accepted(c * c >= ub[:, 0])
        sel = np.flatnonzero(anyok)
        acc, kk = todo[sel], k[sel]
        d[:, acc] = nd[:, kk, sel]
        pol[:, acc] = cp[:, kk, sel]
        blk[acc] += (2 * (kk + 1)).astype(np.uint32)
        todo = todo[~anyok]
        blk[todo] += np.uint32(2 * t)
        done += t
    return d, pol


def lambertian(
    d: np.ndarray,
    pol: np.ndarray,
    normal: np.ndarray,
    idx: np.ndarray,
    blk: np.ndarray,
    seed: int,
    event: int,
):
    """Diffuse reflection: cosine-law direction about the normal facing the photon, by
    rejection (Opticks propagate_at_surface), one block per try; pol about the facet."""
    nin = np.where(dot(d, normal) > 0, -normal, normal)
    nd = nin.copy()
    todo = np.arange(d.shape[1])
    done = 0
    while todo.size and done < MAX_TRIES:
        t = tries_per_pass(done, todo.size)
        u = try_uniforms(idx[todo], blk[todo], t, 1, seed, event)[:, 0]  # (t, 4, m)
        a = _F(2) * u[:, 0] - _F(1)
        b = _F(2) * u[:, 1] - _F(1)
        s = a * a + b * b
        root = _F(2) * np.sqrt(np.maximum(_F(0), _F(1) - s))
        v = np.stack((a * root, b * root, _F(2) * s - _F(1)))
        c = dot(v, nin[:, None, todo])
        v = np.where(c < 0, -v, v)
        anyok, k = first_accepted((s < _F(1)) & (u[:, 2] < np.abs(c)))
        sel = np.flatnonzero(anyok)
        nd[:, todo[sel]] = v[:, k[sel], sel]
        blk[todo[sel]] += (k[sel] + 1).astype(np.uint32)
        todo = todo[~anyok]
        blk[todo] += np.uint32(t)
        done += t
    f = normalize(nd - d)
    new_pol = -pol + _F(2) * dot(pol, f) * f
    return nd.astype(_F), new_pol.astype(_F)


# ----------------------------------------------------------------------------- stepping
# State lives in three stacked arrays so that compaction after each step is three gathers:
#   fs  float32 (11, n): pos xyz, dir xyz, pol xyz, t, wavelength
#   ist uint32  (7, n):  (unused), rng block, last flag, flagmask, boundary, sensor, local index
#   u64 uint64  (2, n):  photon index, seqhis
_VOL, _BLK, _FLAG, _FM, _BND, _SEN, _LOC = range(7)


def _compress(fs: np.ndarray, ist: np.ndarray, domain: tuple[float, float]) -> np.ndarray:
    """Opticks-style compressed step record (n, 2, 4) int16: shorts of pos/time over the
    domain, then pol xyz and wavelength as bytes, boundary and flag."""
    ext, tmax = _F(domain[0]), _F(domain[1])
    sh = np.empty((2, 4, fs.shape[1]), np.int16)
    for a in range(3):
        sh[0, a] = np.clip(np.rint(_F(32767) * fs[a] / ext), -32767, 32767)
    sh[0, 3] = np.clip(np.rint(_F(32767) * fs[9] / tmax), -32767, 32767)
    p8 = np.clip(np.rint((fs[6:9] + _F(1)) * _F(127)), 0, 255).astype(np.uint16)
    w8 = np.clip(np.rint(_F(255) * (fs[10] - _F(WL_MIN)) / _F(760)), 0, 255).astype(np.uint16)
    sh[1, 0] = (p8[0] | (p8[1] << 8)).view(np.int16)
    sh[1, 1] = (p8[2] | (w8 << 8)).view(np.int16)
    sh[1, 2] = ist[_BND].astype(np.int16)
    sh[1, 3] = ist[_FLAG].astype(np.int16)
    return np.moveaxis(sh, 2, 0)


def _pack(fs: np.ndarray, ist: np.ndarray, u64: np.ndarray) -> np.ndarray:
    """Final photons in the (n,4,4) float32 layout of docs/design.md ("Photon layout")."""
    n = fs.shape[1]
    out = np.empty((n, 4, 4), np.float32)
    out[:, 0, :3] = fs[0:3].T
    out[:, 0, 3] = fs[9]
    out[:, 1, :3] = fs[3:6].T
    out[:, 1, 3] = 1.0
    out[:, 2, :3] = fs[6:9].T
    out[:, 2, 3] = fs[10]
    u = out.view(np.uint32)
    u[:, 3, 0] = (ist[_BND] << np.uint32(16)) | ist[_FLAG]
    u[:, 3, 1] = ist[_SEN]
    u[:, 3, 2] = (u64[0] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    u[:, 3, 3] = ist[_FM]
    return out


_NIB = np.zeros(1 << 14, np.uint64)
for _b in range(14):
    _NIB[1 << _b] = _b + 1


def _at(a: np.ndarray, i: np.ndarray | slice) -> np.ndarray:
    """Columns i of a (k, m) or (m,) array: ``np.take`` row-wise, several times faster
    than NumPy's fancy indexing of a 2-d array (``a[:, i]``, ``a[3:6, i]``, ``a[10, i]``)."""
    if isinstance(i, slice):
        return a[..., i]
    return np.take(a, i, axis=-1)


def _set(a: np.ndarray, i: np.ndarray | slice, v: np.ndarray) -> None:
    """a[..., i] = v one row at a time (a 1-d fancy assignment per row is about 3x faster
    than the 2-d one)."""
    if a.ndim == 1:
        a[i] = v
        return
    for r in range(a.shape[0]):
        row = a[r]
        row[i] = v[r]


class _Sink:
    """Collects finished photons of a chunk: hits (production), everything (development)."""

    def __init__(self, count: int, p: Params) -> None:
        self.p = p
        self.hits: list[np.ndarray] = []
        self.fms: list[np.ndarray] = []
        dev = p.development
        self.ox = np.zeros((count, 4, 4), np.float32) if dev else None
        self.seq = np.zeros(count, np.uint64) if dev else None

    def take(
        self, fs: np.ndarray, ist: np.ndarray, u64: np.ndarray, gone: np.ndarray | None = None
    ) -> None:
        """The photons ``gone`` (all when None) of the state arrays are finished; only what
        is kept is gathered (production: their flagmasks and the hits)."""
        fm = ist[_FM] if gone is None else ist[_FM, gone]
        self.fms.append(fm)
        mask = np.uint32(self.p.hitmask)
        hit = (fm & mask) == mask
        if hit.any():
            h = np.flatnonzero(hit) if gone is None else gone[hit]
            self.hits.append(
                _pack(np.take(fs, h, axis=1), np.take(ist, h, axis=1), np.take(u64, h, axis=1))
            )
        if self.ox is not None and self.seq is not None:  # development mode: both
            if gone is not None:
                fs, ist, u64 = (
                    np.take(fs, gone, axis=1),
                    np.take(ist, gone, axis=1),
                    np.take(u64, gone, axis=1),
                )
            loc = ist[_LOC]
            self.ox[loc] = _pack(fs, ist, u64)
            self.seq[loc] = u64[1]


def propagate_chunk(
    sa: SceneArrays, gs: np.ndarray, start: int, count: int, p: Params
) -> ChunkResult:
    """Generate and propagate photons [start, start+count); return hits (and, in
    development mode, all photons, step records and seqhis)."""
    idx = np.arange(start, start + count, dtype=np.uint64)
    g = generate(gs, idx, p.seed, p.event, sa)
    n = count
    fs = np.empty((11, n), _F)
    fs[0:3], fs[3:6], fs[6:9], fs[9], fs[10] = g["pos"], g["dir"], g["pol"], g["t"], g["wl"]
    ist = np.zeros((7, n), np.uint32)
    ist[_BLK] = g["blk"]
    ist[_FLAG] = g["flag"]
    ist[_FM] = g["flag"]
    ist[_LOC] = np.arange(n, dtype=np.uint32)
    u64 = np.empty((2, n), np.uint64)
    u64[0] = idx
    u64[1] = _NIB[g["flag"]]
    maxrec = p.max_bounce + 1
    sink = _Sink(n, p)
    rx = np.zeros((n, maxrec, 2, 4), np.int16) if p.development else None
    if rx is not None:
        rx[:, 0] = _compress(fs, ist, p.domain)
    eps = float(sa.eps)

    for bounce in range(p.max_bounce):
        m = fs.shape[1]
        if m == 0:
            break
        pos, d, wl = fs[0:3], fs[3:6], fs[10]
        flag = np.zeros(m, np.uint32)
        dead = np.zeros(m, bool)
        dist, node, normal, face, enter, side = nearest_sides(sa.geo_i, sa.geo_f, pos, d, eps)
        # Opticks' boundary model: the side of node k's solid the photon is on gives the
        # materials, the surface and the sensor (flatten.py; the tracer reads them: side =
        # material here, material beyond, surface, boundary + 1, sensor); no volume is tracked
        m1 = side[0]
        miss = (node < 0) | (m1 < 0)
        m1 = np.maximum(m1, 0)
        u = uniforms(u64[0], ist[_BLK], p.seed, p.event)
        ist[_BLK] += np.uint32(1)
        n1, la, ls, pre, vg = props_at(sa, m1, wl)
        with np.errstate(invalid="ignore"):
            d_s = -ls * np.log(u[0])
            d_a = -la * np.log(u[1])
        absorb = ~miss & (d_a <= d_s) & (d_a <= dist)
        scat = ~miss & ~absorb & (d_s <= dist)
        sail = ~miss & ~absorb & ~scat
        bulk = absorb.any() or scat.any()
        step = np.where(absorb, d_a, np.where(scat, d_s, dist)) if bulk else dist
        if miss.any():
            step = np.where(miss, _F(0), step)
        fs[0:3] = pos + step * d
        fs[9] = fs[9] + step / vg
        flag[miss] = F.MI
        dead |= miss

        # bulk absorption, possibly reemission (the u3 draw decides; none when prob is 0)
        reem = absorb & (u[3] < pre)
        ab = absorb & ~reem
        flag[ab] = F.AB
        dead |= ab
        if reem.any():
            r = np.flatnonzero(reem)
            idx_r, blk_r = _at(u64[0], r), _at(ist[_BLK], r)
            ua = uniforms(idx_r, blk_r, p.seed, p.event)
            ub = uniforms(idx_r, blk_r + np.uint32(1), p.seed, p.event)
            _set(ist[_BLK], r, blk_r + np.uint32(2))
            new_wl = icdf_sample(sa, m1[r], ua[0])
            _set(fs[10], r, np.where(new_wl < 0, _at(fs[10], r), new_wl))
            ct = _F(2) * ua[2] - _F(1)
            stt = np.sqrt(np.maximum(_F(0), _F(1) - ct * ct))
            ph = TWO_PI * ua[1]
            nd = np.stack((stt * np.cos(ph), stt * np.sin(ph), ct))
            ct2 = _F(2) * ub[1] - _F(1)
            st2 = np.sqrt(np.maximum(_F(0), _F(1) - ct2 * ct2))
            ph2 = TWO_PI * ub[0]
            rv = np.stack((st2 * np.cos(ph2), st2 * np.sin(ph2), ct2))
            _set(fs[3:6], r, nd)
            _set(fs[6:9], r, normalize(cross(rv, nd)))
            flag[r] = F.RE

        if scat.any():
            sc = np.flatnonzero(scat)
            blk = _at(ist[_BLK], sc)
            nd, npol = rayleigh(
                _at(fs[3:6], sc), _at(fs[6:9], sc), _at(u64[0], sc), blk, p.seed, p.event
            )
            _set(ist[_BLK], sc, blk)
            _set(fs[3:6], sc, nd)
            _set(fs[6:9], sc, npol)
            flag[sc] = F.SC

        # at a boundary: a surface; outside the world: MI; a material without RINDEX on
        # either side: SA (Geant4's NoRINDEX); otherwise Fresnel between the two materials
        if sail.any():
            b = np.flatnonzero(sail)
            bs = side if b.size == m else _at(side, b)
            m2 = bs[1]
            surf = bs[2]
            has_surf = surf >= 0
            _set(ist[_BND], b, bs[3].astype(np.uint32))
            wall = b[(m2 < 0) & ~has_surf]
            flag[wall] = F.MI
            dead[wall] = True
            sb = b[has_surf]
            if sb.size:
                ss = surf[has_surf]
                pr = surface_at(sa, ss, _at(fs[10], sb))
                uu = _at(u[2], sb)
                pa = pr[:, 1]
                pd = pa + pr[:, 0]
                pf = pd + pr[:, 3]
                is_sa = uu < pa
                is_sd = ~is_sa & (uu < pd)
                is_dr = ~is_sa & ~is_sd & (uu < pf)
                is_sr = ~is_sa & ~is_sd & ~is_dr
                flag[sb[is_sa]] = F.SA
                flag[sb[is_sd]] = F.SD
                dead[sb[is_sa | is_sd]] = True
                q = sb[is_sd]
                sens = _at(side[4], q).astype(np.uint32)
                if sa.face_ids:
                    sens = sens + face[q].astype(np.uint32)
                _set(ist[_SEN], q, sens)
                if is_sr.any():
                    q = sb[is_sr]
                    nq = _at(normal, q)
                    dq, pq = _at(fs[3:6], q), _at(fs[6:9], q)
                    _set(fs[3:6], q, dq - _F(2) * dot(dq, nq) * nq)
                    _set(fs[6:9], q, -pq + _F(2) * dot(pq, nq) * nq)
                    flag[q] = F.SR
                if is_dr.any():
                    q = sb[is_dr]
                    blk = _at(ist[_BLK], q)
                    nd, npol = lambertian(
                        _at(fs[3:6], q),
                        _at(fs[6:9], q),
                        _at(normal, q),
                        _at(u64[0], q),
                        blk,
                        p.seed,
                        p.event,
                    )
                    _set(ist[_BLK], q, blk)
                    _set(fs[3:6], q, nd)
                    _set(fs[6:9], q, npol)
                    flag[q] = F.DR
            bare = ~has_surf & (m2 >= 0)
            fb = b[bare]
            if fb.size:
                n2 = index_at(sa, m2[bare], _at(fs[10], fb))
                opaque = (n2 == 0) | (n1[fb] == 0)
                if opaque.any():
                    q = fb[opaque]
                    flag[q] = F.SA
                    dead[q] = True
                    fb, n2 = fb[~opaque], n2[~opaque]
            if fb.size == m:
                fb = slice(None)  # every photon at a Fresnel boundary: views, no gathers
            if isinstance(fb, slice) or fb.size:
                nd, npol, refl = fresnel(
                    _at(fs[3:6], fb),
                    _at(fs[6:9], fb),
                    _at(normal, fb),
                    _at(n1, fb),
                    n2,
                    _at(u[2], fb),
                )
                _set(fs[3:6], fb, nd)
                _set(fs[6:9], fb, npol)
                flag[fb] = np.where(refl, F.BR, F.BT)

        ist[_FLAG] = flag
        ist[_FM] |= flag
        slot = bounce + 1
        if slot < 16:
            u64[1] |= _NIB[flag] << np.uint64(4 * slot)
        if rx is not None and slot < maxrec:
            rx[ist[_LOC], slot] = _compress(fs, ist, p.domain)
        if dead.any():
            sink.take(fs, ist, u64, np.flatnonzero(dead))
            keep = np.flatnonzero(~dead)
            fs, ist, u64 = (
                np.take(fs, keep, axis=1),
                np.take(ist, keep, axis=1),
                np.take(u64, keep, axis=1),
            )
    if fs.shape[1]:
        sink.take(fs, ist, u64)  # reached the bounce limit: no terminal flag

    fm = np.concatenate(sink.fms) if sink.fms else np.zeros(0, np.uint32)
    vals, cnts = np.unique(fm, return_counts=True)
    hits = np.concatenate(sink.hits) if sink.hits else np.zeros((0, 4, 4), np.float32)
    if len(hits) > 1:
        hits = hits[np.argsort(slice_order(hits, start), kind="stable")]
    res = ChunkResult(start, count, hits, {int(v): int(c) for v, c in zip(vals, cnts, strict=True)})
    if p.development:
        res.ox, res.rx, res.seq = sink.ox, rx, sink.seq
    return res
