"""Photon generation from Cerenkov and scintillation gensteps, and the group velocity,
against textbook formulas (not against the engine itself): cos(theta) = 1/(n beta), the
Cerenkov yield and spectrum, the linear yield along a step, isotropic scintillation with an
exponential decay per component, the emission spectrum as Geant4 integrates it, and
v_g = c / (n - lambda dn/dlambda). Statistical checks within 4 sigma (``check``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.core.workspace import SCENES
from engine.mock.gensteps import cerenkov_tracks, scintillation_tracks
from engine.propagate import flags as F
from engine.propagate import gensteps as G
from engine.propagate.generate import generate, genstep_of
from engine.propagate.generate.kinds import CERENKOV, SCINTILLATION
from engine.propagate.lookup import index_at
from engine.propagate.numpy_backend import propagate_chunk
from engine.propagate.params import Params
from engine.propagate.scene import (
    C_LIGHT_MM_NS,
    HC_EV_NM,
    WL_GRID,
    gensteps,
    group_velocity_nodes,
    load_scene,
)
from engine.propagate.yields import CerenkovTable, cerenkov_per_mm, table
from tests.propagate.conftest import base_scene
from tests.propagate.test_physics import _slab_doc, check

N = 200_000
WATER = SCENES / "water-tank.toml"
SCINT = SCENES / "scint-tank.toml"


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def cerenkov_genstep(
    scene,
    beta: float,
    photons: int,
    length: float = 10.0,
    direction=(0.3, -0.4, 0.8),
    mnp: tuple[float, float] | None = None,
    v: tuple[float, float] | None = None,
) -> np.ndarray:
    """One Cerenkov genstep in the container material, fields as G4Cerenkov computes them."""
    tab = CerenkovTable(*table(scene.materials[0].physics["tables"]["refractive_index"]))
    f = tab.fields(beta, beta)
    d = _unit(direction)
    g = np.zeros((1, 6, 4), np.float32)
    g.view(np.int32)[0, 0] = (CERENKOV, 1, 0, photons)
    g[0, 1] = (10.0, -20.0, 30.0, 2.0)
    g[0, 2] = (*(d * length), length)
    pre, post = v or (beta * C_LIGHT_MM_NS, beta * C_LIGHT_MM_NS)
    g[0, 3] = (0.0, -1.0, 1.0, pre)
    g.view(np.int32)[0, 3, 0] = 13
    m1, m2 = mnp or (f["MeanNumberOfPhotons1"], f["MeanNumberOfPhotons2"])
    g[0, 4] = (f["BetaInverse"], f["Wmin"], f["Wmax"], f["maxCos"])
    g[0, 5] = (f["maxSin2"], m1, m2, post)
    # far more photons than one step's Poisson mean, for statistics in one genstep: the
    # file checks would call that absurd, so it goes to the generator directly
    return g


def scint_genstep(
    scene,
    photons: int,
    tau: float,
    charge: float = -1.0,
    component: int = 0,
    length: float = 2.0,
    velocity: float = 150.0,
) -> np.ndarray:
    g = np.zeros((1, 6, 4), np.float32)
    g.view(np.int32)[0, 0] = (SCINTILLATION, 1, 0, photons)
    g[0, 1] = (5.0, 6.0, -7.0, 1.5)
    g[0, 2] = (0.0, length, 0.0, length)
    g[0, 3] = (0.0, charge, 1.0, velocity)
    g.view(np.int32)[0, 3, 0] = 11
    g.view(np.int32)[0, 4, 0] = component
    g[0, 5, 0] = tau
    return G.check(g, scene, "test").array


def _gen(scene, gs: np.ndarray, seed: int = 3) -> dict[str, np.ndarray]:
    n = int(gs.view(np.int32)[:, 0, 3].sum())
    return generate(gs, np.arange(n, dtype=np.uint64), seed, 0, scene.arrays())


def _chi2(name: str, counts: np.ndarray, expected: np.ndarray) -> None:
    keep = expected > 0
    chi2 = float(np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep]))
    ndf = int(keep.sum()) - 1
    check(f"{name} chi2 (ndf {ndf})", chi2, ndf, math.sqrt(2 * ndf))


# ----------------------------------------------------------------------------- Cerenkov


@pytest.mark.parametrize("beta", [0.999, 0.8])
def test_cerenkov_cone_angle_is_one_over_n_beta(beta):
    scene = load_scene(WATER)
    gs = cerenkov_genstep(scene, beta, N)
    ph = _gen(scene, gs, seed=int(beta * 1000))
    d = _unit(gs[0, 2, :3])
    cos = ph["dir"].T.astype(np.float64) @ d
    n_table = index_at(scene.arrays(), np.zeros(N, np.int32), ph["wl"]).astype(np.float64)
    assert np.max(np.abs(cos - 1.0 / (beta * n_table))) < 5e-6
    # and against the raw table, read as Geant4 reads it (linear in photon energy)
    nm, n = table(scene.materials[0].physics["tables"]["refractive_index"])
    e = HC_EV_NM / ph["wl"].astype(np.float64)
    n_g4 = np.interp(e, HC_EV_NM / nm[::-1], n[::-1])
    assert np.max(np.abs(cos - 1.0 / (beta * n_g4))) < 5e-5
    # azimuth uniform about the step direction, polarization the theta-hat vector
    ax = _unit(np.cross(d, [1.0, 0.0, 0.0]))
    ay = np.cross(d, ax)
    phi = np.arctan2(ph["dir"].T @ ay, ph["dir"].T @ ax)
    check(f"cerenkov <cos phi> beta {beta}", float(np.cos(phi).mean()), 0.0, math.sqrt(0.5 / N))
    pol = ph["pol"].T.astype(np.float64)
    assert np.allclose(np.sum(pol * ph["dir"].T, axis=1), 0, atol=2e-6)
    assert np.allclose(np.linalg.norm(pol, axis=1), 1, atol=2e-6)
    plane_normal = np.cross(np.tile(d, (N, 1)), ph["dir"].T)  # of the step and the photon
    assert np.allclose(np.einsum("ij,ij->i", pol, plane_normal), 0, atol=2e-6)
    assert np.all(pol @ d <= 1e-6)  # theta-hat points away from the step direction


def test_cerenkov_spectrum_is_flat_in_energy_times_sin2():
    """dN/dE is proportional to sin^2(theta) = 1 - 1/(beta n(E))^2 (Frank-Tamm)."""
    scene = load_scene(WATER)
    beta = 0.76  # near threshold, where sin^2 varies strongly across the spectrum
    gs = cerenkov_genstep(scene, beta, N)
    ph = _gen(scene, gs, seed=5)
    e = HC_EV_NM / ph["wl"].astype(np.float64)
    nm, n = table(scene.materials[0].physics["tables"]["refractive_index"])
    edges = np.linspace(HC_EV_NM / nm[-1], HC_EV_NM / nm[0], 21)
    fine = np.linspace(edges[0], edges[-1], 20001)
    dens = np.clip(1 - 1 / (beta * np.interp(fine, HC_EV_NM / nm[::-1], n[::-1])) ** 2, 0, None)
    cdf = np.concatenate(([0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(fine))))
    expected = np.diff(np.interp(edges, fine, cdf)) / cdf[-1] * N
    counts, _ = np.histogram(e, edges)
    _chi2("cerenkov spectrum dN/dE ~ sin^2 theta", counts, expected)


def test_cerenkov_yield_formula_and_track_counts():
    # constant n: Frank-Tamm in closed form, 369.81 / (eV cm) z^2 (1 - 1/(beta n)^2) dE
    nm, n = np.array([200.0, 800.0]), np.array([1.33, 1.33])
    for beta, z in ((0.99, 1.0), (0.9, 2.0)):
        closed = 36.981 * z * z * (1 - 1 / (beta * 1.33) ** 2) * (HC_EV_NM / 200 - HC_EV_NM / 800)
        assert cerenkov_per_mm(nm, n, beta, z) == pytest.approx(closed, rel=1e-12)
    assert cerenkov_per_mm(nm, n, 0.7) == 0.0  # below threshold (1/1.33 = 0.752)
    # the mock muons' counts are Poisson draws of that mean per step
    scene = load_scene(WATER)
    gs = cerenkov_tracks(scene, 300_000, seed=2)
    mean = float(np.sum(0.5 * (gs[:, 5, 1].astype(np.float64) + gs[:, 5, 2]) * gs[:, 2, 3]))
    got = int(gs.view(np.int32)[:, 0, 3].astype(np.int64).sum())
    check("cerenkov photons of the mock muons vs the yield", got, mean, math.sqrt(mean))


def test_cerenkov_position_and_time_along_the_step():
    """Linear yield from MNP1 to MNP2: density ~ MNP1 - f (MNP1 - MNP2); time from the
    mid velocity t0 + f L / (v_pre + f (v_post - v_pre) / 2)."""
    scene = load_scene(WATER)
    m1, m2, length = 30.0, 6.0, 10.0
    gs = cerenkov_genstep(scene, 0.95, N, length=length, mnp=(m1, m2), v=(290.0, 250.0))
    ph = _gen(scene, gs, seed=7)
    x0, dp = gs[0, 1, :3].astype(np.float64), gs[0, 2, :3].astype(np.float64)
    f = (ph["pos"].T - x0) @ dp / (dp @ dp)
    assert np.allclose(ph["pos"].T, x0 + f[:, None] * dp, atol=1e-3)
    k = m2 - m1
    norm = m1 + k / 2
    mean = (m1 / 2 + k / 3) / norm
    var = (m1 / 3 + k / 4) / norm - mean * mean
    check("cerenkov fraction along the step", float(f.mean()), mean, math.sqrt(var / N))
    edges = np.linspace(0, 1, 11)
    expected = np.diff(m1 * edges + k * edges**2 / 2) / norm * N
    counts, _ = np.histogram(f, edges)
    _chi2("cerenkov position along the step", counts, expected)
    t = 2.0 + f * length / (290.0 + f * (250.0 - 290.0) * 0.5)
    assert np.allclose(ph["t"], t, rtol=2e-6, atol=1e-6)


# ----------------------------------------------------------------------------- scintillation


def test_scintillation_isotropic_polarized_and_along_the_step():
    scene = load_scene(SCINT)
    gs = scint_genstep(scene, N, 4.6)
    ph = _gen(scene, gs)
    d = ph["dir"].astype(np.float64)
    assert np.allclose(np.linalg.norm(d, axis=0), 1, atol=2e-6)
    for a, axis in enumerate("xyz"):
        check(f"scintillation <{axis}>", float(d[a].mean()), 0.0, math.sqrt(1 / 3 / N))
        check(
            f"scintillation <{axis}^2>",
            float((d[a] ** 2).mean()),
            1 / 3,
            math.sqrt((1 / 5 - 1 / 9) / N),
        )
    pol = ph["pol"].astype(np.float64)
    assert np.allclose(np.sum(pol * d, axis=0), 0, atol=2e-6)
    assert np.allclose(np.linalg.norm(pol, axis=0), 1, atol=2e-6)
    # the polarization angle about the direction is uniform: against the theta-hat vector
    th = np.stack((d[2] * d[0], d[2] * d[1], -(1 - d[2] ** 2))) / np.sqrt(1 - d[2] ** 2)
    check(
        "scintillation <pol . theta-hat>",
        float(np.sum(pol * th, axis=0).mean()),
        0.0,
        math.sqrt(0.5 / N),
    )
    f = (ph["pos"][1].astype(np.float64) - 6.0) / 2.0  # the step runs along +y from y = 6
    assert np.allclose(ph["pos"][0], 5.0) and np.allclose(ph["pos"][2], -7.0)
    counts, _ = np.histogram(f, np.linspace(0, 1, 11))
    _chi2("scintillation position uniform along a charged step", counts, np.full(10, N / 10))
    neutral = scint_genstep(scene, 1000, 4.6, charge=0.0)
    ph0 = _gen(scene, neutral)
    assert np.allclose(ph0["pos"].T, [5.0, 8.0, -7.0])  # the post-step point


@pytest.mark.parametrize("tau", [4.6, 18.0])
def test_scintillation_exponential_decay_per_component(tau):
    scene = load_scene(SCINT)
    gs = scint_genstep(scene, N, tau, component=0 if tau < 10 else 1)
    ph = _gen(scene, gs, seed=11 + int(tau))
    f = (ph["pos"][1].astype(np.float64) - 6.0) / 2.0
    dt = ph["t"].astype(np.float64) - 1.5 - f * 2.0 / 150.0
    check(f"decay mean, tau {tau} ns", float(dt.mean()), tau, tau / math.sqrt(N))
    edges = np.linspace(0, 5 * tau, 21)
    expected = np.diff(-np.exp(-edges / tau)) * N
    counts, _ = np.histogram(dt, edges)
    _chi2(f"exponential decay, tau {tau} ns", counts, expected)


def test_scintillation_spectrum_as_geant4_integrates_it():
    """The emission weights are per unit photon energy (SCINTILLATIONCOMPONENT). Geant4
    integrates them by trapezoids over energy and inverts that integral linearly between the
    nodes (G4PhysicsVector::GetEnergy), so each node interval holds its trapezoid's share,
    spread evenly over the interval's energies."""
    scene = load_scene(SCINT)
    ph = _gen(scene, scint_genstep(scene, N, 4.6), seed=13)
    tab = np.array(scene.materials[0].physics["tables"]["reemission_spectrum"])
    e_nodes, w = HC_EV_NM / tab[::-1, 0], tab[::-1, 1]
    cum = np.concatenate(([0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(e_nodes))))
    edges = np.linspace(e_nodes[0], e_nodes[-1], 25)
    expected = np.diff(np.interp(edges, e_nodes, cum)) / cum[-1] * N
    counts, _ = np.histogram(HC_EV_NM / ph["wl"].astype(np.float64), edges)
    _chi2("scintillation spectrum (per unit energy)", counts, expected)


