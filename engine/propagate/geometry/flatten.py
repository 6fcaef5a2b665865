"""The volume tree flattened into the arrays both backends trace (docs/propagation.md,
"Geometry" and "Acceleration").

Why flat: the CUDA kernel and the CPU tracer read two blobs and nothing else, an int32
``geo_i`` and a float64 ``geo_f``, whose first 20 ints say where each table starts:

- nodes, one per placed volume instance (depth-first from the world): int32 (solid,
  omat, osur, isur, imat, boundary, osensor, isensor) and float64 world -> local transform
  (R row-major, T: x_local = R x_world + T). Opticks' boundary model: a photon that
  crosses node k's solid going in (cos < 0 against the outward normal) goes from omat to
  imat and meets osur; going out, from imat to omat and isur. omat -1 is outside the world
  (a photon leaving it is MI unless isur, the TOML container's inner surface, catches it).
  osensor/isensor: the sensor id a detection at that surface reports;
- solids: (first CSG item, count), the postfix programs of ``solids``; CSG items (code,
  params offset in geo_f, leaf transform offset in geo_f or -1, face base);
- the BVH over the nodes' world boxes (``bvh``), mesh triangles, and each node's own
  world box (tested before its solid: a leaf of the BVH may hold a big volume);
- H_FLAT: 1 when the BVH is one leaf (at most ``bvh.LEAF`` volumes) and every node's solid
  is one convex leaf (no boolean, no mesh), as in an analytic test scene: the tracers then
  test the nodes in the leaf's order without the BVH walk and the general CSG code (the
  same tests in the same order, so the same results; docs/benchmarks.md, "tboolean-box").

Floats are double: a 20 m detector in float32 has 2 um steps, and the tracer would see a
photon's own surface again. A TOML scene is a small tree too (``from_boxes``): node 0 the
container (the world), node j+1 object j, with sensor ids volume*8 + face + 1 as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.core.errors import BadInput
from engine.propagate.geometry import bvh as B
from engine.propagate.geometry.solids import BOX, ELLIPSOID, MESH, Csg, Leaf, box_transform

HEADER = 20
NODE_I = 8
NODE_F = 12
MAX_NODES = 4_000_000
(
    H_NODES,
    H_NODE_I,
    H_NODE_F,
    H_SOLIDS,
    H_SOLID_I,
    H_CSG_I,
    H_NCSG,
    H_LEAF_X,
    H_NBVH,
    H_BVH_I,
    H_BVH_F,
    H_ITEMS,
    H_TRI,
    H_NTRI,
    H_FACE_IDS,
    H_DEPTH,
    H_NODE_BOX,
    H_FLAT,
) = range(18)


@dataclass
class NodeSpec:
    solid: int
    rot: np.ndarray  # direct: x_world = rot @ x_local + pos
    pos: np.ndarray
    omat: int
    osur: int
    isur: int
    imat: int
    osensor: int = 0
    isensor: int = 0
    bnd: int = -1  # -1: assigned from the unique (omat, osur, isur, imat)
    label: str = ""


@dataclass
class Geometry:
    geo_i: np.ndarray
    geo_f: np.ndarray
    node_i: np.ndarray  # (N,8) views for the NumPy side's gathers
    lo: np.ndarray  # world box
    hi: np.ndarray
    face_ids: bool
    labels: list[str]
    node_lo: np.ndarray
    node_hi: np.ndarray
    solids: list[Csg]
    node_x: np.ndarray  # (N,12)
    bvh_depth: int
    boundaries: int
    info: dict = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return len(self.node_i)

    def nbytes(self) -> int:
        return int(self.geo_i.nbytes + self.geo_f.nbytes)


def assemble(csgs: list[Csg], nodes: list[NodeSpec], face_ids: bool) -> Geometry:
    if not nodes:
        raise BadInput("the geometry has no volume")
    n = len(nodes)
    node_i = np.zeros((n, NODE_I), np.int32)
    node_x = np.zeros((n, NODE_F))
    lo = np.empty((n, 3))
    hi = np.empty((n, 3))
    bnds: dict[tuple[int, int, int, int], int] = {}
    for k, nd in enumerate(nodes):
        key = (nd.omat, nd.osur, nd.isur, nd.imat)
        b = nd.bnd if nd.bnd >= 0 else bnds.setdefault(key, len(bnds))
        node_i[k] = (
            nd.solid,
            nd.omat,
            nd.osur,
            nd.isur,
            nd.imat,
            b,
            np.int64(nd.osensor).astype(np.int32),
            np.int64(nd.isensor).astype(np.int32),
        )
        r = nd.rot.T
        node_x[k, :9] = r.reshape(-1)
        node_x[k, 9:] = -r @ nd.pos
        c = csgs[nd.solid]
        lo[k], hi[k] = box_transform(c.lo, c.hi, nd.rot, nd.pos)
    # CSG programs, leaves' parameters and transforms, triangles
    fl: list[float] = []
    ci: list[tuple[int, int, int, int]] = []
    si: list[tuple[int, int]] = []
    tris: list[np.ndarray] = []
    ntri = 0
    for c in csgs:
        si.append((len(ci), len(c.items)))
        for it in c.items:
            if isinstance(it, int):
                ci.append((it, -1, -1, 0))
                continue
            params = list(it.params)
            if it.code == MESH:
                assert it.tris is not None
                params = [float(ntri), float(len(it.tris))]
                tris.append(np.asarray(it.tris, float).reshape(-1, 9))
                ntri += len(it.tris)
            p_off = len(fl)
            fl.extend(params)
            x_off = -1
            if not (np.array_equal(it.rot, np.eye(3)) and not np.any(it.pos)):
                x_off = len(fl)
                fl.extend(list(it.rot.reshape(-1)) + list(it.pos))
            ci.append((it.code, p_off, x_off, it.face))
    tree = B.build(lo, hi)
    parts_i = [
        node_i.reshape(-1),
        np.array(si, np.int32).reshape(-1),
        np.array(ci, np.int32).reshape(-1),
        tree.node.reshape(-1),
        tree.items,
    ]
    off_i = np.cumsum([HEADER] + [len(p) for p in parts_i])
    leaf_f = np.array(fl, float)
    tri_f = np.concatenate(tris).reshape(-1) if tris else np.zeros(0)
    bvh_f = np.concatenate([tree.lo, tree.hi], axis=1).reshape(-1)
    node_box = np.clip(np.concatenate([lo, hi], axis=1), -1e300, 1e300).reshape(-1)
    parts_f = [node_x.reshape(-1), leaf_f, bvh_f, tri_f, node_box]
    off_f = np.cumsum([0] + [len(p) for p in parts_f])
    # leaf parameter and transform offsets are relative to leaf_f: make them absolute
    csg = np.array(ci, np.int32).reshape(-1, 4)
    if len(csg):
        leafs = csg[:, 0] < 16
        csg[leafs, 1] += off_f[1]
        has_x = leafs & (csg[:, 2] >= 0)
        csg[has_x, 2] += off_f[1]
    parts_i[2] = csg.reshape(-1)
    header = np.zeros(HEADER, np.int32)
    header[H_NODES] = n
    header[H_NODE_I] = off_i[0]
    header[H_NODE_F] = off_f[0]
    header[H_SOLIDS] = len(si)
    header[H_SOLID_I] = off_i[1]
    header[H_CSG_I] = off_i[2]
    header[H_NCSG] = len(ci)
    header[H_LEAF_X] = off_f[1]
    header[H_NBVH] = len(tree.node)
    header[H_BVH_I] = off_i[3]
    header[H_BVH_F] = off_f[2]
    header[H_ITEMS] = off_i[4]
    header[H_TRI] = off_f[3]
    header[H_NTRI] = ntri
    header[H_FACE_IDS] = 1 if face_ids else 0
    header[H_DEPTH] = tree.depth
    header[H_NODE_BOX] = off_f[4]
    header[H_FLAT] = int(
        len(tree.node) == 1
        and all(si[nd.solid][1] == 1 and csg[si[nd.solid][0], 0] != MESH for nd in nodes)
    )
    geo_i = np.concatenate([header] + parts_i).astype(np.int32)
    geo_f = np.concatenate(parts_f).astype(np.float64)
    if len(geo_i) >= 2**31 or len(geo_f) >= 2**31:
        raise BadInput("the geometry is too large for 32-bit offsets")
    return Geometry(
        geo_i,
        geo_f,
        node_i,
        lo[0].copy(),
        hi[0].copy(),
        face_ids,
        [nd.label for nd in nodes],
        lo,
        hi,
        csgs,
        node_x,
        tree.depth,
        len(bnds),
    )


def from_boxes(
    half: tuple[float, float, float],
    cmat: int,
    csurf: int,
    objects: list[tuple[str, tuple[float, float, float], tuple[float, float, float], int, int]],
) -> Geometry:
    """A TOML scene's container and objects as a tree: node 0 the container (the world, its
    surface the inner one), node j+1 object j (a skin surface both ways). Sensor ids and
    boundary numbers are the scene format's own: volume*8 + face + 1, volume + 1."""
    csgs: list[Csg] = []
    h = np.array(half, float)
    csgs.append(Csg([Leaf(BOX, list(h))], -h, h))
    nodes = [NodeSpec(0, np.eye(3), np.zeros(3), -1, -1, csurf, cmat, 1, 1, 0, "container")]
    for j, (shape, center, hs, mat, surf) in enumerate(objects):
        hv = np.array(hs, float)
        if shape == "box":
            leaf = Leaf(BOX, list(hv))
        else:
            r = float(hv[0])
            leaf = Leaf(ELLIPSOID, [r, r, r, -1e300, 1e300])
        csgs.append(Csg([leaf], -hv, hv))
        s = (j + 1) * 8 + 1
        nodes.append(
            NodeSpec(
                j + 1,
                np.eye(3),
                np.array(center, float),
                cmat,
                surf,
                surf,
                mat,
                s,
                s,
                j + 1,
                f"objects[{j}]",
            )
        )
    return assemble(csgs, nodes, face_ids=True)
