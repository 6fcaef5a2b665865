"""What every propagation backend is given and gives back, and the constants they share.

The NumPy backend (``numpy_backend``), the GPU host side (``gpu_host``, for ``cuda_backend``
and ``cupy_backend``), the process pool and MPI drivers (``backends``) and the event writer
all speak these types, so none of them imports another backend to learn them:

- ``Params``: one event's settings (seed, event number, bounce limit, hit mask, mode, the
  step-record compression domain);
- ``ChunkResult``: the photons of one chunk or GPU launch, in photon order;
- ``slice_order``: where each hit of a chunk lies in it, from the photon index it stores;
- the physical and stepping constants. ``EPS`` and ``MAX_TRIES`` are mirrored by ``#define``
  in ``assets/kernels/propagate.cu`` and must be changed in both places (the generators'
  block counts reach the kernel as ``-D`` options, ``kernel.compile_options``). ``C_LIGHT``
  only bounds velocities and time domains here: photons move at the scene's group velocity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

C_LIGHT = np.float32(299.792458)  # mm/ns
EPS = np.float32(1e-3)  # mm: minimum distance to a boundary, so a photon never re-hits its own
MAX_TRIES = 1024  # rejection-sampling tries (Rayleigh, Lambertian) before giving up
TRIES_PER_PASS = 8  # NumPy only: tries drawn at once for the photons a first try left over
SMALL_PASS = 32768  # NumPy only: below this many draws a pass tries TRIES_PER_PASS at once


def tries_per_pass(done: int, todo: int, limit: int = MAX_TRIES) -> int:
    """Tries per pass of a NumPy rejection loop (philox.try_uniforms): many photons try once
    first (most accept), a few (or the ones left) TRIES_PER_PASS at a time, where NumPy's
    per-call cost dominates; never past ``limit`` tries in all. The kernel tries one at a
    time; the numbers, the accepted try and the blocks used are the same."""
    t = 1 if done == 0 and todo * TRIES_PER_PASS > SMALL_PASS else TRIES_PER_PASS
    return min(t, limit - done)


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


def slice_order(hits: np.ndarray, start: int) -> np.ndarray:
    """Position of each hit in its slice from the stored low 32 bits of the photon index,
    correct even when a slice straddles a multiple of 2**32 photons."""
    low = hits.view(np.uint32)[:, 3, 2]
    return low - np.uint32(start & 0xFFFFFFFF)  # uint32 arithmetic wraps around
