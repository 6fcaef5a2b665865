"""Overlaps and extrusions, checked as Geant4's G4PVPlacement::CheckOverlaps does: points
sampled on each daughter's surface must lie inside its mother and outside its sisters
(docs/propagation.md, "Bad geometry").

Why sampling: a boolean solid's exact overlap test is hard; a point just inside a
daughter's surface (``TOL`` along its inward normal) that lies outside the mother, or
inside a sister, proves the fault, and touching surfaces (a PMT on a wall) are allowed as
Geant4 allows them. Points come from rays shot at the daughter (its first boundary), so
every solid the tracer knows can be sampled. Only sisters whose boxes overlap are tested
(a sweep over x), so thousands of PMTs in one mother cost what their neighbours cost. On
load a few points per daughter run (cheap); ``skydeck-engine geometry check`` runs 1000
(Geant4's default resolution).
"""

from __future__ import annotations

import numpy as np

from engine.core.errors import BadInput
from engine.propagate.geometry.flatten import Geometry
from engine.propagate.geometry.gdml import Detector
from engine.propagate.geometry.solids import box_transform

TOL = 1e-4  # mm
MAX_REPORT = 1


def _pairs(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) of boxes that overlap (strictly), by a sweep over x."""
    n = len(lo)
    if n < 2:
        return np.zeros(0, int), np.zeros(0, int)
    order = np.argsort(lo[:, 0], kind="stable")
    slo, shi = lo[order], hi[order]
    end = np.searchsorted(slo[:, 0], shi[:, 0], side="left")
    cnt = np.maximum(end - np.arange(n) - 1, 0)
    a = np.repeat(np.arange(n), cnt)
    off = np.cumsum(cnt) - cnt
    b = a + 1 + (np.arange(int(cnt.sum())) - np.repeat(off, cnt))
    keep = np.all((slo[a] < shi[b]) & (slo[b] < shi[a]), axis=1)
    return order[a[keep]], order[b[keep]]


def _sample(
    geo: Geometry, solid: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k surface points (and outward normals) per listed solid, in its frame; owner index."""
    from engine.propagate.geometry.trace import surface_batch

    n = len(solid)
    lo = np.array([geo.solids[s].lo for s in solid])
    hi = np.array([geo.solids[s].hi for s in solid])
    owner = np.repeat(np.arange(n), k)
    c = 0.5 * (lo + hi)[owner]
    r = 0.5 * np.linalg.norm(hi - lo, axis=1)[owner] * 2.0 + 1.0
    u = rng.normal(size=(len(owner), 3))
    u /= np.linalg.norm(u, axis=1)[:, None]
    org = c + r[:, None] * u
    tgt = lo[owner] + rng.random((len(owner), 3)) * (hi - lo)[owner]
    d = tgt - org
    d /= np.linalg.norm(d, axis=1)[:, None]
    pts = np.zeros((3, len(owner)))
    nrm = np.zeros((3, len(owner)))
    ok = np.zeros(len(owner), np.int8)
    surface_batch(
        geo.geo_i,
        geo.geo_f,
        solid[owner].astype(np.int32),
        np.ascontiguousarray(org.T),
        np.ascontiguousarray(d.T),
        pts,
        nrm,
        ok,
    )
    keep = ok.astype(bool)
    return pts[:, keep], nrm[:, keep], owner[keep]


def check_overlaps(d: Detector, geo: Geometry, points: int = 1000, seed: int = 1) -> dict[str, int]:
    """BadInput (naming the file and the volumes) at the first daughter found sticking out
    of its mother or overlapping a sister; else counts of what was checked."""
    from engine.propagate.geometry.trace import inside_batch

    rng = np.random.default_rng(seed)
    sidx = geo.info.get("solid_index", {})
    checked = {"mothers": 0, "daughters": 0, "pairs": 0, "points": 0}
    for lv, vol in d.volumes.items():
        if not vol.daughters or vol.solid not in sidx:
            continue
        dsol = np.array([sidx[d.volumes[pv.volume].solid] for pv in vol.daughters], np.int32)
        rots = np.array([pv.rot for pv in vol.daughters])
        poss = np.array([pv.pos for pv in vol.daughters])
        pts, nrm, own = _sample(geo, dsol, points, rng)
        # into the mother's frame, a hair inside the daughter
        pm = np.einsum("nij,jn->in", rots[own], pts) + poss[own].T
        nm = np.einsum("nij,jn->in", rots[own], nrm)
        q = np.ascontiguousarray(pm - TOL * nm)
        inside = np.zeros(q.shape[1], np.int8)
        inside_batch(
            geo.geo_i, geo.geo_f, np.full(q.shape[1], sidx[vol.solid], np.int32), q, inside
        )
        bad = np.flatnonzero(inside == 0)
        if bad.size:
            pv = vol.daughters[int(own[bad[0]])]
            x = q[:, bad[0]]
            raise BadInput(
                f"volume {pv.name} ({pv.volume}) sticks out of its mother {lv} "
                f"(at {x[0]:.4g}, {x[1]:.4g}, {x[2]:.4g} in the mother's frame)",
                d.path,
            )
        checked["mothers"] += 1
        checked["daughters"] += len(dsol)
        checked["points"] += q.shape[1]
        # sisters whose boxes overlap
        boxes = [
            box_transform(geo.solids[s].lo, geo.solids[s].hi, r, p)
            for s, r, p in zip(dsol, rots, poss, strict=True)
        ]
        blo = np.array([b[0] for b in boxes])
        bhi = np.array([b[1] for b in boxes])
        ia, ib = _pairs(blo, bhi)
        if not ia.size:
            continue
        checked["pairs"] += len(ia)
        # points of a tested against b and of b against a
        for x_, y_ in ((ia, ib), (ib, ia)):
            pos_of: dict[int, list[tuple[int, int]]] = {}
            for i, (a, b) in enumerate(zip(x_, y_, strict=True)):
                pos_of.setdefault(int(a), []).append((i, int(b)))
            sel = np.isin(own, x_)
            if not sel.any():
                continue
            idx = np.flatnonzero(sel)
            rows_p: list[int] = []
            rows_oth: list[int] = []
            for j in idx:
                for _, b in pos_of.get(int(own[j]), []):
                    rows_p.append(int(j))
                    rows_oth.append(b)
            if not rows_p:
                continue
            rp = np.array(rows_p)
            ro = np.array(rows_oth)
            # into the sister's frame: x_b = R_b^T (x_m - p_b)
            xm = q[:, rp]
            xb = np.einsum("nji,jn->in", rots[ro], xm - poss[ro].T)
            rows_s = dsol[ro]
            rows_own = own[rp]
            hit = np.zeros(xb.shape[1], np.int8)
            inside_batch(
                geo.geo_i, geo.geo_f, rows_s.astype(np.int32), np.ascontiguousarray(xb), hit
            )
            bad = np.flatnonzero(hit == 1)
            if bad.size:
                a = vol.daughters[int(rows_own[bad[0]])]
                b = vol.daughters[int(ro[bad[0]])]
                raise BadInput(
                    f"volumes {a.name} ({a.volume}) and {b.name} ({b.volume}) in {lv} overlap",
                    d.path,
                )
    return checked
