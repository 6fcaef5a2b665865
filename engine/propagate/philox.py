"""Philox4x32-10 counter-based RNG, vectorized in NumPy (Salmon et al., SC11 / Random123).

Counter-based means a random number is a pure function of (key, counter): no state files,
no ``rngmax``, any photon's draws can be recomputed anywhere. The CUDA kernel
(``assets/kernels/propagate.cu``) implements the same function, so both backends draw
identical numbers for the same photon.

Keying used by the engine (the same in both backends)::

    key     = (seed & 0xffffffff, seed >> 32)
    counter = (photon & 0xffffffff, photon >> 32, block, event)

Each call yields four uint32 "draws"; draw number d of a photon is lane d % 4 of block
d // 4. The engine hands out whole blocks per decision (see ``numpy_backend``).

``uniforms`` runs the same rounds compiled by Numba (``_uniforms_nb``: one pass per photon
instead of ~50 NumPy calls over the whole array, about 10x faster); ``philox4x32`` and
``uniforms_numpy`` are the NumPy form it is tested against bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

M0 = 0xD2511F53
M1 = 0xCD9E8D57
W0 = 0x9E3779B9
W1 = 0xBB67AE85
MASK32 = 0xFFFFFFFF
ROUNDS = 10
# uniforms are ((x >> 9) + 0.5) * 2**-23: 23 bits plus a half fit float32's 24-bit mantissa
# exactly, so u lies in [2**-24, 1 - 2**-24], never 0 or 1, and log(u) is finite. (With 24
# bits, (2**24 - 1) + 0.5 rounds to 2**24 and u would reach 1.) CUDA does the same.
_U_SCALE = np.float32(2.0**-23)
_HALF = np.float32(0.5)


def philox4x32(
    c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, c3: np.ndarray, k0: int, k1: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Philox4x32-10 of uint64 arrays holding 32-bit values; returns four uint64 arrays.

    uint64 is used so that the 32x32->64 bit product is one NumPy multiply.
    """
    # fresh copies, then every round in place: allocation dominates otherwise
    c0 = np.array(c0, dtype=np.uint64)
    c1 = np.array(c1, dtype=np.uint64)
    c2 = np.array(c2, dtype=np.uint64)
    c3 = np.array(c3, dtype=np.uint64)
    p0 = np.empty_like(c0)
    p1 = np.empty_like(c0)
    m0, m1, mask, s32 = np.uint64(M0), np.uint64(M1), np.uint64(MASK32), np.uint64(32)
    k0 &= MASK32
    k1 &= MASK32
    for r in range(ROUNDS):
        if r:
            k0 = (k0 + W0) & MASK32
            k1 = (k1 + W1) & MASK32
        np.multiply(c0, m0, out=p0)
        np.multiply(c2, m1, out=p1)
        # (c0, c1, c2, c3) <- (hi(p1) ^ c1 ^ k0, lo(p1), hi(p0) ^ c3 ^ k1, lo(p0))
        np.right_shift(p1, s32, out=c0)
        np.bitwise_xor(c0, c1, out=c0)
        np.bitwise_xor(c0, np.uint64(k0), out=c0)
        np.bitwise_and(p1, mask, out=c1)
        np.right_shift(p0, s32, out=c2)
        np.bitwise_xor(c2, c3, out=c2)
        np.bitwise_xor(c2, np.uint64(k1), out=c2)
        np.bitwise_and(p0, mask, out=c3)
    return c0, c1, c2, c3


def to_uniform(x: np.ndarray) -> np.ndarray:
    """uint32 draw -> float32 uniform in (0, 1), bit-identical to the CUDA ``u01``."""
    return ((x >> np.uint64(9)).astype(np.float32) + _HALF) * _U_SCALE


_M0, _M1, _W0, _W1 = np.uint64(M0), np.uint64(M1), np.uint64(W0), np.uint64(W1)
_MASK, _S32, _S9 = np.uint64(MASK32), np.uint64(32), np.uint64(9)


