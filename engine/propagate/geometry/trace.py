"""The CPU tracer: nearest boundary of each ray through the BVH and the CSG solids,
compiled by Numba; ``assets/kernels/propagate.cu`` has the same functions line by line
(docs/propagation.md, "Acceleration").

Why Numba: finding the next boundary is a walk down a tree with a small stack and, per
candidate volume, a loop over its solid's leaves: branchy per-ray code that vectorised
NumPy can only run level by level over growing pair lists, paying its per-call cost on
every level. Compiled, each ray costs its log N box tests and a few leaf tests, and the
code is the kernel's own structure, so the two stay equal by reading them side by side
(the host-compiled kernel checks it photon by photon). The first run compiles (cached on
disk, ``cache=True``); NumPy arrays in, NumPy arrays out.

Per solid (a postfix CSG program of convex leaves, ``solids``): every leaf's interval(s)
along the ray in its own frame; then, from tmin on, the next interval end, the program
evaluated just after it (ends closer than TOL_ABS + TOL_REL*|t| count as one: coincident
faces of a boolean's operands are one surface), and the first end where the program's
value changes is the solid's boundary; entering when it becomes true. The outward normal
of the leaf there, oriented by that change, comes back in world coordinates, with the
leaf's face id (boxes 0..5: -x,+x,-y,+y,-z,+z; else 0 plus the part of the leaf hit).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from engine.propagate.geometry import flatten as FL
from engine.propagate.geometry import solids as S

MAXIV = 64  # intervals per solid
MAXT = 32  # crossings of one tessellated solid along a line
STACK = 64  # BVH stack
TOL_ABS = 1e-7  # mm
TOL_REL = 1e-9
INF = math.inf

_BOX, _ELL, _CYL, _CONE, _WEDGE, _NAPPE, _HALF, _TORUS, _MESH = (
    S.BOX,
    S.ELLIPSOID,
    S.CYLINDER,
    S.CONE,
    S.WEDGE,
    S.NAPPE,
    S.HALFSPACE,
    S.TORUS,
    S.MESH,
)
_UNION, _INTER, _DIFF = S.UNION, S.INTERSECT, S.DIFF
_NODE_I, _NODE_F = FL.NODE_I, FL.NODE_F


@njit(cache=True, error_model="numpy")
def _clip(lo, hi, plo, phi, t0, t1, p0, p1):
    """[lo, hi] intersected with [t0, t1]; parts follow the bound that wins."""
    if t0 > lo:
        lo = t0
        plo = p0
    if t1 < hi:
        hi = t1
        phi = p1
    return lo, hi, plo, phi


@njit(cache=True, error_model="numpy")
def _slab(o, d, a, b, lo, hi, plo, phi, p_a, p_b):
    """Constraint a <= o + t d <= b along one axis (a = -1e300, b = 1e300: none)."""
    if d == 0.0:
        if o < a or o > b:
            return 1.0, -1.0, plo, phi
        return lo, hi, plo, phi
    t1 = (a - o) / d
    t2 = (b - o) / d
    if d > 0.0:
        return _clip(lo, hi, plo, phi, t1, t2, p_a, p_b)
    return _clip(lo, hi, plo, phi, t2, t1, p_b, p_a)


@njit(cache=True, error_model="numpy")
def _quad_roots(A, B, C):
    """Real roots of A t^2 + 2 B t + C (A != 0), ascending; nan when none."""
    disc = B * B - A * C
    if disc < 0.0:
        return math.nan, math.nan
    sq = math.sqrt(disc)
    q = -(B + sq) if B >= 0.0 else -(B - sq)
    if q == 0.0:
        return 0.0, 0.0
    r1 = q / A
    r2 = C / q
    if r1 > r2:
        return r2, r1
    return r1, r2


@njit(cache=True, error_model="numpy")
def _piece(a, b, lo, hi, ps0, ps1, best_lo, best_hi, best_plo, best_phi):
    """Piece [a, b] of a quadric's region clipped to [lo, hi]; kept when the longest."""
    pa = 0
    pb = 0
    if lo > a:
        a = lo
        pa = ps0
    if hi < b:
        b = hi
        pb = ps1
    if a <= b and (best_lo > best_hi or b - a > best_hi - best_lo):
        return a, b, pa, pb
    return best_lo, best_hi, best_plo, best_phi


