"""Material-table lookups shared by photon generation and stepping (NumPy side).

Why a module of its own: the Cerenkov generator needs the refractive index at a sampled
wavelength and the scintillation generator the emission inverse CDF, exactly as the
stepping loop reads them, and generation must not import the stepping backend. The CUDA
kernel's ``lookup`` and ``icdf_sample`` do the same arithmetic in the same order
(``assets/kernels/propagate.cu``), so both backends read identical numbers.

``props_at``, read every step for every photon, is compiled by Numba (``_props_nb``: the
same float32 operations in the same order, no fused multiply-add, one pass writing
contiguous rows); ``props_at_numpy`` is the NumPy form it is tested against bit for bit.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from engine.propagate.scene import ICDF_N, N_PROP, WL_MIN, WL_N, WL_STEP, SceneArrays

_F = np.float32
N_INDEX, ABS_LENGTH, SCAT_LENGTH, REEMIT_PROB, GROUP_VEL = range(N_PROP)
_WL_MIN, _WL_STEP, _X_HI, _ZERO = _F(WL_MIN), _F(WL_STEP), _F(WL_N - 1), _F(0)


@njit(cache=True, error_model="numpy")
def _props_nb(tab, m, wl, const, out):
    """props_at_numpy per photon: float32 throughout (every constant float32)."""
    for i in range(wl.shape[0]):
        row = np.int64(m[i]) * WL_N
        if const:
            for k in range(tab.shape[1]):
                out[k, i] = tab[row, k]
            continue
        x = (wl[i] - _WL_MIN) / _WL_STEP
        if x < _ZERO:
            x = _ZERO
        elif x > _X_HI:
            x = _X_HI
        i0 = np.int32(x)
        if i0 > WL_N - 2:
            i0 = WL_N - 2
        f = x - np.float32(i0)
        r0 = row + i0
        for k in range(tab.shape[1]):
            a = tab[r0, k]
            b = tab[r0 + 1, k]
            out[k, i] = a + f * (b - a)


def props_at(sa: SceneArrays, m: np.ndarray, wl: np.ndarray) -> np.ndarray:
    """Every material property at each photon's wavelength, shape (N_PROP, n), C-contiguous:
    ``props_at_numpy`` compiled."""
    out = np.empty((N_PROP, wl.shape[0]), _F)
    _props_nb(
        sa.mat_t.reshape(-1, N_PROP),
        np.ascontiguousarray(m, np.int32),
        np.ascontiguousarray(wl, _F),
        bool(sa.const_props),
        out,
    )
    return out


def props_at_numpy(sa: SceneArrays, m: np.ndarray, wl: np.ndarray) -> np.ndarray:
    """Every material property at each photon's wavelength, shape (N_PROP, n): linear
    interpolation on the 1 nm grid written as a + f*(b - a), so constant tables return
    exactly a (as the kernel's ``lookup`` does). One gather of a row per end point."""
    tab = sa.mat_t.reshape(-1, N_PROP)
    row = m.astype(np.int32) * np.int32(WL_N)
    if sa.const_props:
        return np.take(tab, row, axis=0).T
    x = (wl - _F(WL_MIN)) / _F(WL_STEP)
    x = np.clip(x, _F(0), _F(WL_N - 1))
    i0 = np.minimum(x.astype(np.int32), WL_N - 2)
    f = x - i0.astype(_F)
    a = np.take(tab, row + i0, axis=0)
    b = np.take(tab, row + i0 + 1, axis=0)
    return (a + f[:, None] * (b - a)).T


def index_at(sa: SceneArrays, m: np.ndarray, wl: np.ndarray) -> np.ndarray:
    """Refractive index only: the same interpolation as ``props_at``, one row gathered."""
    flat = sa.mat.reshape(-1)
    row = m.astype(np.int64) * (N_PROP * WL_N) + N_INDEX * WL_N
    if sa.const_props:
        return flat[row]
    x = (wl - _F(WL_MIN)) / _F(WL_STEP)
    x = np.clip(x, _F(0), _F(WL_N - 1))
    i0 = np.minimum(x.astype(np.int32), WL_N - 2)
    f = x - i0.astype(_F)
    a = flat[row + i0]
    b = flat[row + i0 + 1]
    return a + f * (b - a)


def icdf_sample(sa: SceneArrays, m: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Emission wavelength for uniforms ``u`` from material ``m``'s inverse CDF, linear
    between its ICDF_N samples at k/(ICDF_N-1); -1 where the material has no spectrum."""
    x = u * _F(ICDF_N - 1)
    i0 = np.minimum(x.astype(np.int32), ICDF_N - 2)
    f = x - i0.astype(_F)
    flat = sa.icdf.reshape(-1)
    base = m.astype(np.int64) * ICDF_N + i0
    a = flat[base]
    b = flat[base + 1]
    return (a + f * (b - a)).astype(_F, copy=False)


def surface_at(sa: SceneArrays, s: np.ndarray, wl: np.ndarray) -> np.ndarray:
    """(n, 4) detect, absorb, specular, diffuse of surfaces ``s`` at each photon's
    wavelength: the interpolation of ``props_at`` (the kernel's ``surface_lookup``)."""
    tab = sa.surf_t.reshape(-1, 4)
    row = s.astype(np.int32) * np.int32(WL_N)
    if sa.const_surf:
        return np.take(tab, row, axis=0)
    x = (wl - _F(WL_MIN)) / _F(WL_STEP)
    x = np.clip(x, _F(0), _F(WL_N - 1))
    i0 = np.minimum(x.astype(np.int32), WL_N - 2)
    f = x - i0.astype(_F)
    a = np.take(tab, row + i0, axis=0)
    b = np.take(tab, row + i0 + 1, axis=0)
    return a + f[:, None] * (b - a)