@njit(cache=True, error_model="numpy")
def _uniforms_nb(photon, block, ev, k0, k1, out):
    """philox4x32 and to_uniform of every photon's counter, compiled: uint64 throughout as
    in the NumPy form (every constant typed, so no mixed-sign promotion to float)."""
    half = np.float32(0.5)
    scale = np.float32(2.0**-23)
    for i in range(photon.shape[0]):
        p = photon[i]
        c0 = p & _MASK
        c1 = p >> _S32
        c2 = np.uint64(block[i]) & _MASK
        c3 = ev
        a0 = k0
        a1 = k1
        for r in range(ROUNDS):
            if r:
                a0 = (a0 + _W0) & _MASK
                a1 = (a1 + _W1) & _MASK
            p0 = c0 * _M0
            p1 = c2 * _M1
            c0 = (p1 >> _S32) ^ c1 ^ a0
            c1 = p1 & _MASK
            c2 = (p0 >> _S32) ^ c3 ^ a1
            c3 = p0 & _MASK
        out[0, i] = (np.float32(c0 >> _S9) + half) * scale
        out[1, i] = (np.float32(c1 >> _S9) + half) * scale
        out[2, i] = (np.float32(c2 >> _S9) + half) * scale
        out[3, i] = (np.float32(c3 >> _S9) + half) * scale


def uniforms(photon: np.ndarray, block: np.ndarray | int, seed: int, event: int) -> np.ndarray:
    """Four float32 uniforms per photon for its draw block: array of shape (4, n)."""
    photon = np.ascontiguousarray(photon, dtype=np.uint64)
    n = photon.shape[0]
    blk = np.broadcast_to(np.asarray(block, dtype=np.uint64), (n,))
    out = np.empty((4, n), dtype=np.float32)
    _uniforms_nb(
        photon,
        blk,
        np.uint64(event & MASK32),
        np.uint64(seed & MASK32),
        np.uint64((seed >> 32) & MASK32),
        out,
    )
    return out


def uniforms_numpy(
    photon: np.ndarray, block: np.ndarray | int, seed: int, event: int
) -> np.ndarray:
    """``uniforms`` in NumPy (the reference of the compiled one)."""
    photon = np.asarray(photon, dtype=np.uint64)
    n = photon.shape[0]
    blk = np.broadcast_to(np.asarray(block, dtype=np.uint64), (n,))
    ev = np.full(n, event & MASK32, dtype=np.uint64)
    x = philox4x32(
        photon & np.uint64(MASK32),
        photon >> np.uint64(32),
        blk,
        ev,
        seed & MASK32,
        (seed >> 32) & MASK32,
    )
    out = np.empty((4, n), dtype=np.float32)
    for i in range(4):
        out[i] = to_uniform(x[i])
    return out


def try_uniforms(
    photon: np.ndarray, block: np.ndarray, tries: int, blocks_per_try: int, seed: int, event: int
) -> np.ndarray:
    """Uniforms of ``tries`` consecutive rejection tries of ``blocks_per_try`` blocks each,
    starting at each photon's ``block``: shape (tries, blocks_per_try, 4, n), in one Philox
    call. Rejection loops draw several tries per pass with it: a photon's numbers depend
    only on its counter, so computing tries it will not need changes nothing, and the
    loops pay the per-call cost of NumPy once per pass instead of once per try."""
    photon = np.asarray(photon, dtype=np.uint64)
    n = photon.shape[0]
    k = tries * blocks_per_try
    if k == 1:
        return uniforms(photon, block, seed, event)[None, None]
    blocks = (
        np.asarray(block, dtype=np.uint64)[None, :] + np.arange(k, dtype=np.uint64)[:, None]
    ).ravel()
    u = uniforms(np.tile(photon, k), blocks, seed, event)
    return u.reshape(4, tries, blocks_per_try, n).transpose(1, 2, 0, 3)


def first_accepted(ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For (tries, n) acceptance flags: which photons accepted some try, and the first one."""
    return np.asarray(ok.any(axis=0)), np.asarray(ok.argmax(axis=0))
