"""Mock Cerenkov and scintillation gensteps: what a detector simulation would deliver, made
without one, so a mock delivery can carry them (``mock --gensteps-kind``).

Why: the pipeline's propagate process must be exercised on the genstep kinds a real
delivery carries, on machines with no Geant4. The tracks are simple but the numbers are
Geant4's: a straight track in the scene's container material, steps of fixed length, per
step the mean photon counts of G4Cerenkov and G4Scintillation (``engine.propagate.yields``)
and a Poisson (or Gaussian) draw, scintillation split over the material's time components,
one genstep per component. A muon keeps its speed (its energy loss over a tank is a few
per cent); an electron slows down at a constant dE/dx until it stops, so its Cerenkov light
fades out at threshold while it keeps scintillating. The real thing comes from
``skydeck-engine geant4 gensteps`` (engine.geant4).
"""

from __future__ import annotations

import math

import numpy as np

from engine.core.errors import BadInput
from engine.propagate.generate.kinds import CERENKOV, SCINTILLATION
from engine.propagate.scene import Scene
from engine.propagate.yields import (
    birks_visible,
    cerenkov_fields,
    component_split,
    scintillation_count,
    table,
)

C_MM_NS = 299.792458
MUON_MASS = 105.6583755  # MeV
ELECTRON_MASS = 0.51099895
PDG = {"mu-": 13, "e-": 11}
DEDX_MEV_CM_PER_G = 2.0  # MeV cm2/g: minimum ionisation, for the electron's slowing down


def _beta(kinetic: float, mass: float) -> float:
    gamma = 1.0 + kinetic / mass
    return math.sqrt(max(0.0, 1.0 - 1.0 / (gamma * gamma)))


def region(scene: Scene) -> tuple[int, np.ndarray]:
    """(material, half extents) where mock tracks run: the container for a TOML scene; for a
    GDML detector the innermost volume holding the origin (the JUNO-like detector's
    scintillator), its box shrunk to fit inside it (a ball's inscribed cube)."""
    if scene.gdml is None:
        return scene.container_material, np.array(scene.container_half, np.float64)
    from engine.propagate.geometry.trace import nearest

    g = scene.tree()
    t, node, _, _, enter = nearest(
        g.geo_i,
        g.geo_f,
        np.zeros((3, 1), np.float32),
        np.array([[0.0], [0.0], [1.0]], np.float32),
        1e-3,
    )
    k = int(node[0])
    if k < 0 or enter[0]:
        return scene.container_material, np.array(scene.container_half, np.float64)
    half = np.minimum(np.abs(g.node_lo[k]), np.abs(g.node_hi[k])) / math.sqrt(3.0)
    return int(g.node_i[k, 4]), half