def test_scintillation_gensteps_split_by_component():
    """The mock electrons' photons go to the components as G4Scintillation splits them."""
    scene = load_scene(SCINT)
    gs = scintillation_tracks(scene, 50_000, seed=4)
    si = gs.view(np.int32)[:, 0, 0] == SCINTILLATION
    comp = gs.view(np.int32)[si, 4, 0]
    num = gs.view(np.int32)[si, 0, 3].astype(np.int64)
    assert set(np.unique(comp)) == {0, 1}
    assert np.all(gs[si][comp == 0, 5, 0] == np.float32(4.6))
    assert np.all(gs[si][comp == 1, 5, 0] == np.float32(18.0))
    share = num[comp == 0].sum() / num.sum()
    assert abs(share - 0.8) < 0.01  # int(0.8 N) per step: truncation costs < 1 photon a step


# ----------------------------------------------------------------------------- group velocity


def test_group_velocity_is_c_over_n_minus_lambda_dn_dlambda(write_scene):
    """A smooth Sellmeier glass sampled every 2 nm: v_g on the grid against the analytic
    c / (n - lambda dn/dlambda); constant n gives c/n."""

    def sellmeier(lam_nm):
        l2 = (np.asarray(lam_nm) / 1000.0) ** 2
        return np.sqrt(
            1
            + 1.34533359 * l2 / (l2 - 0.00997743871)
            + 0.209073176 * l2 / (l2 - 0.0470450767)
            + 0.937357162 * l2 / (l2 - 111.886764)
        )

    nm = np.arange(300.0, 802.0, 2.0)
    doc = base_scene()
    doc["materials"]["Glass"]["refractive_index"] = [
        [float(a), float(b)] for a, b in zip(nm, sellmeier(nm), strict=True)
    ]
    scene = load_scene(write_scene(doc))
    vg = scene.arrays().mat[scene.material_index["Glass"], 4].astype(np.float64)
    inside = (WL_GRID >= 320) & (WL_GRID <= 780)
    lam = WL_GRID[inside]
    h = 1e-3
    ng = sellmeier(lam) - lam * (sellmeier(lam + h) - sellmeier(lam - h)) / (2 * h)
    assert np.max(np.abs(vg[inside] * ng / C_LIGHT_MM_NS - 1)) < 2e-4
    assert np.all(
        scene.arrays().mat[scene.material_index["Vacuum"], 4] == np.float32(C_LIGHT_MM_NS)
    )
    # Geant4's node construction (CalculateGROUPVEL) on a two-node table: c/n at both ends
    e, v = group_velocity_nodes(np.array([400.0, 500.0]), np.array([1.5, 1.5]))
    assert np.allclose(v, C_LIGHT_MM_NS / 1.5)