@njit(cache=True, error_model="numpy")
def _quadric(A, B, C, lo, hi, ps0, ps1):
    """{A t^2 + 2 B t + C <= 0} intersected with [lo, hi] (whose ends are parts ps0/ps1):
    the one non-empty piece (a cone's other nappe lies outside its slab), parts 0 on the
    quadric."""
    r = (1.0, -1.0, -1, -1)
    if A == 0.0:
        if B > 0.0:
            return _piece(-INF, -C / (2.0 * B), lo, hi, ps0, ps1, *r)
        if B < 0.0:
            return _piece(-C / (2.0 * B), INF, lo, hi, ps0, ps1, *r)
        if C <= 0.0:
            return _piece(-INF, INF, lo, hi, ps0, ps1, *r)
        return r
    r1, r2 = _quad_roots(A, B, C)
    if r1 != r1:  # no real root: all or nothing
        if A < 0.0:
            return _piece(-INF, INF, lo, hi, ps0, ps1, *r)
        return r
    if A > 0.0:
        return _piece(r1, r2, lo, hi, ps0, ps1, *r)
    r = _piece(-INF, r1, lo, hi, ps0, ps1, *r)
    return _piece(r2, INF, lo, hi, ps0, ps1, *r)


@njit(cache=True, error_model="numpy", inline="always")
def leaf_interval(code, gf, po, ox, oy, oz, dx, dy, dz):
    """(lo, hi, part at lo, part at hi) of a convex leaf in its frame; lo > hi: empty."""
    lo = -INF
    hi = INF
    plo = -1
    phi = -1
    if code == _BOX:
        for a in range(3):
            o = ox if a == 0 else (oy if a == 1 else oz)
            d = dx if a == 0 else (dy if a == 1 else dz)
            h = gf[po + a]
            lo, hi, plo, phi = _slab(o, d, -h, h, lo, hi, plo, phi, 2 * a, 2 * a + 1)
        return lo, hi, plo, phi
    if code == _ELL:
        a = gf[po]
        b = gf[po + 1]
        c = gf[po + 2]
        lo, hi, plo, phi = _slab(oz, dz, gf[po + 3], gf[po + 4], lo, hi, plo, phi, 1, 2)
        if lo > hi:
            return lo, hi, plo, phi
        X = ox / a
        Y = oy / b
        Z = oz / c
        U = dx / a
        V = dy / b
        W = dz / c
        return _quadric(
            U * U + V * V + W * W,
            X * U + Y * V + Z * W,
            X * X + Y * Y + Z * Z - 1.0,
            lo,
            hi,
            plo,
            phi,
        )
    if code == _CYL:
        r = gf[po]
        lo, hi, plo, phi = _slab(oz, dz, gf[po + 1], gf[po + 2], lo, hi, plo, phi, 1, 2)
        if lo > hi:
            return lo, hi, plo, phi
        return _quadric(
            dx * dx + dy * dy, ox * dx + oy * dy, ox * ox + oy * oy - r * r, lo, hi, plo, phi
        )
    if code == _CONE:
        r1 = gf[po]
        r2 = gf[po + 1]
        z1 = gf[po + 2]
        z2 = gf[po + 3]
        lo, hi, plo, phi = _slab(oz, dz, z1, z2, lo, hi, plo, phi, 1, 2)
        if lo > hi:
            return lo, hi, plo, phi
        k = (r2 - r1) / (z2 - z1)
        w = oz - (z1 - r1 / k)
        k2 = k * k
        return _quadric(
            dx * dx + dy * dy - k2 * dz * dz,
            ox * dx + oy * dy - k2 * w * dz,
            ox * ox + oy * oy - k2 * w * w,
            lo,
            hi,
            plo,
            phi,
        )
    if code == _WEDGE:
        for i in range(2):
            nx = gf[po + 2 * i]
            ny = gf[po + 2 * i + 1]
            nd = nx * dx + ny * dy
            no = nx * ox + ny * oy
            if nd == 0.0:
                if no > 0.0:
                    return 1.0, -1.0, -1, -1
            elif nd > 0.0:
                t = -no / nd
                if t < hi:
                    hi = t
                    phi = i
            else:
                t = -no / nd
                if t > lo:
                    lo = t
                    plo = i
        return lo, hi, plo, phi
    if code == _NAPPE:
        tan2 = gf[po]
        s = gf[po + 1]
        lo, hi, plo, phi = _slab(s * oz, s * dz, 0.0, 1e300, lo, hi, plo, phi, 1, 1)
        if lo > hi:
            return lo, hi, plo, phi
        return _quadric(
            dx * dx + dy * dy - tan2 * dz * dz,
            ox * dx + oy * dy - tan2 * oz * dz,
            ox * ox + oy * oy - tan2 * oz * oz,
            lo,
            hi,
            plo,
            phi,
        )
    if code == _HALF:
        nd = gf[po] * dx + gf[po + 1] * dy + gf[po + 2] * dz
        no = gf[po] * ox + gf[po + 1] * oy + gf[po + 2] * oz
        dd = gf[po + 3]
        if nd == 0.0:
            if no > dd:
                return 1.0, -1.0, -1, -1
        elif nd > 0.0:
            hi = (dd - no) / nd
            phi = 0
        else:
            lo = (dd - no) / nd
            plo = 0
        return lo, hi, plo, phi
    return 1.0, -1.0, -1, -1