def _chord(
    scene: Scene, rng: np.random.Generator, length: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """A start point and direction inside the container (a GDML detector: inside the
    volume at its origin), and the length that stays inside."""
    half = region(scene)[1]
    start = rng.uniform(-0.5, 0.5, 3) * half
    d = np.array([0.2, 0.1, 1.0]) + rng.normal(0, 0.1, 3)
    d /= np.linalg.norm(d)
    with np.errstate(divide="ignore"):
        exits = np.where(d != 0, (np.sign(d) * half - start) / d, np.inf)
    return start, d, float(min(length, 0.999 * exits.min()))


def _row(
    gentype: int,
    trackid: int,
    mat: int,
    num: int,
    pos: np.ndarray,
    t: float,
    delta: np.ndarray,
    step: float,
    pdg: int,
    charge: float,
    velocity: float,
) -> np.ndarray:
    g = np.zeros((6, 4), np.float32)
    g.view(np.int32)[0] = (gentype, trackid, mat, num)
    g[1] = (*pos, t)
    g[2] = (*delta, step)
    g[3, 1:] = (charge, 1.0, velocity)
    g.view(np.int32)[3, 0] = pdg
    return g


def cerenkov_tracks(
    scene: Scene, photons: int, seed: int, kinetic_mev: float = 1000.0, step_mm: float = 10.0
) -> np.ndarray:
    """Muons crossing the container material until the gensteps hold at least ``photons``
    photons (one muon when 0)."""
    mat = region(scene)[0]
    if "refractive_index" not in scene.materials[mat].physics.get("tables", {}):
        raise BadInput(f"{scene.materials[mat].name} has no refractive index: no Cerenkov light")
    nm, n = table(scene.materials[mat].physics["tables"]["refractive_index"])
    rng = np.random.default_rng(seed)
    beta = _beta(kinetic_mev, MUON_MASS)
    f = cerenkov_fields(nm, n, beta, beta)
    if f["mean_per_mm"] <= 0:
        raise BadInput(
            f"a {kinetic_mev:g} MeV muon is below the Cerenkov threshold in "
            f"{scene.materials[mat].name}"
        )
    rows, total, track = [], 0, 0
    while total < max(photons, 1) or track == 0:
        track += 1
        start, d, length = _chord(scene, rng, 1e9)
        nsteps = max(1, int(length // step_mm))
        for k in range(nsteps):
            pos = start + d * (k * step_mm)
            num = int(rng.poisson(f["mean_per_mm"] * step_mm))
            g = _row(
                CERENKOV,
                track,
                mat,
                num,
                pos,
                k * step_mm / (beta * C_MM_NS),
                d * step_mm,
                step_mm,
                PDG["mu-"],
                -1.0,
                beta * C_MM_NS,
            )
            g[4] = (f["BetaInverse"], f["Wmin"], f["Wmax"], f["maxCos"])
            g[5] = (
                f["maxSin2"],
                f["MeanNumberOfPhotons1"],
                f["MeanNumberOfPhotons2"],
                beta * C_MM_NS,
            )
            rows.append(g)
            total += num
        if track > 10_000:
            break
    return np.stack(rows)


def scintillation_tracks(
    scene: Scene, photons: int, seed: int, kinetic_mev: float = 2.0, step_mm: float = 0.5
) -> np.ndarray:
    """Electrons stopping in the container material (scintillation and, while above
    threshold, Cerenkov gensteps) until the gensteps hold at least ``photons`` photons."""
    mat = region(scene)[0]
    m = scene.materials[mat]
    phys = m.physics
    if "scintillation_yield" not in phys:
        raise BadInput(f"{m.name} is no scintillator (no scintillation_yield) in {scene.path.name}")
    nm, n = table(phys["tables"]["refractive_index"])
    comps = phys["scintillation_components"]
    dedx = DEDX_MEV_CM_PER_G * phys.get("density", 1.0) / 10.0  # MeV/mm
    rng = np.random.default_rng(seed)
    rows, total, track = [], 0, 0
    while total < max(photons, 1) or track == 0:
        track += 1
        pos, d, _ = _chord(scene, rng, 1e9)
        ke, t = kinetic_mev, 0.0
        while ke > 0:
            edep = min(ke, dedx * step_mm)
            length = step_mm * edep / (dedx * step_mm)
            b0, b1 = _beta(ke, ELECTRON_MASS), _beta(ke - edep, ELECTRON_MASS)
            v0, v1 = b0 * C_MM_NS, b1 * C_MM_NS
            delta = d * length
            vis = birks_visible(edep, length, phys.get("birks_constant", 0.0))
            num = scintillation_count(
                phys["scintillation_yield"] * vis, phys.get("resolution_scale", 1.0), rng
            )
            for k, cnt in enumerate(component_split(num, [w for _, w in comps])):
                if cnt:
                    g = _row(
                        SCINTILLATION,
                        track,
                        mat,
                        cnt,
                        pos,
                        t,
                        delta,
                        length,
                        PDG["e-"],
                        -1.0,
                        0.5 * (v0 + v1),
                    )
                    g.view(np.int32)[4, 0] = k
                    g[5, 0] = comps[k][0]
                    rows.append(g)
                    total += cnt
            f = cerenkov_fields(nm, n, b0, b1)
            mean = f["mean_per_mm"] * length
            if mean > 0 and f["BetaInverse"] < float(n.max()):
                cnt = int(rng.poisson(mean))
                g = _row(CERENKOV, track, mat, cnt, pos, t, delta, length, PDG["e-"], -1.0, v0)
                g[4] = (f["BetaInverse"], f["Wmin"], f["Wmax"], f["maxCos"])
                g[5] = (f["maxSin2"], f["MeanNumberOfPhotons1"], f["MeanNumberOfPhotons2"], v1)
                rows.append(g)
                total += cnt
            pos = pos + delta
            t += length / (0.5 * (v0 + v1)) if v0 + v1 > 0 else 0.0
            ke -= edep
        if track > 100_000:
            break
    return np.stack(rows)
