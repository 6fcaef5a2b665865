"""Solids as CSG trees of convex leaves (Opticks' CSG trees; docs/propagation.md,
"Geometry").

Why convex leaves: a ray meets a convex leaf in one interval, so every solid is a postfix
program of leaves and the operators union, intersection and difference, and the tracer
finds a solid's boundary by walking the leaves' interval ends in order and evaluating the
program just after each (``trace``). GDML solids decompose as Geant4 defines them: a tube
is a cylinder between two planes minus its inner cylinder, intersected with a phi wedge
(or minus the complementary wedge beyond 180 degrees); a cone likewise with frusta; a
sphere is a ball minus its inner ball, cut by the phi wedge and by theta cones (a nappe
intersected, or subtracted beyond 90 degrees); an ellipsoid is a scaled ball between its
z cuts; a polycone is the union of its sections' frusta minus the union of their inner
frusta; a tessellated solid is a leaf of triangles whose crossings, in order, pair into
intervals (a closed surface). A torus is read but refused: its quartic leaf is not written
yet (TORUS is reserved for it). Leaves
carry a transform from the solid's frame (a boolean's operands are placed with G4's
conventions, see ``gdml``).

Leaf codes and parameters (float64), mirrored in ``trace`` and the CUDA kernel:
BOX hx hy hz; ELLIPSOID a b c zlo zhi; CYLINDER r zlo zhi; CONE r1 r2 zlo zhi (radius r1
at zlo, r2 at zhi); WEDGE n0x n0y n1x n1y (inside: n0.x <= 0 and n1.x <= 0, an opening
of at most 180 degrees); NAPPE tan2 sign (x^2+y^2 <= tan2 z^2 with sign*z >= 0);
HALFSPACE nx ny nz d (n.x <= d); TORUS R r; MESH first count (triangles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from engine.core.errors import BadInput
from engine.propagate.geometry.gdml import GSolid

BOX, ELLIPSOID, CYLINDER, CONE, WEDGE, NAPPE, HALFSPACE, TORUS, MESH = range(1, 10)
UNION, INTERSECT, DIFF = 16, 17, 18
LEAF_NAMES = {
    BOX: "box",
    ELLIPSOID: "ellipsoid",
    CYLINDER: "cylinder",
    CONE: "cone",
    WEDGE: "wedge",
    NAPPE: "nappe",
    HALFSPACE: "halfspace",
    TORUS: "torus",
    MESH: "mesh",
}
MAX_LEAVES = 32  # per solid: the kernel's interval buffers are sized for this
BIG = 1e300  # "no cut": an unbounded slab end
TWO_PI = 2 * math.pi
ANGLE_TOL = 1e-12


@dataclass
class Leaf:
    code: int
    params: list[float]
    rot: np.ndarray = field(default_factory=lambda: np.eye(3))  # x_leaf = rot @ x_solid + pos
    pos: np.ndarray = field(default_factory=lambda: np.zeros(3))
    face: int = 0  # TOML scenes: first face id of this leaf (sensor = base + face)
    tris: np.ndarray | None = None  # MESH: (T,3,3) in the leaf's frame


@dataclass
class Csg:
    """Postfix program: Leaf or operator code."""

    items: list[Leaf | int]
    lo: np.ndarray  # bounding box in the solid's frame
    hi: np.ndarray

    @property
    def leaves(self) -> list[Leaf]:
        return [i for i in self.items if isinstance(i, Leaf)]


def _leaf(
    code: int, params: list[float], lo: list[float], hi: list[float], tris: np.ndarray | None = None
) -> Csg:
    return Csg(
        [Leaf(code, [float(p) for p in params], tris=tris)],
        np.array(lo, float),
        np.array(hi, float),
    )


def _combine(op: int, a: Csg, b: Csg) -> Csg:
    if op == UNION:
        lo, hi = np.minimum(a.lo, b.lo), np.maximum(a.hi, b.hi)
    elif op == INTERSECT:
        lo, hi = np.maximum(a.lo, b.lo), np.minimum(a.hi, b.hi)
    else:
        lo, hi = a.lo, a.hi
    return Csg(a.items + b.items + [op], lo, hi)


def _moved(c: Csg, rot: np.ndarray, pos: np.ndarray) -> Csg:
    """``c`` placed in a parent frame by the direct transform x_parent = rot x + pos."""
    inv_r = rot.T
    inv_t = -rot.T @ pos
    items: list[Leaf | int] = []
    for it in c.items:
        if isinstance(it, Leaf):
            items.append(
                Leaf(it.code, it.params, it.rot @ inv_r, it.rot @ inv_t + it.pos, it.face, it.tris)
            )
        else:
            items.append(it)
    lo, hi = box_transform(c.lo, c.hi, rot, pos)
    return Csg(items, lo, hi)


def box_transform(
    lo: np.ndarray, hi: np.ndarray, rot: np.ndarray, pos: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box of a box moved by x' = rot x + pos (unbounded stays unbounded)."""
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        return np.full(3, -np.inf), np.full(3, np.inf)
    c = 0.5 * (lo + hi)
    h = 0.5 * (hi - lo)
    c2 = rot @ c + pos
    h2 = np.abs(rot) @ h
    return c2 - h2, c2 + h2


