"""float32 vector helpers on (3, n) arrays (one row per component, contiguous lanes).

Rows rather than (n, 3) keep every operation a contiguous SIMD loop; the helpers mirror the
float3 functions in the CUDA kernel so the two backends do the same arithmetic.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
TWO_PI = np.float32(2.0 * np.pi)


def dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack(
        (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])
    )


def norm(a: np.ndarray) -> np.ndarray:
    return np.sqrt(dot(a, a))


def normalize(a: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return a / norm(a)


def rotate_uz(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """CLHEP Hep3Vector::rotateUz: express local vector v in the frame whose z axis is u."""
    u1, u2, u3 = u
    up = np.sqrt(u1 * u1 + u2 * u2)
    ok = up > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        x = (u1 * u3 * v[0] - u2 * v[1]) / up + u1 * v[2]
        y = (u2 * u3 * v[0] + u1 * v[1]) / up + u2 * v[2]
    z = -up * v[0] + u3 * v[2]
    flip = u3 < 0
    x = np.where(ok, x, np.where(flip, -v[0], v[0]))
    y = np.where(ok, y, v[1])
    z = np.where(ok, z, np.where(flip, -v[2], v[2]))
    return np.stack((x, y, z)).astype(F32, copy=False)
