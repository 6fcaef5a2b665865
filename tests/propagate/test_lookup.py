"""The compiled material lookup (what the step reads for every photon) against its NumPy
form bit for bit: every packaged scene's materials, wavelengths across and beyond the
table (clipped ends, grid points, between them), constant and dispersive tables."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.core.workspace import ASSETS
from engine.propagate.lookup import props_at, props_at_numpy
from engine.propagate.scene import WL_MIN, WL_N, load_scene


@pytest.mark.parametrize("name", ["tboolean-box", "water-tank", "scint-tank", "juno-like"])
def test_props_at_is_the_numpy_form_bit_for_bit(name):
    sa = load_scene(ASSETS / "scenes" / f"{name}.toml").arrays()
    rng = np.random.default_rng(3)
    n = 50_000
    m = rng.integers(0, sa.mat.shape[0], n).astype(np.int32)
    wl = rng.uniform(WL_MIN - 50, WL_MIN + WL_N + 50, n).astype(np.float32)
    grid = np.arange(WL_MIN - 2, WL_MIN + WL_N + 2, dtype=np.float32)
    wl[: grid.size] = grid
    wl[grid.size : 2 * grid.size] = grid + np.float32(0.5)
    for const in (False, True):
        s = dataclasses.replace(sa, const_props=const)
        a = props_at(s, m, wl)
        b = props_at_numpy(s, m, wl)
        assert a.shape == b.shape and a.dtype == b.dtype == np.float32
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