def test_time_of_flight_through_dispersive_glass(write_scene):
    """TO BT BT SD through 20 mm of F2-like glass at 420 nm: (179 mm / c) + (20 mm / v_g)."""
    doc = _slab_doc()
    doc["materials"]["Glass"]["refractive_index"] = [
        [380.0, 1.6595],
        [420.0, 1.6461],
        [460.0, 1.6368],
    ]
    doc["source"]["wavelength"] = 420.0
    scene = load_scene(write_scene(doc))
    p = Params(1, 0, 9, F.SD, True, (100.0, 100.0))
    r = propagate_chunk(scene.arrays(), gensteps(scene.source, 20_000), 0, 20_000, p)
    tt = r.seq == np.uint64(0x7CCD)
    e, v = group_velocity_nodes(np.array([380.0, 420.0, 460.0]), np.array([1.6595, 1.6461, 1.6368]))
    vg = float(np.interp(HC_EV_NM / 420.0, e, v))
    assert C_LIGHT_MM_NS / vg > 1.6461 + 0.02  # the group index exceeds the phase index
    assert tt.sum() > 0.8 * 20_000
    assert np.allclose(r.ox[tt, 0, 3], 179.0 / C_LIGHT_MM_NS + 20.0 / vg, rtol=2e-6)


# ----------------------------------------------------------------------------- first flags