@njit(cache=True, error_model="numpy", inline="always")
def mesh_crossings(gf, tri, ntri, ox, oy, oz, dx, dy, dz, ts, ps):
    """Every crossing of the line with a tessellated solid's triangles (Moller-Trumbore),
    ascending in ts, each with the gf offset of its triangle in ps; the count (at most
    MAXT). Consecutive pairs are the solid's intervals (a closed surface)."""
    n = 0
    for k in range(ntri):
        b = tri + 9 * k
        e1x = gf[b + 3] - gf[b]
        e1y = gf[b + 4] - gf[b + 1]
        e1z = gf[b + 5] - gf[b + 2]
        e2x = gf[b + 6] - gf[b]
        e2y = gf[b + 7] - gf[b + 1]
        e2z = gf[b + 8] - gf[b + 2]
        px = dy * e2z - dz * e2y
        py = dz * e2x - dx * e2z
        pz = dx * e2y - dy * e2x
        det = e1x * px + e1y * py + e1z * pz
        if det == 0.0:
            continue
        inv = 1.0 / det
        sx = ox - gf[b]
        sy = oy - gf[b + 1]
        sz = oz - gf[b + 2]
        u = (sx * px + sy * py + sz * pz) * inv
        if u < 0.0 or u > 1.0:
            continue
        qx = sy * e1z - sz * e1y
        qy = sz * e1x - sx * e1z
        qz = sx * e1y - sy * e1x
        v = (dx * qx + dy * qy + dz * qz) * inv
        if v < 0.0 or u + v > 1.0:
            continue
        t = (e2x * qx + e2y * qy + e2z * qz) * inv
        if n < MAXT:
            j = n
            while j > 0 and ts[j - 1] > t:
                ts[j] = ts[j - 1]
                ps[j] = ps[j - 1]
                j -= 1
            ts[j] = t
            ps[j] = b
            n += 1
    return n


@njit(cache=True, error_model="numpy", inline="always")
def leaf_normal(code, gf, po, x, y, z, part):
    """Outward normal (not normalised) of a leaf at a point of its surface part."""
    if code == _BOX:
        a = part // 2
        s = 1.0 if part % 2 == 1 else -1.0
        return (s if a == 0 else 0.0), (s if a == 1 else 0.0), (s if a == 2 else 0.0)
    if code == _WEDGE:
        return gf[po + 2 * part], gf[po + 2 * part + 1], 0.0
    if code == _HALF:
        return gf[po], gf[po + 1], gf[po + 2]
    if code == _NAPPE:
        if part == 1:
            return 0.0, 0.0, -gf[po + 1]
        return x, y, -gf[po] * z
    if code == _MESH:  # part: the triangle's offset in gf
        e1x = gf[part + 3] - gf[part]
        e1y = gf[part + 4] - gf[part + 1]
        e1z = gf[part + 5] - gf[part + 2]
        e2x = gf[part + 6] - gf[part]
        e2y = gf[part + 7] - gf[part + 1]
        e2z = gf[part + 8] - gf[part + 2]
        return e1y * e2z - e1z * e2y, e1z * e2x - e1x * e2z, e1x * e2y - e1y * e2x
    if part == 1:
        return 0.0, 0.0, -1.0
    if part == 2:
        return 0.0, 0.0, 1.0
    if code == _ELL:
        a = gf[po]
        b = gf[po + 1]
        c = gf[po + 2]
        return x / (a * a), y / (b * b), z / (c * c)
    if code == _CYL:
        return x, y, 0.0
    if code == _CONE:
        r1 = gf[po]
        r2 = gf[po + 1]
        z1 = gf[po + 2]
        z2 = gf[po + 3]
        k = (r2 - r1) / (z2 - z1)
        return x, y, -k * k * (z - (z1 - r1 / k))
    return 0.0, 0.0, 1.0


@njit(cache=True, error_model="numpy", inline="always")
def _xf(gf, xo, x, y, z):
    """x' = R x + T with R, T at gf[xo:xo+12] (xo < 0: identity)."""
    if xo < 0:
        return x, y, z
    return (
        gf[xo] * x + gf[xo + 1] * y + gf[xo + 2] * z + gf[xo + 9],
        gf[xo + 3] * x + gf[xo + 4] * y + gf[xo + 5] * z + gf[xo + 10],
        gf[xo + 6] * x + gf[xo + 7] * y + gf[xo + 8] * z + gf[xo + 11],
    )


