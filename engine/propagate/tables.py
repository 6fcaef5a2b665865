"""The wavelength grid and the property-table arithmetic every scene shares, TOML or GDML.

Why a module below ``scene`` and ``geometry``: both turn Geant4-style property vectors
(values at photon energies, interpolated linearly in energy) into rows on Opticks' 1 nm grid,
derive the group velocity as Geant4's ``CalculateGROUPVEL`` does and invert emission spectra
as G4Scintillation does; neither may import the other (docs/propagation.md, "Scene TOML").
"""

from __future__ import annotations

import math

import numpy as np

# Property tables are resampled on Opticks' fine wavelength domain: 60..820 nm, 1 nm steps.
WL_MIN = 60.0
WL_STEP = 1.0
WL_N = 761
WL_GRID = (WL_MIN + WL_STEP * np.arange(WL_N)).astype(np.float64)
ICDF_N = 4096  # emission inverse-CDF samples (Opticks' scintillation texture width), interpolated
PROPS = (
    "refractive_index",
    "absorption_length",
    "scattering_length",
    "reemission_prob",
    "group_velocity",
)
N_PROP = len(PROPS)  # rows of the material table; the kernel gets it as -DN_PROP
HC_EV_NM = (
    1239.84198433  # h c in eV nm (CODATA 2018, exact SI constants; Geant4's h_Planck*c_light)
)
C_LIGHT_MM_NS = 299.792458
NO_INTERACTION = 1e30  # mm: absorption/scattering length meaning "never"


def energy_resample(nm: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Values on WL_GRID, linear in photon energy between the nodes and the edge values
    beyond them: what G4PhysicsVector::Value returns at each grid wavelength's energy."""
    return np.interp(HC_EV_NM / WL_GRID, HC_EV_NM / nm[::-1], values[::-1])


def group_velocity_nodes(nm: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Geant4's GROUPVEL table (G4MaterialPropertiesTable::CalculateGROUPVEL) from a
    refractive-index table: (photon energies in eV, ascending; group velocities in mm/ns).

    v_g = c / (n + dn/d(ln E)), the finite difference of neighbouring nodes, placed at the
    first node, at the midpoints of the node pairs (Geant4 skips the last pair's midpoint)
    and at the last node; anomalous dispersion (v_g < 0 or above c/n) falls back to c/n."""
    c = C_LIGHT_MM_NS
    e = HC_EV_NM / nm[::-1]
    r = n[::-1]
    if len(e) < 2:
        return e[:1], np.array([c / r[0]])

    def vg(n_at: float, n0: float, n1: float, e0: float, e1: float) -> float:
        v = c / (n_at + (n1 - n0) / math.log(e1 / e0))
        return c / n_at if (v < 0 or v > c / n_at) else v

    e0, n0, e1, n1 = e[0], r[0], e[1], r[1]
    out_e, out_v = [e0], [vg(n0, n0, n1, e0, e1)]
    for i in range(2, len(e)):
        out_e.append(0.5 * (e0 + e1))
        out_v.append(vg(0.5 * (n0 + n1), n0, n1, e0, e1))
        e0, n0, e1, n1 = e1, n1, e[i], r[i]
    out_e.append(e1)
    out_v.append(vg(n1, n0, n1, e0, e1))
    return np.array(out_e), np.array(out_v)


def emission_icdf(nm: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Emission wavelengths at u = k/(ICDF_N-1) for a spectrum whose weights are per unit
    photon energy (Geant4's SCINTILLATIONCOMPONENT convention): the trapezoidal integral
    over energy, inverted linearly within each node interval, as G4Scintillation's
    ``GetEnergy(u * CIImax)`` and Opticks' scintillation texture (U4ScintCommon) do."""
    e = HC_EV_NM / nm[::-1]
    w = weight[::-1]
    cum = np.concatenate(([0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(e))))
    v = np.arange(ICDF_N) / (ICDF_N - 1) * cum[-1]
    j = np.clip(np.searchsorted(cum, v, side="left"), 1, len(e) - 1)
    lo, hi = j - 1, j
    den = cum[hi] - cum[lo]
    with np.errstate(divide="ignore", invalid="ignore"):
        es = np.where(den > 0, e[lo] + (v - cum[lo]) * (e[hi] - e[lo]) / den, e[lo])
    return HC_EV_NM / es
