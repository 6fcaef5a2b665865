"""A bounding volume hierarchy over the placed volumes, as flat arrays (docs/propagation.md,
"Acceleration").

Why this shape: the CUDA kernel and the CPU tracer walk it with a small stack, so it is two
arrays and no pointers: ``lo``/``hi`` (B,3) float64 boxes and ``node`` (B,2) int32 (start,
count); count 0 is an inner node whose children are start and start+1, count > 0 a leaf
holding items[start:start+count]. Built top-down, level by level: every range of
volumes is sorted along the longest axis of its box centres and split at the median until
at most ``LEAF`` remain (one lexsort per level for all ranges), the boxes then combined
bottom up; every level is a few vectorised NumPy calls, so
building over hundreds of thousands of volumes takes well under a second. Depth is
ceil(log2(N / LEAF)), and a ray visits about that many boxes on its way to a volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEAF = 4


@dataclass
class Bvh:
    lo: np.ndarray  # (B,3) float64
    hi: np.ndarray
    node: np.ndarray  # (B,2) int32
    items: np.ndarray  # (N,) int32
    depth: int


def _morton(c: np.ndarray) -> np.ndarray:
    """30-bit Morton codes of points in a box (10 bits per axis)."""
    lo = c.min(axis=0)
    ext = np.maximum(c.max(axis=0) - lo, 1e-300)
    q = np.clip(((c - lo) / ext * 1023.0).astype(np.int64), 0, 1023).astype(np.uint64)

    def spread(v: np.ndarray) -> np.ndarray:
        v = (v | (v << np.uint64(16))) & np.uint64(0x030000FF)
        v = (v | (v << np.uint64(8))) & np.uint64(0x0300F00F)
        v = (v | (v << np.uint64(4))) & np.uint64(0x030C30C3)
        v = (v | (v << np.uint64(2))) & np.uint64(0x09249249)
        return v

    return (spread(q[:, 0]) << np.uint64(2)) | (spread(q[:, 1]) << np.uint64(1)) | spread(q[:, 2])


def build(lo: np.ndarray, hi: np.ndarray) -> Bvh:
    """Hierarchy over N boxes (N >= 1); unbounded boxes are clamped to +-1e300."""
    lo = np.clip(np.asarray(lo, np.float64), -1e300, 1e300)
    hi = np.clip(np.asarray(hi, np.float64), -1e300, 1e300)
    n = len(lo)
    cen = 0.5 * (lo + hi)
    order = np.argsort(_morton(cen), kind="stable").astype(np.int64)
    # level by level: ranges (start, count) in the sorted order; children stored consecutively
    starts = [np.array([0], np.int64)]
    counts = [np.array([n], np.int64)]
    levels_first = [0]
    total = 1
    while True:
        s, c = starts[-1], counts[-1]
        split = c > LEAF
        if not split.any():
            break
        # sort each range that splits along the longest axis of its centres (median split)
        ss, sc = s[split], c[split]
        rid = np.repeat(np.arange(len(ss)), sc)
        pos = np.repeat(ss, sc) + (np.arange(int(sc.sum())) - np.repeat(np.cumsum(sc) - sc, sc))
        cc = cen[order[pos]]
        off = np.cumsum(sc) - sc
        ext = np.maximum.reduceat(cc, off, axis=0) - np.minimum.reduceat(cc, off, axis=0)
        axis = np.argmax(ext, axis=1)
        key = cc[np.arange(len(pos)), axis[rid]]
        order[pos] = order[pos[np.lexsort((key, rid))]]
        left = (c[split] + 1) // 2
        ns = np.stack([s[split], s[split] + left], axis=1).reshape(-1)
        nc = np.stack([left, c[split] - left], axis=1).reshape(-1)
        levels_first.append(total)
        total += len(ns)
        starts.append(ns)
        counts.append(nc)
    node = np.zeros((total, 2), np.int32)
    blo = np.empty((total, 3))
    bhi = np.empty((total, 3))
    slo, shi = lo[order], hi[order]
    for lev in range(len(starts) - 1, -1, -1):
        first = levels_first[lev]
        s, c = starts[lev], counts[lev]
        idx = np.arange(first, first + len(s))
        split = c > LEAF
        leaf = ~split
        node[idx[leaf], 0] = s[leaf]
        node[idx[leaf], 1] = c[leaf]
        if leaf.any():
            ls, lc = s[leaf], c[leaf]
            off = np.cumsum(lc) - lc
            rows = np.repeat(ls, lc) + (np.arange(int(lc.sum())) - np.repeat(off, lc))
            blo[idx[leaf]] = np.minimum.reduceat(slo[rows], off, axis=0)
            bhi[idx[leaf]] = np.maximum.reduceat(shi[rows], off, axis=0)
        if split.any():
            child = levels_first[lev + 1] + 2 * np.arange(int(split.sum()))
            node[idx[split], 0] = child
            node[idx[split], 1] = 0
            blo[idx[split]] = np.minimum(blo[child], blo[child + 1])
            bhi[idx[split]] = np.maximum(bhi[child], bhi[child + 1])
    return Bvh(blo, bhi, node, order.astype(np.int32), len(starts))