@njit(cache=True, error_model="numpy", inline="always")
def _rot(gf, xo, x, y, z):
    if xo < 0:
        return x, y, z
    return (
        gf[xo] * x + gf[xo + 1] * y + gf[xo + 2] * z,
        gf[xo + 3] * x + gf[xo + 4] * y + gf[xo + 5] * z,
        gf[xo + 6] * x + gf[xo + 7] * y + gf[xo + 8] * z,
    )


@njit(cache=True, error_model="numpy", inline="always")
def _rot_t(gf, xo, x, y, z):
    """R^T n: a normal back into the parent frame."""
    if xo < 0:
        return x, y, z
    return (
        gf[xo] * x + gf[xo + 3] * y + gf[xo + 6] * z,
        gf[xo + 1] * x + gf[xo + 4] * y + gf[xo + 7] * z,
        gf[xo + 2] * x + gf[xo + 5] * y + gf[xo + 8] * z,
    )


@njit(cache=True, error_model="numpy", inline="always")
def _eval(gi, c0, nc, t, ivlo, ivhi, ivleaf, niv):
    """The CSG program's value just after t (bit stack)."""
    stack = np.uint64(0)
    sp = 0
    leaf = 0
    j = 0
    for c in range(c0, c0 + 4 * nc, 4):
        code = gi[c]
        if code < 16:
            inside = False
            while j < niv and ivleaf[j] == leaf:
                if ivlo[j] <= t and t < ivhi[j]:
                    inside = True
                j += 1
            leaf += 1
            if inside:
                stack |= np.uint64(1) << np.uint64(sp)
            sp += 1
        else:
            sp -= 1
            b = (stack >> np.uint64(sp)) & np.uint64(1)
            a = (stack >> np.uint64(sp - 1)) & np.uint64(1)
            if code == _UNION:
                r = a | b
            elif code == _INTER:
                r = a & b
            else:
                r = a & (b ^ np.uint64(1))
            stack &= ~(np.uint64(3) << np.uint64(sp - 1))
            stack |= r << np.uint64(sp - 1)
    return (stack & np.uint64(1)) == np.uint64(1)


@njit(cache=True, error_model="numpy", inline="always")
def leaf_hit(gi, gf, c0, ox, oy, oz, dx, dy, dz, tmin, tmax):
    """solid_hit of a solid that is one convex leaf: the general walk, written out (no
    scratch arrays: most volumes are one leaf)."""
    xo = gi[c0 + 2]
    lx, ly, lz = _xf(gf, xo, ox, oy, oz)
    ux, uy, uz = _rot(gf, xo, dx, dy, dz)
    lo, hi, plo, phi = leaf_interval(gi[c0], gf, gi[c0 + 1], lx, ly, lz, ux, uy, uz)
    if lo > hi:
        return INF, -1, 0, False
    if lo > tmin:
        if lo >= tmax or not (lo + (TOL_ABS + TOL_REL * abs(lo)) < hi):
            return INF, -1, 0, False
        return lo, c0, plo, True
    if hi > tmin and hi < tmax:
        return hi, c0, phi, False
    return INF, -1, 0, False


