"""Photon yields of charged tracks, as Geant4 computes them: the numbers a genstep carries.

Why: whoever writes Cerenkov or scintillation gensteps without Geant4 (the mock delivery,
the textbook tests) must fill MeanNumberOfPhotons, BetaInverse, maxSin2 and the component
split exactly as G4Cerenkov and G4Scintillation do, or the photon counts would not be the
ones Geant4 gives for the same track (docs/geant4.md, "Yields").

- Cerenkov (G4Cerenkov::GetAverageNumberOfPhotons): photons per mm =
  369.81 / (eV cm) * z^2 * [dE - CAI * BetaInverse^2] over the photon energies where
  n > BetaInverse, with CAI the trapezoidal integral of 1/n^2 over energy on the
  refractive-index table's nodes (the threshold energy found by linear interpolation).
- Scintillation (G4Scintillation::PostStepDoIt): mean = yield/MeV * visible energy
  (Birks: dE / (1 + kB dE/dx)); N = Gauss(mean, resolution * sqrt(mean)) rounded when the
  mean exceeds 10, else Poisson; component k gets int(y_k / sum(y) * N), the second of two
  the rest.
"""

from __future__ import annotations

import numpy as np

from engine.propagate.scene import HC_EV_NM, WL_GRID

RFACT = 369.81 / 10.0  # photons / (eV mm): G4Cerenkov's 369.81/(eV*cm)


def table(value: float | list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """A scene property as (nm, value) nodes: a table as given, a constant over the grid."""
    if isinstance(value, list):
        tab = np.array(value, dtype=np.float64)
        return tab[:, 0], tab[:, 1]
    return np.array([WL_GRID[0], WL_GRID[-1]]), np.array([float(value), float(value)])


class CerenkovTable:
    """A material's refractive-index nodes with G4Cerenkov's angle integral precomputed."""

    def __init__(self, nm: np.ndarray, n: np.ndarray) -> None:
        self.nm = np.asarray(nm, np.float64)
        self.n = np.asarray(n, np.float64)
        self.e = HC_EV_NM / self.nm[::-1]
        self.r = self.n[::-1]
        self.cai = np.concatenate(
            ([0.0], np.cumsum(np.diff(self.e) * 0.5 * (1 / self.r[:-1] ** 2 + 1 / self.r[1:] ** 2)))
        )
        self.nmin, self.nmax = float(self.r.min()), float(self.r.max())

    def per_mm(self, beta: float, charge: float = 1.0) -> float:
        """Mean Cerenkov photons per mm for a particle of ``beta`` and ``charge`` (e)."""
        if beta <= 0:
            return 0.0
        e, r, cai = self.e, self.r, self.cai
        bi = 1.0 / beta
        if self.nmax < bi:
            return 0.0
        if self.nmin > bi:
            dp, ge = e[-1] - e[0], cai[-1]
        else:
            # G4PhysicsVector::GetEnergy(BetaInverse): where n first reaches it
            j = max(1, min(int(np.argmax(r >= bi)), len(r) - 1))
            pmin = (
                e[j - 1] + (bi - r[j - 1]) * (e[j] - e[j - 1]) / (r[j] - r[j - 1])
                if r[j] != r[j - 1]
                else e[j - 1]
            )
            dp = e[-1] - pmin
            ge = cai[-1] - float(np.interp(pmin, e, cai))
        return RFACT * charge * charge * (dp - ge * bi * bi)

    def fields(self, beta_pre: float, beta_post: float, charge: float = 1.0) -> dict[str, float]:
        """The q4/q5 genstep fields G4Cerenkov computes for a step (mean beta)."""
        beta = 0.5 * (beta_pre + beta_post)
        bi = 1.0 / beta if beta > 0 else float("inf")
        max_cos = bi / self.nmax
        return {
            "BetaInverse": bi,
            "Wmin": float(self.nm[0]),
            "Wmax": float(self.nm[-1]),
            "maxCos": max_cos,
            "maxSin2": (1.0 - max_cos) * (1.0 + max_cos),
            "MeanNumberOfPhotons1": self.per_mm(beta_pre, charge),
            "MeanNumberOfPhotons2": self.per_mm(beta_post, charge),
            "mean_per_mm": self.per_mm(beta, charge),
        }


def cerenkov_per_mm(nm: np.ndarray, n: np.ndarray, beta: float, charge: float = 1.0) -> float:
    """Mean Cerenkov photons per mm for a particle of ``beta`` and ``charge`` (units of e)."""
    return CerenkovTable(nm, n).per_mm(beta, charge)


def cerenkov_fields(
    nm: np.ndarray, n: np.ndarray, beta_pre: float, beta_post: float, charge: float = 1.0
) -> dict[str, float]:
    """The q4/q5 Cerenkov genstep fields G4Cerenkov computes for a step (mean beta)."""
    return CerenkovTable(nm, n).fields(beta_pre, beta_post, charge)


def scintillation_count(mean: float, resolution: float, rng: np.random.Generator) -> int:
    """Photons of one step: Gauss(mean, resolution sqrt(mean)) + 0.5 truncated above a mean
    of 10, else Poisson (G4Scintillation)."""
    if mean > 10.0:
        return max(0, int(rng.normal(mean, resolution * np.sqrt(mean)) + 0.5))
    return int(rng.poisson(mean))


def component_split(total: int, yields: list[float]) -> list[int]:
    """G4Scintillation's split of a step's photons over its time components."""
    s = sum(yields)
    if len(yields) == 1:
        return [total]
    first = int(yields[0] / s * total)
    if len(yields) == 2:
        return [first, total - first]
    return [first, int(yields[1] / s * total), int(yields[2] / s * total)]


def birks_visible(edep: float, step_mm: float, kb: float) -> float:
    """Visible energy of a step under Birks' law (G4EmSaturation, one step): dE/(1 + kB dE/dx)."""
    if kb <= 0 or step_mm <= 0:
        return edep
    return edep / (1.0 + kb * edep / step_mm)
