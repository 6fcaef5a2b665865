"""A GDML detector as a scene's parts: material rows, surface rows and the flattened tree
(docs/propagation.md, "Geometry").

Why here: the materials and surfaces must reach the backends exactly as Geant4 reads the
same file. Material property vectors (RINDEX, ABSLENGTH, RAYLEIGH, REEMISSIONPROB,
SCINTILLATIONCOMPONENT1 or FASTCOMPONENT as the emission spectrum) are energies and values,
resampled on the wavelength grid as Geant4 interpolates them (``tables``); GROUPVEL is
derived from RINDEX as Geant4 does; a material without RINDEX gets n = 0 (opaque:
Geant4's NoRINDEX absorbs a photon that reaches it); a material named exactly "Water"
without RAYLEIGH gets G4OpRayleigh's computed Rayleigh length (Einstein-Smoluchowski at
10 C, at the RINDEX nodes). Optical surfaces become (detect, absorb, specular, diffuse)
per wavelength the way G4OpBoundaryProcess decides: dielectric_metal reflects with
REFLECTIVITY (default 1), else absorbs and detects with EFFICIENCY (default 0); a
polished finish (or glisur with polish 1) reflects specularly, unified ground splits the
reflection into its spike and lobe (specular, exact for sigma_alpha 0) and Lambertian
remainder; a dielectric_dielectric surface without REFLECTIVITY < 1 changes nothing (plain
Fresnel). Anything else (backpainted, LUT models, backscatter, a lobe with sigma_alpha >
0, dielectric_dielectric with REFLECTIVITY < 1) is refused, naming the surface.

Surfaces apply as G4OpBoundaryProcess looks them up: the border surface of the ordered
pair (from, to) first, then the skin of the volume entered (going in) or left (going
out), then the other's skin; the sensor id of a detection is the copynumber of the
physical volume whose border or logical volume carries the surface (Opticks' sensor
identifiers come from the geometry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.core.errors import BadInput
from engine.propagate.geometry import solids as SO
from engine.propagate.geometry.flatten import MAX_NODES, Geometry, NodeSpec, assemble
from engine.propagate.geometry.gdml import Detector, GMaterial, GSurface, Table
from engine.propagate.geometry.units import UNITS
from engine.propagate.tables import (
    C_LIGHT_MM_NS,
    HC_EV_NM,
    ICDF_N,
    NO_INTERACTION,
    WL_GRID,
    WL_N,
    emission_icdf,
    energy_resample,
    group_velocity_nodes,
)

MAX_DEPTH = 64
WATER_BETA_T = 7.658e-23 * UNITS["m3"] / UNITS["MeV"]  # G4OpRayleigh's water compressibility
WATER_T = 283.15  # kelvin
K_BOLTZMANN = 8.617333262e-11  # MeV / kelvin (CLHEP)
HC_MEV_MM = HC_EV_NM * 1e-6 * 1e-6  # h c in MeV mm


@dataclass
class Parts:
    materials: list[
        tuple[str, np.ndarray, np.ndarray, dict[str, Any]]
    ]  # name, props, icdf, physics
    surfaces: list[tuple[str, np.ndarray]]  # name, (4, WL_N)
    geometry: Geometry
    world_material: int
    info: dict[str, Any]


def _nm(t: Table) -> tuple[np.ndarray, np.ndarray]:
    """(wavelengths ascending, values) of a property vector."""
    return HC_EV_NM / (t.energy[::-1] * 1e6), t.value[::-1].astype(float)


def water_rayleigh(t: Table) -> Table:
    """G4OpRayleigh::CalculateRayleighMeanFreePaths for "Water" at RINDEX's nodes (mm)."""
    c1 = WATER_BETA_T * WATER_T * K_BOLTZMANN / (6.0 * math.pi)
    lam = HC_MEV_MM / t.energy
    n2 = t.value * t.value
    c2 = (2 * math.pi / lam) ** 4
    c3 = ((n2 - 1.0) * (n2 + 2.0) / 3.0) ** 2
    with np.errstate(divide="ignore"):
        mfp = 1.0 / (c1 * c2 * c3)
    return Table(t.energy, np.where(np.isfinite(mfp), mfp, NO_INTERACTION))