@njit(cache=True, error_model="numpy", inline="always")
def solid_hit(
    gi, gf, s, ox, oy, oz, dx, dy, dz, tmin, tmax, ivlo, ivhi, ivleaf, ivplo, ivphi, ts, ps
):
    """(t, item offset of the leaf hit, part, entering) of solid s's boundary in (tmin,
    tmax) along the ray (solid frame); t = inf when none."""
    hs = gi[FL.H_SOLID_I]
    c0 = gi[FL.H_CSG_I] + 4 * gi[hs + 2 * s]
    nc = gi[hs + 2 * s + 1]
    if nc == 1 and gi[c0] != _MESH:
        return leaf_hit(gi, gf, c0, ox, oy, oz, dx, dy, dz, tmin, tmax)
    niv = 0
    leaf = 0
    for c in range(c0, c0 + 4 * nc, 4):
        code = gi[c]
        if code >= 16:
            continue
        xo = gi[c + 2]
        lx, ly, lz = _xf(gf, xo, ox, oy, oz)
        ux, uy, uz = _rot(gf, xo, dx, dy, dz)
        if code == _MESH:
            po = gi[c + 1]
            nt = mesh_crossings(
                gf, gi[FL.H_TRI] + 9 * int(gf[po]), int(gf[po + 1]), lx, ly, lz, ux, uy, uz, ts, ps
            )
            for j in range(0, nt - 1, 2):
                if niv < MAXIV:
                    ivlo[niv] = ts[j]
                    ivhi[niv] = ts[j + 1]
                    ivleaf[niv] = leaf
                    ivplo[niv] = ps[j]
                    ivphi[niv] = ps[j + 1]
                    niv += 1
            leaf += 1
            continue
        lo, hi, plo, phi = leaf_interval(code, gf, gi[c + 1], lx, ly, lz, ux, uy, uz)
        if lo <= hi and niv < MAXIV:
            ivlo[niv] = lo
            ivhi[niv] = hi
            ivleaf[niv] = leaf
            ivplo[niv] = plo
            ivphi[niv] = phi
            niv += 1
        leaf += 1
    cur = _eval(gi, c0, nc, tmin, ivlo, ivhi, ivleaf, niv)
    t = tmin
    for _ in range(2 * niv + 1):
        tc = INF
        best = -1
        side = 0
        for j in range(niv):
            if ivlo[j] > t and ivlo[j] < tc:
                tc = ivlo[j]
                best = j
                side = 0
            if ivhi[j] > t and ivhi[j] < tc:
                tc = ivhi[j]
                best = j
                side = 1
        if best < 0 or tc >= tmax:
            return INF, -1, 0, False
        ta = tc + (TOL_ABS + TOL_REL * abs(tc))
        new = _eval(gi, c0, nc, ta, ivlo, ivhi, ivleaf, niv)
        if new != cur:
            # the item offset of leaf ivleaf[best]
            want = ivleaf[best]
            leaf = 0
            for c in range(c0, c0 + 4 * nc, 4):
                if gi[c] < 16:
                    if leaf == want:
                        return tc, c, (ivplo[best] if side == 0 else ivphi[best]), new
                    leaf += 1
        t = ta
    return INF, -1, 0, False


@njit(cache=True, error_model="numpy", inline="always")
def _box_enter(bf, b, px, py, pz, ix, iy, iz, tmin, tmax):
    """Where the ray enters box b within [tmin, tmax) (slab test, zero directions
    handled); INF when it misses."""
    lo = tmin
    hi = tmax
    for a in range(3):
        o = px if a == 0 else (py if a == 1 else pz)
        inv = ix if a == 0 else (iy if a == 1 else iz)
        blo = bf[6 * b + a]
        bhi = bf[6 * b + 3 + a]
        if inv == INF or inv == -INF:
            if o < blo or o > bhi:
                return INF
            continue
        t1 = (blo - o) * inv
        t2 = (bhi - o) * inv
        if t1 > t2:
            t1, t2 = t2, t1
        if t1 > lo:
            lo = t1
        if t2 < hi:
            hi = t2
        if lo > hi:
            return INF
    return lo