def _wedge(phi0: float, dphi: float) -> Csg:
    """Inside phi0..phi0+dphi (dphi <= pi), unbounded."""
    p1 = phi0 + dphi
    n0 = (math.sin(phi0), -math.cos(phi0))
    n1 = (-math.sin(p1), math.cos(p1))
    inf = math.inf
    return _leaf(WEDGE, [n0[0], n0[1], n1[0], n1[1]], [-inf] * 3, [inf] * 3)


def _phi_cut(c: Csg, phi0: float, dphi: float, where: str) -> Csg:
    if not 0 < dphi <= TWO_PI + ANGLE_TOL:
        raise BadInput(f"{where}: deltaphi must be within 0..2pi")
    if dphi >= TWO_PI - ANGLE_TOL:
        return c
    if dphi <= math.pi:
        return _combine(INTERSECT, c, _wedge(phi0, dphi))
    return _combine(DIFF, c, _wedge(phi0 + dphi, TWO_PI - dphi))


def _nappe(alpha: float, up: bool) -> Csg:
    """theta <= alpha (up) or theta >= pi - alpha (down), alpha < pi/2."""
    inf = math.inf
    return _leaf(NAPPE, [math.tan(alpha) ** 2, 1.0 if up else -1.0], [-inf] * 3, [inf] * 3)


def _halfspace(n: tuple[float, float, float], d: float) -> Csg:
    inf = math.inf
    return _leaf(HALFSPACE, [*n, d], [-inf] * 3, [inf] * 3)


def _frustum(r1: float, r2: float, z1: float, z2: float) -> Csg:
    r = max(r1, r2)
    if abs(r1 - r2) <= 1e-12 * max(r, 1.0):
        return _leaf(CYLINDER, [r, z1, z2], [-r, -r, z1], [r, r, z2])
    return _leaf(CONE, [r1, r2, z1, z2], [-r, -r, z1], [r, r, z2])


def _pos(where: str, **vals: float) -> None:
    for k, v in vals.items():
        if not v > 0:
            raise BadInput(f"{where}: {k} must be positive, got {v:g}")