def material(m: GMaterial, where: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    props = np.zeros((5, WL_N))
    physics: dict[str, Any] = {"tables": {}, "density": m.density / (UNITS["g"] / UNITS["cm3"])}
    icdf = np.full(ICDF_N, -1.0)
    rindex = m.props.get("RINDEX")
    if rindex is None:  # opaque: n = 0 marks it, light never crosses into it
        props[1:3] = NO_INTERACTION
        props[4] = C_LIGHT_MM_NS
        return props, icdf, physics
    nm, n = _nm(rindex)
    if np.any((n < 1.0) | (n > 10.0)):
        raise BadInput(f"{where}: RINDEX must lie within 1..10")
    props[0] = energy_resample(nm, n) if len(nm) > 1 else n[0]
    physics["tables"]["refractive_index"] = [
        [float(a), float(b)] for a, b in zip(nm, n, strict=True)
    ]
    if len(nm) > 1:
        e, vg = group_velocity_nodes(nm, n)
        props[4] = np.interp(HC_EV_NM / WL_GRID, e, vg)
    else:
        props[4] = C_LIGHT_MM_NS / n[0]
    tabs = {"ABSLENGTH": 1, "RAYLEIGH": 2, "REEMISSIONPROB": 3}
    for key, row in tabs.items():
        t = m.props.get(key)
        if t is None and key == "RAYLEIGH" and m.name == "Water":
            t = water_rayleigh(rindex)
            physics["rayleigh"] = "computed (G4OpRayleigh, Water)"
        if t is None:
            props[row] = NO_INTERACTION if row < 3 else 0.0
            continue
        x, v = _nm(t)
        props[row] = energy_resample(x, v) if len(x) > 1 else v[0]
        if row < 3:
            if np.any(v <= 0):
                raise BadInput(f"{where}: {key} lengths must be positive")
            props[row] = np.minimum(props[row], NO_INTERACTION)
            physics["tables"]["absorption_length" if row == 1 else "scattering_length"] = [
                [float(a), float(b)] for a, b in zip(x, v, strict=True)
            ]
        elif np.any((v < 0) | (v > 1)):
            raise BadInput(f"{where}: REEMISSIONPROB must lie within 0..1")
    spec = m.props.get("SCINTILLATIONCOMPONENT1", m.props.get("FASTCOMPONENT"))
    if spec is not None:
        x, w = _nm(spec)
        if np.any(w < 0) or not np.any(w > 0) or len(x) < 2:
            raise BadInput(
                f"{where}: the emission spectrum needs >= 2 nodes, weights >= 0, one > 0"
            )
        if x[0] < WL_GRID[0] or x[-1] > WL_GRID[-1]:
            raise BadInput(f"{where}: the emission spectrum must lie within 60..820 nm")
        icdf = emission_icdf(x, w)
        physics["tables"]["reemission_spectrum"] = [
            [float(a), float(b)] for a, b in zip(x, w, strict=True)
        ]
    if "SCINTILLATIONYIELD" in m.consts:
        physics["scintillation_yield"] = m.consts["SCINTILLATIONYIELD"] * UNITS["MeV"]
        comps = []
        for k in (1, 2, 3):
            tau = m.consts.get(f"SCINTILLATIONTIMECONSTANT{k}")
            if tau is not None:
                comps.append((tau, m.consts.get(f"SCINTILLATIONYIELD{k}", 1.0 if k == 1 else 0.0)))
        if comps:
            physics["scintillation_components"] = comps
    return props, icdf, physics


def _table(t: Table | None, default: float) -> np.ndarray:
    if t is None:
        return np.full(WL_N, default)
    x, v = _nm(t)
    return energy_resample(x, v) if len(x) > 1 else np.full(WL_N, v[0])


def surface(s: GSurface, where: str) -> np.ndarray | None:
    """(4, WL_N) detect, absorb, specular, diffuse; None: the surface changes nothing."""
    typ, finish, model = s.type, s.finish, s.model
    refl = _table(s.props.get("REFLECTIVITY"), 1.0)
    eff = _table(s.props.get("EFFICIENCY"), 0.0)
    for k, v in (("REFLECTIVITY", refl), ("EFFICIENCY", eff)):
        if np.any((v < 0) | (v > 1)):
            raise BadInput(f"{where}: {k} must lie within 0..1")
    if "TRANSMITTANCE" in s.props:
        raise BadInput(f"{where}: TRANSMITTANCE is not supported")
    if finish not in ("polished", "ground"):
        raise BadInput(f"{where}: finish {finish!r} is not supported (polished, ground)")
    if model not in ("glisur", "unified"):
        raise BadInput(f"{where}: model {model!r} is not supported (glisur, unified)")
    if typ == "dielectric_dielectric":
        if "REFLECTIVITY" in s.props and np.any(refl < 1):
            raise BadInput(
                f"{where}: a dielectric_dielectric surface with REFLECTIVITY < 1 is not supported"
            )
        return None
    if typ != "dielectric_metal":
        raise BadInput(
            f"{where}: type {typ!r} is not supported (dielectric_metal, dielectric_dielectric)"
        )
    spec = 1.0
    if finish == "ground":
        if model == "glisur":
            if s.value < 1:
                raise BadInput(f"{where}: glisur ground with polish < 1 is not supported")
        else:
            c = {
                k: float(_table(s.props.get(k), 0.0).mean())
                for k in ("SPECULARSPIKECONSTANT", "SPECULARLOBECONSTANT", "BACKSCATTERCONSTANT")
            }
            if c["BACKSCATTERCONSTANT"] > 0:
                raise BadInput(f"{where}: BACKSCATTERCONSTANT > 0 is not supported")
            if c["SPECULARLOBECONSTANT"] > 0 and s.value > 0:
                raise BadInput(f"{where}: a specular lobe with sigma_alpha > 0 is not supported")
            spec = c["SPECULARSPIKECONSTANT"] + c["SPECULARLOBECONSTANT"]
            if not 0 <= spec <= 1:
                raise BadInput(f"{where}: spike + lobe constants must lie within 0..1")
    out = np.stack([(1 - refl) * eff, (1 - refl) * (1 - eff), refl * spec, refl * (1 - spec)])
    return out


def build(d: Detector) -> Parts:
    mats = list(d.materials)
    midx = {n: i for i, n in enumerate(mats)}
    materials = []
    for n in mats:
        props, icdf, phys = material(d.materials[n], f"material {n}")
        materials.append((n, props, icdf, phys))
    # only surfaces that some volume uses, in file order
    used = set(d.skins.values()) | set(d.borders.values())
    surfaces: list[tuple[str, np.ndarray]] = []
    sidx: dict[str, int] = {}
    for n, s in d.surfaces.items():
        if n not in used:
            continue
        t = surface(s, f"opticalsurface {n}")
        if t is not None:
            sidx[n] = len(surfaces)
            surfaces.append((n, t))
    for pair in d.borders:
        for ref in pair:
            if ref not in d.physvols:
                raise BadInput(f"bordersurface: no physvol named {ref!r}", d.path)
    # CSG programs, one per solid used
    csgs: list[SO.Csg] = []
    cidx: dict[str, int] = {}

    def solid_of(lv: str) -> int:
        name = d.volumes[lv].solid
        if name not in cidx:
            try:
                csgs.append(SO.build(name, d.solids))
            except BadInput as err:
                raise BadInput(f"volume {lv}: {err.message}", d.path) from None
            cidx[name] = len(csgs) - 1
        return cidx[name]

    def surf(name: str | None) -> int:
        return -1 if name is None else sidx.get(name, -1)

    nodes: list[NodeSpec] = []
    world = d.volumes[d.world]
    nodes.append(
        NodeSpec(
            solid_of(d.world),
            np.eye(3),
            np.zeros(3),
            -1,
            -1,
            -1,
            midx[world.material],
            0,
            0,
            -1,
            f"{d.world} (world)",
        )
    )
    # (lv, node index, world rot, world pos, pv name, copynumber, depth)
    stack: list[tuple[str, int, np.ndarray, np.ndarray, str | None, int, int]] = [
        (d.world, 0, np.eye(3), np.zeros(3), None, 0, 0)
    ]
    sensors: set[int] = set()
    while stack:
        lv, k, rot, pos, pv_name, copy, depth = stack.pop()
        if depth >= MAX_DEPTH:
            raise BadInput(f"volume {lv}: volumes nested deeper than {MAX_DEPTH}", d.path)
        mother = d.volumes[lv]
        for pv in reversed(mother.daughters):
            child = d.volumes[pv.volume]
            r = rot @ pv.rot
            p = rot @ pv.pos + pos
            kid = len(nodes)
            if kid >= MAX_NODES:
                raise BadInput(f"more than {MAX_NODES} placed volumes", d.path)
            # G4OpBoundaryProcess: border (pre, post), then the entered/left volume's skin,
            # then the other's; the sensor is the carrier's copynumber
            o_s, o_c = None, pv.copynumber
            if pv_name is not None and (pv_name, pv.name) in d.borders:
                o_s = d.borders[(pv_name, pv.name)]
            elif pv.volume in d.skins:
                o_s = d.skins[pv.volume]
            elif lv in d.skins:
                o_s, o_c = d.skins[lv], copy
            i_s, i_c = None, pv.copynumber
            if pv_name is not None and (pv.name, pv_name) in d.borders:
                i_s = d.borders[(pv.name, pv_name)]
            elif pv.volume in d.skins:
                i_s = d.skins[pv.volume]
            elif lv in d.skins:
                i_s, i_c = d.skins[lv], copy
            osur, isur = surf(o_s), surf(i_s)
            for sid, c in ((osur, o_c), (isur, i_c)):
                if sid >= 0 and surfaces[sid][1][0].max() > 0:
                    sensors.add(c)
            nodes.append(
                NodeSpec(
                    solid_of(pv.volume),
                    r,
                    p,
                    midx[mother.material],
                    osur,
                    isur,
                    midx[child.material],
                    o_c,
                    i_c,
                    -1,
                    f"{pv.name} ({pv.volume})",
                )
            )
            stack.append((pv.volume, kid, r, p, pv.name, pv.copynumber, depth + 1))
    geo = assemble(csgs, nodes, face_ids=False)
    info: dict[str, Any] = {
        "volumes": len(nodes),
        "logical_volumes": len(d.volumes),
        "solids": len(csgs),
        "sensors": len(sensors),
        "surfaces": len(surfaces),
        "boundaries": geo.boundaries,
        "bvh_depth": geo.bvh_depth,
        "bytes": geo.nbytes(),
    }
    geo.info = info
    geo.info["solid_index"] = cidx
    return Parts(materials, surfaces, geo, midx[world.material], info)