@njit(cache=True, error_model="numpy")
def trace_one(
    gi, gf, px, py, pz, dx, dy, dz, tmin, ivlo, ivhi, ivleaf, ivplo, ivphi, stack, ts, ps
):
    """Nearest boundary: (t, node, nx, ny, nz, face, entering); t = inf, node -1: none."""
    nb = gi[FL.H_BVH_I]
    bf0 = gi[FL.H_BVH_F]
    items = gi[FL.H_ITEMS]
    hs = gi[FL.H_SOLID_I]
    ni = gi[FL.H_NODE_I]
    nf = gi[FL.H_NODE_F]
    bf = gf[bf0:]
    nbox = gf[gi[FL.H_NODE_BOX] :]
    ix = 1.0 / dx if dx != 0.0 else INF
    iy = 1.0 / dy if dy != 0.0 else INF
    iz = 1.0 / dz if dz != 0.0 else INF
    best = INF
    bnode = -1
    bitem = -1
    bpart = 0
    benter = False
    sp = 0
    stack[sp] = 0
    sp += 1
    while sp > 0:
        sp -= 1
        b = stack[sp]
        if _box_enter(bf, b, px, py, pz, ix, iy, iz, tmin, best) == INF:
            continue
        start = gi[nb + 2 * b]
        count = gi[nb + 2 * b + 1]
        if count == 0:  # the nearer child on top of the stack, a missed one not at all
            ta = _box_enter(bf, start, px, py, pz, ix, iy, iz, tmin, best)
            tb = _box_enter(bf, start + 1, px, py, pz, ix, iy, iz, tmin, best)
            if ta != INF and tb != INF and sp + 2 <= STACK:
                if ta <= tb:
                    stack[sp] = start + 1
                    stack[sp + 1] = start
                else:
                    stack[sp] = start
                    stack[sp + 1] = start + 1
                sp += 2
            elif ta != INF and sp < STACK:
                stack[sp] = start
                sp += 1
            elif tb != INF and sp < STACK:
                stack[sp] = start + 1
                sp += 1
            continue
        for q in range(start, start + count):
            k = gi[items + q]
            if _box_enter(nbox, k, px, py, pz, ix, iy, iz, tmin, best) == INF:
                continue
            xo = nf + _NODE_F * k
            # world -> local: R rows at gf[xo:xo+9], T at gf[xo+9:xo+12]
            lx, ly, lz = _xf(gf, xo, px, py, pz)
            ux, uy, uz = _rot(gf, xo, dx, dy, dz)
            sol = gi[ni + _NODE_I * k]
            c0 = gi[FL.H_CSG_I] + 4 * gi[hs + 2 * sol]
            if gi[hs + 2 * sol + 1] == 1 and gi[c0] != _MESH:
                t, item, part, enter = leaf_hit(gi, gf, c0, lx, ly, lz, ux, uy, uz, tmin, best)
            else:
                t, item, part, enter = solid_hit(
                    gi,
                    gf,
                    sol,
                    lx,
                    ly,
                    lz,
                    ux,
                    uy,
                    uz,
                    tmin,
                    best,
                    ivlo,
                    ivhi,
                    ivleaf,
                    ivplo,
                    ivphi,
                    ts,
                    ps,
                )
            if t < best:
                best = t
                bnode = k
                bitem = item
                bpart = part
                benter = enter
    if bnode < 0:
        return INF, -1, 0.0, 0.0, 1.0, 0, False
    nx, ny, nz, face = _hit_normal(
        gi, gf, px, py, pz, dx, dy, dz, best, bnode, bitem, bpart, benter
    )
    return best, bnode, nx, ny, nz, face, benter


@njit(cache=True, error_model="numpy", inline="always")
def _hit_normal(gi, gf, px, py, pz, dx, dy, dz, best, bnode, bitem, bpart, benter):
    """Unit normal at the hit, leaf frame -> solid frame -> world, oriented by the change
    of state (against the ray when entering), and the face id."""
    xo = gi[FL.H_NODE_F] + _NODE_F * bnode
    lx, ly, lz = _xf(gf, xo, px, py, pz)
    ux, uy, uz = _rot(gf, xo, dx, dy, dz)
    lxo = gi[bitem + 2]
    qx, qy, qz = _xf(gf, lxo, lx + best * ux, ly + best * uy, lz + best * uz)
    nx, ny, nz = leaf_normal(gi[bitem], gf, gi[bitem + 1], qx, qy, qz, bpart)
    nx, ny, nz = _rot_t(gf, lxo, nx, ny, nz)
    nx, ny, nz = _rot_t(gf, xo, nx, ny, nz)
    ln = math.sqrt(nx * nx + ny * ny + nz * nz)
    nx /= ln
    ny /= ln
    nz /= ln
    c = nx * dx + ny * dy + nz * dz
    if (benter and c > 0.0) or (not benter and c < 0.0):
        nx = -nx
        ny = -ny
        nz = -nz
    return nx, ny, nz, gi[bitem + 3] + bpart


@njit(cache=True, error_model="numpy")
def trace_flat_one(gi, gf, px, py, pz, dx, dy, dz, tmin):
    """trace_one of a flat geometry (header H_FLAT: the BVH one leaf, every solid one
    convex leaf): the leaf's nodes in its order, each node's box then its leaf, with no
    walk, no stack and no CSG scratch. The same tests in the same order as trace_one, so
    the same result: the root box holds every node box, so a ray that misses it misses
    them all."""
    items = gi[FL.H_ITEMS]
    hs = gi[FL.H_SOLID_I]
    ni = gi[FL.H_NODE_I]
    nf = gi[FL.H_NODE_F]
    csg = gi[FL.H_CSG_I]
    nbox = gf[gi[FL.H_NODE_BOX] :]
    ix = 1.0 / dx if dx != 0.0 else INF
    iy = 1.0 / dy if dy != 0.0 else INF
    iz = 1.0 / dz if dz != 0.0 else INF
    best = INF
    bnode = -1
    bitem = -1
    bpart = 0
    benter = False
    for q in range(gi[FL.H_NODES]):
        k = gi[items + q]
        if _box_enter(nbox, k, px, py, pz, ix, iy, iz, tmin, best) == INF:
            continue
        xo = nf + _NODE_F * k
        lx, ly, lz = _xf(gf, xo, px, py, pz)
        ux, uy, uz = _rot(gf, xo, dx, dy, dz)
        c0 = csg + 4 * gi[hs + 2 * gi[ni + _NODE_I * k]]
        t, item, part, enter = leaf_hit(gi, gf, c0, lx, ly, lz, ux, uy, uz, tmin, best)
        if t < best:
            best = t
            bnode = k
            bitem = item
            bpart = part
            benter = enter
    if bnode < 0:
        return INF, -1, 0.0, 0.0, 1.0, 0, False
    nx, ny, nz, face = _hit_normal(
        gi, gf, px, py, pz, dx, dy, dz, best, bnode, bitem, bpart, benter
    )
    return best, bnode, nx, ny, nz, face, benter


