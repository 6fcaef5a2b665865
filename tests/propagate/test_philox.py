"""Philox4x32-10 against the Random123 known-answer vectors, the uniform mapping, and the
compiled uniforms against the NumPy rounds."""

import numpy as np

from engine.propagate import philox as P
from engine.propagate.philox import philox4x32, to_uniform, uniforms


def _one(c, k):
    a = [np.array([x], np.uint64) for x in c]
    return [int(v[0]) for v in philox4x32(*a, *k)]


def test_known_answers():
    # kat_vectors from Random123 (philox4x32 10 rounds)
    assert _one((0, 0, 0, 0), (0, 0)) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    f = 0xFFFFFFFF
    assert _one((f, f, f, f), (f, f)) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert _one((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0)) == [
        0xD16CFE09,
        0x94FDCCEB,
        0x5001E420,
        0x24126EA1,
    ]


def test_uniforms_open_interval_and_exact_float32():
    x = np.array([0, 0x1FF, 0x200, 0xFFFFFFFF], np.uint64)
    u = to_uniform(x)
    assert u.dtype == np.float32
    assert u[0] == u[1] == np.float32(2**-24) and u[2] == np.float32(3 * 2**-24)
    assert u[-1] == np.float32(1 - 2**-24)
    assert np.all((u > 0) & (u < 1))


def test_keyed_by_photon_block_event_seed():
    idx = np.arange(1000, dtype=np.uint64)
    a = uniforms(idx, 3, seed=7, event=0)
    assert np.array_equal(a, uniforms(idx, 3, seed=7, event=0))  # pure function, no state
    assert np.array_equal(a[:, 500:], uniforms(idx[500:], 3, seed=7, event=0))  # per photon
    for other in (uniforms(idx, 4, 7, 0), uniforms(idx, 3, 8, 0), uniforms(idx, 3, 7, 1)):
        assert not np.any(a == other)  # different counters/keys: unrelated streams
    # uniform: mean 1/2 and variance 1/12 within 4 sigma over 4000 draws
    flat = a.ravel().astype(np.float64)
    assert abs(flat.mean() - 0.5) < 4 * np.sqrt(1 / 12 / flat.size)
    assert abs(flat.var() - 1 / 12) < 4 * np.sqrt(1 / 180 / flat.size)


def test_compiled_uniforms_are_the_numpy_ones_bit_for_bit():
    """The Numba form of uniforms (the one the backend calls) against the NumPy rounds, for
    random and extreme photons, blocks, seeds and events, with array and scalar blocks."""
    rng = np.random.default_rng(11)
    n = 5000
    photon = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)
    photon[:4] = [0, 1, 2**32 - 1, 2**64 - 1]
    block = rng.integers(0, 2**32 - 1, n, dtype=np.uint64, endpoint=True).astype(np.uint32)
    for seed, event in ((0, 0), (2**64 - 1, 2**32 - 1), (123456789012345, 77)):
        for blk in (block, 7, np.uint32(2**32 - 1)):
            a = P.uniforms(photon, blk, seed, event)
            b = P.uniforms_numpy(photon, blk, seed, event)
            assert a.dtype == np.float32 and a.shape == (4, n)
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