def test_first_flag_follows_the_genstep_kind():
    """Torch, Cerenkov and scintillation gensteps in one event: each photon's first flag
    (seqhis slot 0, flagmask) is TO, CK or SI as its genstep says."""
    scene = load_scene(SCINT)
    torch = gensteps(load_scene(SCENES / "tboolean-box.toml").source, 3000)
    torch[:, 1, :3] = (0.0, 0.0, -100.0)
    mixed = np.concatenate([torch, scintillation_tracks(scene, 20_000, seed=1)])
    gs = G.check(mixed, scene, "mixed").array
    n = int(gs.view(np.int32)[:, 0, 3].sum())
    r = propagate_chunk(scene.arrays(), gs, 0, n, Params(2, 0, 16, F.SD, True, (500.0, 500.0)))
    kind = gs.view(np.int32)[genstep_of(gs, np.arange(n, dtype=np.uint64)), 0, 0]
    first = (r.seq & np.uint64(0xF)).astype(np.int64)
    want = np.where(
        kind == 6, F.nibble(F.TO), np.where(kind == CERENKOV, F.nibble(F.CK), F.nibble(F.SI))
    )
    assert np.array_equal(first, want)
    fm = r.ox.view(np.uint32)[:, 3, 3]
    for flag, k in ((F.TO, 6), (F.CK, CERENKOV), (F.SI, SCINTILLATION)):
        assert np.all((fm[kind == k] & flag) == flag)
        assert np.all((fm[kind != k] & flag) == 0)
    assert (kind == CERENKOV).sum() > 0 and np.all(np.isfinite(r.ox))