@njit(cache=True, error_model="numpy")
def trace(gi, gf, pos, dirs, tmin, t_out, node_out, n_out, face_out, enter_out, side_out):
    """trace_one (trace_flat_one for a flat geometry) for every column of pos/dirs (float32
    (3, m)); results into the outputs. side_out (5, m) int32, or (5, 0) when not wanted:
    the node table read on the side of the hit the photon is on (node 0's where none, as
    the NumPy step reads it): the material it is in, the material beyond, the surface met,
    the boundary number + 1 and the sensor id; one pass instead of NumPy gathers."""
    m = pos.shape[1]
    ivlo = np.empty(MAXIV)
    ivhi = np.empty(MAXIV)
    ivleaf = np.empty(MAXIV, np.int32)
    ivplo = np.empty(MAXIV, np.int32)
    ivphi = np.empty(MAXIV, np.int32)
    stack = np.empty(STACK, np.int32)
    ts = np.empty(MAXT)
    ps = np.empty(MAXT, np.int32)
    flat = gi[FL.H_FLAT] != 0
    sides = side_out.shape[1] == m
    ni = gi[FL.H_NODE_I]
    for i in range(m):
        px = float(pos[0, i])
        py = float(pos[1, i])
        pz = float(pos[2, i])
        dx = float(dirs[0, i])
        dy = float(dirs[1, i])
        dz = float(dirs[2, i])
        if flat:
            t, k, nx, ny, nz, face, enter = trace_flat_one(gi, gf, px, py, pz, dx, dy, dz, tmin)
        else:
            t, k, nx, ny, nz, face, enter = trace_one(
                gi,
                gf,
                px,
                py,
                pz,
                dx,
                dy,
                dz,
                tmin,
                ivlo,
                ivhi,
                ivleaf,
                ivplo,
                ivphi,
                stack,
                ts,
                ps,
            )
        t_out[i] = np.float32(t)
        node_out[i] = k
        n_out[0, i] = np.float32(nx)
        n_out[1, i] = np.float32(ny)
        n_out[2, i] = np.float32(nz)
        face_out[i] = face
        enter_out[i] = enter
        if sides:
            r = ni + _NODE_I * (k if k > 0 else 0)
            # (solid, omat, osur, isur, imat, boundary, osensor, isensor)
            side_out[0, i] = gi[r + 1] if enter else gi[r + 4]
            side_out[1, i] = gi[r + 4] if enter else gi[r + 1]
            side_out[2, i] = gi[r + 2] if enter else gi[r + 3]
            side_out[3, i] = gi[r + 5] + 1
            side_out[4, i] = gi[r + 6] if enter else gi[r + 7]


def nearest(
    geo_i: np.ndarray, geo_f: np.ndarray, pos: np.ndarray, dirs: np.ndarray, tmin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t float32, node int32 (-1: none), outward normal (3,m) float32, face int32,
    entering bool) of the nearest boundary beyond tmin for each ray."""
    return _nearest(geo_i, geo_f, pos, dirs, tmin, False)[:5]


def nearest_sides(
    geo_i: np.ndarray, geo_f: np.ndarray, pos: np.ndarray, dirs: np.ndarray, tmin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``nearest`` and the (5, m) int32 side table of ``trace``: material here, material
    beyond, surface, boundary + 1, sensor (node 0's row where no boundary was found)."""
    return _nearest(geo_i, geo_f, pos, dirs, tmin, True)


