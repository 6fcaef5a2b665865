"""The NumPy backend: one vector lane per photon, vectorized over the photons still alive.

A chunk of photons is generated from the gensteps and stepped together; every loop
iteration is one step for every live photon, so the bounce count is the loop counter and
dead photons are compacted away after each step. Chunks bound the memory at any photon
count, and chunks are independent (their random numbers depend only on photon index), so
they can run in any number of processes with identical results.

Random numbers: each decision takes whole Philox blocks (4 uniforms) from the photon's own
block counter, in the same order as ``assets/kernels/propagate.cu``:
    generation   blocks 0, 1
    each step    1 block: u0 scatter distance, u1 absorption distance, u2 boundary or
                 surface decision, u3 reemission decision
    reemission   2 blocks; Rayleigh 2 blocks per rejection try; Lambertian 1 block per try.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.propagate import flags as F
from engine.propagate.philox import uniforms
from engine.propagate.scene import WL_MIN, WL_N, WL_STEP, SceneArrays
from engine.propagate.vec import TWO_PI, cross, dot, normalize, rotate_uz

C_LIGHT = np.float32(299.792458)  # mm/ns
EPS = np.float32(1e-3)  # mm: minimum distance to a boundary, so a photon never re-hits its own
MAX_TRIES = 1024
GEN_BLOCKS = 2
_F = np.float32


@dataclass
class Params:
    seed: int
    event: int
    max_bounce: int
    hitmask: int
    development: bool
    domain: tuple[float, float] = (450.0, 10.0)  # (space extent mm, time max ns) for rx


@dataclass
class ChunkResult:
    start: int
    count: int
    hits: np.ndarray  # (H,4,4) float32
    flagmask_counts: dict[int, int] = field(default_factory=dict)
    ox: np.ndarray | None = None
    rx: np.ndarray | None = None
    seq: np.ndarray | None = None


# ----------------------------------------------------------------------------- generation

def generate(gs: np.ndarray, idx: np.ndarray, seed: int, event: int) -> dict[str, np.ndarray]:
    """Torch photons for global indices ``idx`` from gensteps ``gs`` (see scene.gensteps)."""
    gi = gs.view(np.int32)
    ends = np.cumsum(gi[:, 0, 3].astype(np.int64))
    g = np.searchsorted(ends, idx.astype(np.int64), side="right")
    q = gs[g]  # (n,6,4)
    typ = gi[g, 5, 3]
    n = idx.shape[0]
    a = uniforms(idx, 0, seed, event)
    b = uniforms(idx, 1, seed, event)
    center = q[:, 1, :3].T.astype(_F)
    mom = q[:, 2, :3].T.astype(_F)
    given_pol = q[:, 3, :3].T.astype(_F)
    radius = q[:, 5, 0]
    iso = q[:, 5, 2] > 0
    pos = center.copy()
    d = mom.copy()
    pol = np.zeros((3, n), dtype=_F)

    # isotropic unit vector from (a0, a1): cos = 2 a0 - 1, phi = 2 pi a1
    ct = _F(2) * a[0] - _F(1)
    st = np.sqrt(np.maximum(_F(0), _F(1) - ct * ct))
    ph = TWO_PI * a[1]
    isov = np.stack((st * np.cos(ph), st * np.sin(ph), ct))

    disc = typ == 1
    if disc.any():
        r = radius * np.sqrt(a[0])
        local = np.stack((r * np.cos(ph), r * np.sin(ph), np.zeros(n, _F)))
        off = rotate_uz(mom, local)
        pos = np.where(disc, center + off, pos)
        tang = rotate_uz(mom, np.stack((np.sin(ph), -np.cos(ph), np.zeros(n, _F))))
        pol = np.where(disc, tang, pol)
    point = typ == 2
    d = np.where(point & iso, isov, d)
    sph = typ == 3
    if sph.any():
        pos = np.where(sph, center + np.abs(radius) * isov, pos)
        d = np.where(sph, np.where(radius > 0, isov, -isov), d)
    # polarization: the given vector made transverse, else (disc aside) a random transverse one
    has_pol = dot(given_pol, given_pol) > 0
    proj = normalize(given_pol - dot(given_pol, d) * d)
    psi = TWO_PI * b[0]
    rnd = rotate_uz(d, np.stack((np.cos(psi), np.sin(psi), np.zeros(n, _F))))
    pol = np.where(has_pol, proj, np.where(disc, pol, rnd))
    return {
        "pos": pos.astype(_F), "t": q[:, 1, 3].astype(_F), "dir": d.astype(_F),
        "pol": pol.astype(_F), "wl": q[:, 3, 3].astype(_F),
    }


# ----------------------------------------------------------------------------- geometry

def _box_slabs(pos: np.ndarray, d: np.ndarray, c: np.ndarray, h: np.ndarray):
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = _F(1) / d
        t1 = (c[:, None] - h[:, None] - pos) * inv
        t2 = (c[:, None] + h[:, None] - pos) * inv
    return np.fmin(t1, t2), np.fmax(t1, t2)


def intersect(pos: np.ndarray, d: np.ndarray, vol: np.ndarray, sa: SceneArrays):
    """Nearest boundary along each ray: (distance, volume hit, face, outward normal).

    Volume 0 is the container (only ever left through its walls), volume j+1 is object j.
    Objects are disjoint and unnested (validated), so a photon inside object j can only
    leave it, and a photon in the container sees the container walls and object entries.
    Boxes report faces 0..5 = -x,+x,-y,+y,-z,+z; spheres face 0.
    """
    n = pos.shape[1]
    half = sa.container[:3]
    zero = np.zeros(3, _F)
    _, tf = _box_slabs(pos, d, zero, half)
    ax = np.argmin(tf, axis=0)
    tbest = np.take_along_axis(tf, ax[None], 0)[0]
    tbest = np.where(vol == 0, tbest, np.inf).astype(_F)
    hvol = np.zeros(n, np.int32)
    dsel = np.take_along_axis(d, ax[None], 0)[0]
    face = (2 * ax + (dsel > 0)).astype(np.int32)
    for j, o in enumerate(sa.objs):
        shape, c, h = int(o[0]), o[1:4], o[4:7]
        inside = vol == j + 1
        if shape == 0:
            tn, tf = _box_slabs(pos, d, c, h)
            nax = np.argmax(tn, axis=0)
            fax = np.argmin(tf, axis=0)
            tnear = np.take_along_axis(tn, nax[None], 0)[0]
            tfar = np.take_along_axis(tf, fax[None], 0)[0]
            enter = (vol == 0) & (tnear <= tfar) & (tnear > EPS)
            t = np.where(inside, tfar, np.where(enter, tnear, np.inf))
            dn = np.take_along_axis(d, nax[None], 0)[0]
            df = np.take_along_axis(d, fax[None], 0)[0]
            f = np.where(inside, 2 * fax + (df > 0), 2 * nax + (dn < 0))
        else:
            r = h[0]
            oc = pos - c[:, None]
            b = dot(oc, d)
            disc = b * b - (dot(oc, oc) - _F(r) * _F(r))
            sq = np.sqrt(np.maximum(disc, _F(0)))
            tin = -b - sq
            enter = (vol == 0) & (disc > 0) & (tin > EPS)
            t = np.where(inside, -b + sq, np.where(enter, tin, np.inf))
            f = np.zeros(n, np.int64)
        better = t < tbest
        tbest = np.where(better, t, tbest).astype(_F)
        hvol = np.where(better, j + 1, hvol)
        face = np.where(better, f, face).astype(np.int32)
    # outward normal of the volume hit
    normal = np.zeros((3, n), _F)
    boxlike = np.ones(n, bool)
    if len(sa.objs):
        ohit = np.maximum(hvol - 1, 0)
        is_sph = (hvol > 0) & (sa.objs[ohit, 0] == 1)
        boxlike = ~is_sph
        if is_sph.any():
            c = sa.objs[ohit, 1:4].T
            r = sa.objs[ohit, 4]
            p = pos + tbest * d
            with np.errstate(invalid="ignore", divide="ignore"):
                normal = np.where(is_sph, (p - c) / r, normal)
    axis = face // 2
    sign = np.where(face % 2 == 1, _F(1), _F(-1))
    for a in range(3):
        normal[a] = np.where(boxlike & (axis == a), sign, normal[a])
    return tbest, hvol, face, normal


# ----------------------------------------------------------------------------- physics

def fresnel(d: np.ndarray, pol: np.ndarray, normal: np.ndarray, n1: np.ndarray, n2: np.ndarray,
            u: np.ndarray):
    """Dielectric boundary with polarization (G4OpBoundaryProcess dielectric_dielectric as
    in Opticks propagate_at_boundary, reference/opticks.md 3.4). Returns dir, pol, reflect."""
    c1 = -dot(d, normal)
    nrm = np.where(c1 < 0, -normal, normal)
    c1 = np.abs(c1)
    eta = n1 / n2
    c2sq = _F(1) - eta * eta * (_F(1) - c1 * c1)
    tir = c2sq < 0
    c2 = np.sqrt(np.maximum(c2sq, _F(0)))
    a = cross(d, nrm)
    alen = np.sqrt(dot(a, a))
    normal_inc = alen < _F(1e-6)
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
    new_d = np.where(reflect, d + _F(2) * c1 * nrm, eta * d + (eta * c1 - c2) * nrm)
    a_paral = normalize(cross(new_d, a_trans))
    es = np.where(reflect, r_s, t_s)
    ep = np.where(reflect, r_p, t_p)
    with np.errstate(divide="ignore", invalid="ignore"):
        el = np.sqrt(es * es + ep * ep)
        es, ep = es / el, ep / el
    new_pol = es * a_trans + ep * a_paral
    tir_pol = -pol + _F(2) * dot(pol, nrm) * nrm
    new_pol = np.where(tir, tir_pol, new_pol)
    flip = np.where(n2 > n1, _F(-1), _F(1))
    new_pol = np.where(normal_inc, np.where(reflect, flip * pol, pol), new_pol)
    return new_d.astype(_F), new_pol.astype(_F), reflect


def rayleigh(d: np.ndarray, pol: np.ndarray, idx: np.ndarray, blk: np.ndarray, seed: int,
             event: int):
    """Rayleigh scatter (G4OpRayleigh as in Opticks rayleigh_scatter, reference 3.3).
    Rejection sampling; each try takes two blocks. Updates ``blk`` in place."""
    d, pol = d.copy(), pol.copy()
    todo = np.arange(d.shape[1])
    for _ in range(MAX_TRIES):
        if todo.size == 0:
            break
        ua = uniforms(idx[todo], blk[todo], seed, event)
        ub = uniforms(idx[todo], blk[todo] + 1, seed, event)
        blk[todo] += 2
        od, op = d[:, todo], pol[:, todo]
        ct = np.where(ua[1] < _F(0.5), -ua[0], ua[0])
        st = np.sqrt(np.maximum(_F(0), _F(1) - ct * ct))
        ph = TWO_PI * ua[2]
        nd = rotate_uz(od, np.stack((st * np.cos(ph), st * np.sin(ph), ct)))
        cp = op - dot(op, nd) * nd
        clen = np.sqrt(dot(cp, cp))
        ph3 = TWO_PI * ua[3]
        degenerate = rotate_uz(nd, np.stack((np.cos(ph3), np.sin(ph3), np.zeros_like(ph3))))
        with np.errstate(divide="ignore", invalid="ignore"):
            cp = np.where(clen == 0, degenerate,
                          np.where(ua[3] < _F(0.5), -cp, cp) / clen)
        c = dot(cp, op)
        ok = c * c >= ub[0]
        acc = todo[ok]
        d[:, acc] = nd[:, ok]
        pol[:, acc] = cp[:, ok]
        todo = todo[~ok]
    return d, pol


def lambertian(d: np.ndarray, pol: np.ndarray, normal: np.ndarray, idx: np.ndarray,
               blk: np.ndarray, seed: int, event: int):
    """Diffuse reflection: cosine-law direction about the normal facing the photon, by
    rejection (Opticks propagate_at_surface), one block per try; pol about the facet."""
    nin = np.where(dot(d, normal) > 0, -normal, normal)
    nd = nin.copy()
    todo = np.arange(d.shape[1])
    for _ in range(MAX_TRIES):
        if todo.size == 0:
            break
        u = uniforms(idx[todo], blk[todo], seed, event)
        blk[todo] += 1
        a = _F(2) * u[0] - _F(1)
        b = _F(2) * u[1] - _F(1)
        s = a * a + b * b
        root = _F(2) * np.sqrt(np.maximum(_F(0), _F(1) - s))
        v = np.stack((a * root, b * root, _F(2) * s - _F(1)))
        nn = nin[:, todo]
        c = dot(v, nn)
        v = np.where(c < 0, -v, v)
        ok = (s < _F(1)) & (u[2] < np.abs(c))
        nd[:, todo[ok]] = v[:, ok]
        todo = todo[~ok]
    f = normalize(nd - d)
    new_pol = -pol + _F(2) * dot(pol, f) * f
    return nd.astype(_F), new_pol.astype(_F)


def _lookup(sa: SceneArrays, m: np.ndarray, k: int, wl: np.ndarray) -> np.ndarray:
    """Material property k at wavelength wl: linear interpolation on the 1 nm grid, written
    as a + f*(b - a) so that constant tables return exactly a (as the kernel does)."""
    if sa.const_props:
        return sa.mat[m, k, 0]
    x = (wl - _F(WL_MIN)) / _F(WL_STEP)
    x = np.clip(x, _F(0), _F(WL_N - 1))
    i0 = np.minimum(x.astype(np.int32), WL_N - 2)
    f = x - i0.astype(_F)
    a = sa.mat[m, k, i0]
    b = sa.mat[m, k, i0 + 1]
    return a + f * (b - a)


# ----------------------------------------------------------------------------- stepping

def _compress(pos, t, pol, wl, boundary, flag, domain):
    ext, tmax = _F(domain[0]), _F(domain[1])
    sh = np.empty((2, 4, pos.shape[1]), np.int16)
    for a in range(3):
        sh[0, a] = np.clip(np.rint(_F(32767) * pos[a] / ext), -32767, 32767)
    sh[0, 3] = np.clip(np.rint(_F(32767) * t / tmax), -32767, 32767)
    p8 = np.clip(np.rint((pol + _F(1)) * _F(127)), 0, 255).astype(np.uint16)
    w8 = np.clip(np.rint(_F(255) * (wl - _F(WL_MIN)) / _F(760)), 0, 255).astype(np.uint16)
    sh[1, 0] = (p8[0] | (p8[1] << 8)).view(np.int16)
    sh[1, 1] = (p8[2] | (w8 << 8)).view(np.int16)
    sh[1, 2] = boundary.astype(np.int16)
    sh[1, 3] = flag.astype(np.int16)
    return np.moveaxis(sh, 2, 0)  # (n,2,4)


def _pack(st: dict[str, np.ndarray]) -> np.ndarray:
    n = st["idx"].shape[0]
    out = np.empty((n, 4, 4), np.float32)
    out[:, 0, :3] = st["pos"].T
    out[:, 0, 3] = st["t"]
    out[:, 1, :3] = st["dir"].T
    out[:, 1, 3] = 1.0
    out[:, 2, :3] = st["pol"].T
    out[:, 2, 3] = st["wl"]
    u = out.view(np.uint32)
    u[:, 3, 0] = (st["boundary"].astype(np.uint32) << 16) | st["flag"].astype(np.uint32)
    u[:, 3, 1] = st["sensor"].astype(np.uint32)
    u[:, 3, 2] = (st["idx"] & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    u[:, 3, 3] = st["flagmask"]
    return out


def _volume_of(pos: np.ndarray, sa: SceneArrays) -> np.ndarray:
    vol = np.zeros(pos.shape[1], np.int32)
    for j, o in enumerate(sa.objs):
        c, h = o[1:4, None], o[4:7, None]
        if int(o[0]) == 0:
            inside = np.all(np.abs(pos - c) < h, axis=0)
        else:
            rel = pos - c
            inside = dot(rel, rel) < h[0] * h[0]
        vol[inside] = j + 1
    return vol


def propagate_chunk(sa: SceneArrays, gs: np.ndarray, start: int, count: int, p: Params) -> ChunkResult:
    """Generate and propagate photons [start, start+count); return hits (and, in
    development mode, all photons, step records and seqhis)."""
    idx = np.arange(start, start + count, dtype=np.uint64)
    g = generate(gs, idx, p.seed, p.event)
    n = count
    st: dict[str, np.ndarray] = {
        "idx": idx, "pos": g["pos"], "t": g["t"], "dir": g["dir"], "pol": g["pol"], "wl": g["wl"],
        "vol": _volume_of(g["pos"], sa), "blk": np.full(n, GEN_BLOCKS, np.uint32),
        "flag": np.full(n, F.TO, np.uint32), "flagmask": np.full(n, F.TO, np.uint32),
        "boundary": np.zeros(n, np.uint32), "sensor": np.zeros(n, np.uint32),
        "seq": np.full(n, F.nibble(F.TO), np.uint64), "local": np.arange(n, dtype=np.int64),
    }
    maxrec = p.max_bounce + 1
    dev = p.development
    ox = np.zeros((n, 4, 4), np.float32) if dev else None
    rx = np.zeros((n, maxrec, 2, 4), np.int16) if dev else None
    seq = np.zeros(n, np.uint64) if dev else None
    if dev:
        rx[:, 0] = _compress(st["pos"], st["t"], st["pol"], st["wl"], st["boundary"], st["flag"],
                             p.domain)
    finished: list[dict[str, np.ndarray]] = []
    cont_mat = int(sa.container[3])
    cont_surf = int(sa.container[4])
    obj_mat = sa.objs[:, 7].astype(np.int32) if len(sa.objs) else np.zeros(0, np.int32)
    obj_surf = sa.objs[:, 8].astype(np.int32) if len(sa.objs) else np.zeros(0, np.int32)
    vol_mat = np.concatenate(([cont_mat], obj_mat)).astype(np.int32)
    vol_surf = np.concatenate(([cont_surf], obj_surf)).astype(np.int32)

    for bounce in range(p.max_bounce):
        if st["idx"].size == 0:
            break
        pos, d, pol, wl, vol = st["pos"], st["dir"], st["pol"], st["wl"], st["vol"]
        m = len(st["idx"])
        flag = np.zeros(m, np.uint32)
        dead = np.zeros(m, bool)
        dist, hvol, face, normal = intersect(pos, d, vol, sa)
        miss = ~np.isfinite(dist)
        u = uniforms(st["idx"], st["blk"], p.seed, p.event)
        st["blk"] += 1
        m1 = vol_mat[vol]
        n1 = _lookup(sa, m1, 0, wl)
        la = _lookup(sa, m1, 1, wl)
        ls = _lookup(sa, m1, 2, wl)
        pre = _lookup(sa, m1, 3, wl)
        with np.errstate(invalid="ignore"):
            d_s = -ls * np.log(u[0])
            d_a = -la * np.log(u[1])
        absorb = ~miss & (d_a <= d_s) & (d_a <= dist)
        scat = ~miss & ~absorb & (d_s <= dist)
        sail = ~miss & ~absorb & ~scat
        step = np.where(absorb, d_a, np.where(scat, d_s, dist))
        step = np.where(miss, _F(0), step).astype(_F)
        pos = (pos + step * d).astype(_F)
        t = (st["t"] + step * n1 / C_LIGHT).astype(_F)
        flag[miss] = F.MI
        dead |= miss

        # bulk absorption, possibly reemission
        reem = absorb & (u[3] < pre)
        flag[absorb & ~reem] = F.AB
        dead |= absorb & ~reem
        if reem.any():
            r = np.flatnonzero(reem)
            ua = uniforms(st["idx"][r], st["blk"][r], p.seed, p.event)
            ub = uniforms(st["idx"][r], st["blk"][r] + 1, p.seed, p.event)
            st["blk"][r] += 2
            icdf = sa.icdf[m1[r]]
            k = np.minimum((ua[0] * _F(icdf.shape[1])).astype(np.int32), icdf.shape[1] - 1)
            new_wl = icdf[np.arange(r.size), k]
            wl = wl.copy()
            wl[r] = np.where(new_wl < 0, wl[r], new_wl)
            ct = _F(2) * ua[2] - _F(1)
            stt = np.sqrt(np.maximum(_F(0), _F(1) - ct * ct))
            ph = TWO_PI * ua[1]
            nd = np.stack((stt * np.cos(ph), stt * np.sin(ph), ct))
            ct2 = _F(2) * ub[1] - _F(1)
            st2 = np.sqrt(np.maximum(_F(0), _F(1) - ct2 * ct2))
            ph2 = TWO_PI * ub[0]
            rv = np.stack((st2 * np.cos(ph2), st2 * np.sin(ph2), ct2))
            d = d.copy()
            pol = pol.copy()
            d[:, r] = nd
            pol[:, r] = normalize(cross(rv, nd))
            flag[r] = F.RE

        if scat.any():
            s = np.flatnonzero(scat)
            nd, npol = _rayleigh_sub(d, pol, s, st, p)
            d = d.copy()
            pol = pol.copy()
            d[:, s] = nd
            pol[:, s] = npol
            flag[s] = F.SC

        # at a boundary: surface or Fresnel
        if sail.any():
            b = np.flatnonzero(sail)
            hv = hvol[b]
            surf = vol_surf[hv]
            has_surf = surf >= 0
            wall_nosurf = (hv == 0) & ~has_surf
            flag[b[wall_nosurf]] = F.MI
            dead[b[wall_nosurf]] = True
            st["boundary"] = st["boundary"].copy()
            st["boundary"][b] = (hv + 1).astype(np.uint32)
            sb = b[has_surf]
            if sb.size:
                pr = sa.surf[surf[has_surf]]  # detect, absorb, spec, diffuse
                uu = u[2, sb]
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
                st["sensor"] = st["sensor"].copy()
                st["sensor"][sb[is_sd]] = (hvol[sb[is_sd]] * 8 + face[sb[is_sd]] + 1).astype(np.uint32)
                if is_sr.any():
                    q = sb[is_sr]
                    nq = normal[:, q]
                    d = d.copy()
                    pol = pol.copy()
                    d[:, q] = d[:, q] - _F(2) * dot(d[:, q], nq) * nq
                    pol[:, q] = -pol[:, q] + _F(2) * dot(pol[:, q], nq) * nq
                    flag[q] = F.SR
                if is_dr.any():
                    q = sb[is_dr]
                    blk = st["blk"][q].copy()
                    nd, npol = lambertian(d[:, q], pol[:, q], normal[:, q], st["idx"][q], blk,
                                          p.seed, p.event)
                    st["blk"][q] = blk
                    d = d.copy()
                    pol = pol.copy()
                    d[:, q] = nd
                    pol[:, q] = npol
                    flag[q] = F.DR
            fb = b[~has_surf & (hv > 0)]
            if fb.size:
                other = np.where(vol[fb] == 0, hvol[fb], 0)
                m2 = vol_mat[other]
                n2 = _lookup(sa, m2, 0, wl[fb])
                nd, npol, refl = fresnel(d[:, fb], pol[:, fb], normal[:, fb], n1[fb], n2, u[2, fb])
                d = d.copy()
                pol = pol.copy()
                d[:, fb] = nd
                pol[:, fb] = npol
                flag[fb] = np.where(refl, F.BR, F.BT)
                vol = vol.copy()
                vol[fb] = np.where(refl, vol[fb], other).astype(np.int32)

        st.update(pos=pos, t=t, dir=d, pol=pol, wl=wl, vol=vol, flag=flag)
        st["flagmask"] = st["flagmask"] | flag
        slot = bounce + 1
        if slot < 16:
            st["seq"] = st["seq"] | (_nib(flag) << np.uint64(4 * slot))
        if dev and slot < maxrec:
            rx[st["local"], slot] = _compress(pos, t, pol, wl, st["boundary"], flag, p.domain)
        if dead.any():
            finished.append({k: v[..., dead] for k, v in st.items()})
            keep = ~dead
            st = {k: v[..., keep] for k, v in st.items()}
    if st["idx"].size:
        finished.append(st)
    allp = {k: np.concatenate([f[k] for f in finished], axis=-1) for k in finished[0]} if finished else None
    if allp is None:
        return ChunkResult(start, count, np.zeros((0, 4, 4), np.float32))
    fm = allp["flagmask"]
    vals, cnts = np.unique(fm, return_counts=True)
    sel = (fm & np.uint32(p.hitmask)) == np.uint32(p.hitmask)
    hitp = {k: v[..., sel] for k, v in allp.items()}
    order = np.argsort(hitp["idx"], kind="stable")
    hitp = {k: v[..., order] for k, v in hitp.items()}
    res = ChunkResult(start, count, _pack(hitp),
                      {int(v): int(c) for v, c in zip(vals, cnts, strict=True)})
    if dev:
        packed = _pack(allp)
        ox[allp["local"]] = packed
        seq[allp["local"]] = allp["seq"]
        res.ox, res.rx, res.seq = ox, rx, seq
    return res


def _nib(flag: np.ndarray) -> np.ndarray:
    """ffs(flag) for single-bit flags (0 for no flag), as uint64."""
    out = np.zeros(flag.shape, np.uint64)
    nz = flag > 0
    out[nz] = np.log2(flag[nz]).astype(np.uint64) + np.uint64(1)
    return out


def _rayleigh_sub(d, pol, s, st, p):
    blk = st["blk"][s].copy()
    nd, npol = rayleigh(d[:, s], pol[:, s], st["idx"][s], blk, p.seed, p.event)
    st["blk"][s] = blk
    return nd, npol