def build(name: str, solids: dict[str, GSolid], depth: int = 0) -> Csg:
    """The CSG program of solid ``name`` (BadInput naming the solid when it is invalid)."""
    if depth > 64:
        raise BadInput(f"solid {name}: booleans nested deeper than 64")
    s = solids[name]
    where = f"solid {name}"
    p = s.p
    k = s.kind
    if k == "box":
        _pos(where, x=p["hx"], y=p["hy"], z=p["hz"])
        h = [p["hx"], p["hy"], p["hz"]]
        c = _leaf(BOX, h, [-v for v in h], h)
    elif k == "orb":
        _pos(where, r=p["r"])
        r = p["r"]
        c = _leaf(ELLIPSOID, [r, r, r, -BIG, BIG], [-r] * 3, [r] * 3)
    elif k == "ellipsoid":
        a, b, cz = p["ax"], p["by"], p["cz"]
        _pos(where, ax=a, by=b, cz=cz)
        z1, z2 = p["zcut1"], p["zcut2"]
        if z1 == 0 and z2 == 0:
            z1, z2 = -cz, cz
        if z1 >= cz or z2 <= -cz or z1 >= z2:
            raise BadInput(f"{where}: invalid z cuts {z1:g}, {z2:g}")
        z1, z2 = max(z1, -cz), min(z2, cz)
        lo = [-a, -b, z1]
        hi = [a, b, z2]
        c = _leaf(ELLIPSOID, [a, b, cz, z1 if z1 > -cz else -BIG, z2 if z2 < cz else BIG], lo, hi)
    elif k == "sphere":
        rmin, rmax = p["rmin"], p["rmax"]
        _pos(where, rmax=rmax)
        if not 0 <= rmin < rmax:
            raise BadInput(f"{where}: needs 0 <= rmin < rmax")
        c = _leaf(ELLIPSOID, [rmax, rmax, rmax, -BIG, BIG], [-rmax] * 3, [rmax] * 3)
        if rmin > 0:
            c = _combine(
                DIFF, c, _leaf(ELLIPSOID, [rmin, rmin, rmin, -BIG, BIG], [-rmin] * 3, [rmin] * 3)
            )
        c = _phi_cut(c, p["phi0"], p["dphi"], where)
        t0, dt = p["theta0"], p["dtheta"]
        t1 = t0 + dt
        if not (0 <= t0 < math.pi and dt > 0 and t1 <= math.pi + ANGLE_TOL):
            raise BadInput(f"{where}: theta range must lie within 0..pi")
        half = math.pi / 2
        if t0 > ANGLE_TOL:  # theta >= t0
            if abs(t0 - half) < ANGLE_TOL:
                c = _combine(INTERSECT, c, _halfspace((0.0, 0.0, 1.0), 0.0))
            elif t0 < half:
                c = _combine(DIFF, c, _nappe(t0, True))
            else:
                c = _combine(INTERSECT, c, _nappe(math.pi - t0, False))
        if t1 < math.pi - ANGLE_TOL:  # theta <= t1
            if abs(t1 - half) < ANGLE_TOL:
                c = _combine(INTERSECT, c, _halfspace((0.0, 0.0, -1.0), 0.0))
            elif t1 < half:
                c = _combine(INTERSECT, c, _nappe(t1, True))
            else:
                c = _combine(DIFF, c, _nappe(math.pi - t1, False))
    elif k == "tube":
        rmin, rmax, hz = p["rmin"], p["rmax"], p["hz"]
        _pos(where, rmax=rmax, z=hz)
        if not 0 <= rmin < rmax:
            raise BadInput(f"{where}: needs 0 <= rmin < rmax")
        c = _leaf(CYLINDER, [rmax, -hz, hz], [-rmax, -rmax, -hz], [rmax, rmax, hz])
        if rmin > 0:
            m = max(1.0, 0.01 * hz)  # the inner cylinder pokes out: no coincident end faces
            c = _combine(
                DIFF,
                c,
                _leaf(
                    CYLINDER, [rmin, -hz - m, hz + m], [-rmin, -rmin, -hz - m], [rmin, rmin, hz + m]
                ),
            )
        c = _phi_cut(c, p["phi0"], p["dphi"], where)
    elif k == "cone":
        hz = p["hz"]
        _pos(where, z=hz)
        if p["rmax1"] < 0 or p["rmax2"] < 0 or max(p["rmax1"], p["rmax2"]) <= 0:
            raise BadInput(f"{where}: rmax1, rmax2 must not be negative, one positive")
        if not (0 <= p["rmin1"] <= p["rmax1"] and 0 <= p["rmin2"] <= p["rmax2"]):
            raise BadInput(f"{where}: needs 0 <= rmin <= rmax at both ends")
        c = _frustum(p["rmax1"], p["rmax2"], -hz, hz)
        if p["rmin1"] > 0 or p["rmin2"] > 0:
            c = _combine(DIFF, c, _frustum(p["rmin1"], p["rmin2"], -hz, hz))
        c = _phi_cut(c, p["phi0"], p["dphi"], where)
    elif k == "polycone":
        planes = p["planes"]
        zs = [z for _, _, z in planes]
        if any(b < a for a, b in zip(zs, zs[1:], strict=False)):
            raise BadInput(f"{where}: zplane z must not decrease")
        outer: Csg | None = None
        inner: Csg | None = None
        for (n1, x1, z1), (n2, x2, z2) in zip(planes, planes[1:], strict=False):
            if z2 == z1:
                continue
            if x1 < 0 or x2 < 0 or max(x1, x2) <= 0 or not (0 <= n1 <= x1 and 0 <= n2 <= x2):
                raise BadInput(f"{where}: needs 0 <= rmin <= rmax, rmax > 0 in every section")
            f = _frustum(x1, x2, z1, z2)
            outer = f if outer is None else _combine(UNION, outer, f)
            if n1 > 0 or n2 > 0:
                g = _frustum(n1, n2, z1, z2)
                inner = g if inner is None else _combine(UNION, inner, g)
        if outer is None:
            raise BadInput(f"{where}: all sections have zero height")
        c = outer if inner is None else _combine(DIFF, outer, inner)
        c = _phi_cut(c, p["phi0"], p["dphi"], where)
    elif k == "torus":
        # read, but the tracer has no quartic leaf yet: refused rather than made transparent
        raise BadInput(f"{where}: a torus is not supported by the tracer yet")
    elif k == "torus-leaf":  # pragma: no cover - kept for the quartic leaf to come
        rmin, rmax, rtor = p["rmin"], p["rmax"], p["rtor"]
        _pos(where, rmax=rmax, rtor=rtor)
        if not 0 <= rmin < rmax < rtor:
            raise BadInput(f"{where}: needs 0 <= rmin < rmax < rtor")
        e = rtor + rmax
        c = _leaf(TORUS, [rtor, rmax], [-e, -e, -rmax], [e, e, rmax])
        if rmin > 0:
            c = _combine(DIFF, c, _leaf(TORUS, [rtor, rmin], [-e, -e, -rmin], [e, e, rmin]))
        c = _phi_cut(c, p["phi0"], p["dphi"], where)
    elif k == "tessellated":
        tris = np.asarray(p["facets"], float)
        flat = tris.reshape(-1, 3)
        c = _leaf(
            MESH, [0.0, float(len(tris))], list(flat.min(axis=0)), list(flat.max(axis=0)), tris=tris
        )
    elif k in ("union", "subtraction", "intersection"):
        a = build(p["first"], solids, depth + 1)
        b = build(p["second"], solids, depth + 1)
        if np.any(p["rot1"] != np.eye(3)) or np.any(p["pos1"] != 0):
            a = _moved(a, p["rot1"], p["pos1"])
        b = _moved(b, p["rot"], p["pos"])
        c = _combine({"union": UNION, "subtraction": DIFF, "intersection": INTERSECT}[k], a, b)
    else:  # pragma: no cover - the reader refuses unknown solids
        raise BadInput(f"{where}: unknown solid {k!r}")
    if len(c.leaves) > MAX_LEAVES:
        raise BadInput(f"{where}: {len(c.leaves)} CSG leaves; at most {MAX_LEAVES}")
    if not (np.all(np.isfinite(c.lo)) and np.all(np.isfinite(c.hi))) or np.any(c.hi <= c.lo):
        raise BadInput(f"{where}: the solid is unbounded or empty")
    return c