def _nearest(
    geo_i: np.ndarray,
    geo_f: np.ndarray,
    pos: np.ndarray,
    dirs: np.ndarray,
    tmin: float,
    sides: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    m = pos.shape[1]
    t = np.empty(m, np.float32)
    node = np.empty(m, np.int32)
    n = np.empty((3, m), np.float32)
    face = np.empty(m, np.int32)
    enter = np.empty(m, np.bool_)
    side = np.empty((5, m if sides else 0), np.int32)
    trace(
        geo_i,
        geo_f,
        np.ascontiguousarray(pos, np.float32),
        np.ascontiguousarray(dirs, np.float32),
        float(np.float32(tmin)),
        t,
        node,
        n,
        face,
        enter,
        side,
    )
    return t, node, n, face, enter, side


_DIAG = (0.2672612419124244, 0.5345224838248488, 0.8017837257372732)


@njit(cache=True, error_model="numpy")
def inside_batch(gi, gf, solid, pts, out):
    """Is pts[:, i] inside solid[i] (its frame)? The program's value at the point along a
    fixed direction (for the overlap check)."""
    ivlo = np.empty(MAXIV)
    ivhi = np.empty(MAXIV)
    ivleaf = np.empty(MAXIV, np.int32)
    ts = np.empty(MAXT)
    ps = np.empty(MAXT, np.int32)
    hs = gi[FL.H_SOLID_I]
    dx, dy, dz = _DIAG
    for i in range(pts.shape[1]):
        s = solid[i]
        c0 = gi[FL.H_CSG_I] + 4 * gi[hs + 2 * s]
        nc = gi[hs + 2 * s + 1]
        niv = 0
        leaf = 0
        for c in range(c0, c0 + 4 * nc, 4):
            code = gi[c]
            if code >= 16:
                continue
            xo = gi[c + 2]
            lx, ly, lz = _xf(gf, xo, pts[0, i], pts[1, i], pts[2, i])
            ux, uy, uz = _rot(gf, xo, dx, dy, dz)
            if code == _MESH:
                po = gi[c + 1]
                nt = mesh_crossings(
                    gf,
                    gi[FL.H_TRI] + 9 * int(gf[po]),
                    int(gf[po + 1]),
                    lx,
                    ly,
                    lz,
                    ux,
                    uy,
                    uz,
                    ts,
                    ps,
                )
                for j in range(0, nt - 1, 2):
                    if niv < MAXIV:
                        ivlo[niv] = ts[j]
                        ivhi[niv] = ts[j + 1]
                        ivleaf[niv] = leaf
                        niv += 1
                leaf += 1
                continue
            lo, hi, plo, phi = leaf_interval(code, gf, gi[c + 1], lx, ly, lz, ux, uy, uz)
            if lo <= hi and niv < MAXIV:
                ivlo[niv] = lo
                ivhi[niv] = hi
                ivleaf[niv] = leaf
                niv += 1
            leaf += 1
        out[i] = 1 if _eval(gi, c0, nc, 0.0, ivlo, ivhi, ivleaf, niv) else 0


@njit(cache=True, error_model="numpy")
def surface_batch(gi, gf, solid, org, dirs, pts, nrm, ok):
    """First boundary of solid[i] along ray i (its frame): point and outward normal."""
    ivlo = np.empty(MAXIV)
    ivhi = np.empty(MAXIV)
    ivleaf = np.empty(MAXIV, np.int32)
    ivplo = np.empty(MAXIV, np.int32)
    ivphi = np.empty(MAXIV, np.int32)
    ts = np.empty(MAXT)
    ps = np.empty(MAXT, np.int32)
    for i in range(org.shape[1]):
        ox, oy, oz = org[0, i], org[1, i], org[2, i]
        dx, dy, dz = dirs[0, i], dirs[1, i], dirs[2, i]
        t, item, part, enter = solid_hit(
            gi,
            gf,
            solid[i],
            ox,
            oy,
            oz,
            dx,
            dy,
            dz,
            0.0,
            INF,
            ivlo,
            ivhi,
            ivleaf,
            ivplo,
            ivphi,
            ts,
            ps,
        )
        if item < 0:
            ok[i] = 0
            continue
        lxo = gi[item + 2]
        qx, qy, qz = _xf(gf, lxo, ox + t * dx, oy + t * dy, oz + t * dz)
        nx, ny, nz = leaf_normal(gi[item], gf, gi[item + 1], qx, qy, qz, part)
        nx, ny, nz = _rot_t(gf, lxo, nx, ny, nz)
        ln = math.sqrt(nx * nx + ny * ny + nz * nz)
        c = nx * dx + ny * dy + nz * dz
        sg = 1.0 / ln
        if (enter and c > 0.0) or (not enter and c < 0.0):
            sg = -sg
        pts[0, i] = ox + t * dx
        pts[1, i] = oy + t * dy
        pts[2, i] = oz + t * dz
        nrm[0, i] = nx * sg
        nrm[1, i] = ny * sg
        nrm[2, i] = nz * sg
        ok[i] = 1
