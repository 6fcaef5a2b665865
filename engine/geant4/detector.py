"""A skydeck scene as Geant4 geometry, materials and optical surfaces (docs/geant4.md,
"The scene in Geant4").

Why: the A/B comparison and the genstep collector must run Geant4 on exactly the detector
skydeck propagates through. Mapping:

- world: G4_Galactic with no optical properties (Opticks' "Rock"), 10 % larger than the
  container; the container a G4Box of its material; objects G4Box/G4Orb inside it;
- materials: RINDEX, ABSLENGTH, RAYLEIGH from the scene's tables at their own nodes (a
  constant spans the 60..820 nm grid; an "infinite" length is left out), so Geant4
  interpolates the same nodes (and derives the same GROUPVEL) as the scene; a scintillator
  adds SCINTILLATIONCOMPONENTk (its emission spectrum), SCINTILLATIONTIMECONSTANTk,
  SCINTILLATIONYIELDk, SCINTILLATIONYIELD, RESOLUTIONSCALE and its Birks constant; density
  and composition (or a NIST material) where the scene gives them, else a near-vacuum;
- surfaces (detect, absorb, reflect_specular, reflect_diffuse): unified dielectric_metal
  with REFLECTIVITY = specular + diffuse and EFFICIENCY = detect / (detect + absorb)
  (Geant4 decides reflection first, then detection among the absorbed photons, which gives
  skydeck's probabilities); a diffuse share makes the finish ground with sigma_alpha 0 and
  SPECULARSPIKECONSTANT = specular / (specular + diffuse), the rest Lambertian. The
  container's surface is a border surface container -> world, an object's a skin surface;
- a container without a surface: photons leaving it meet the world, which has no RINDEX,
  and Geant4 stops them there (skydeck's MI).

Reemission (``reemission_prob``) has no counterpart in Geant4's optical physics here (its
WLS conserves energy, skydeck's reemission does not): such a scene is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from engine.core.errors import BadInput
from engine.propagate.scene import HC_EV_NM, NO_INTERACTION, WL_GRID, Scene

NO_LENGTH = 1e20  # mm: a length at least this long is "never" (left out of the table)


def nodes(value: Any) -> tuple[list[float], list[float]]:
    """A scene property as Geant4 nodes: (photon energies in eV, ascending; values)."""
    if isinstance(value, list):
        nm = [float(r[0]) for r in value][::-1]
        vals = [float(r[1]) for r in value][::-1]
    else:
        nm = [float(WL_GRID[-1]), float(WL_GRID[0])]
        vals = [float(value), float(value)]
    return [HC_EV_NM / x for x in nm], vals


@dataclass
class Built:
    """What the run needs back from the construction (Geant4 objects kept alive here)."""

    world_pv: Any = None
    container_pv: Any = None
    world_lv: Any = None
    container_lv: Any = None
    object_lvs: list[Any] = field(default_factory=list)
    materials: dict[str, Any] = field(default_factory=dict)
    keep: list[Any] = field(default_factory=list)


def _mpt_vector(
    g4: ModuleType, mpt: Any, key: str, value: Any, unit: float, keep: list[Any]
) -> None:
    e, v = nodes(value)
    ev = g4.G4doubleVector([x * g4.eV for x in e])
    vv = g4.G4doubleVector([x * unit for x in v])
    keep += [ev, vv]
    mpt.AddProperty(key, ev, vv)


def material(g4: ModuleType, scene: Scene, index: int, keep: list[Any]) -> Any:
    m = scene.materials[index]
    phys = m.physics
    tables = phys.get("tables", {})
    if float(m.props[3].max()) > 0:
        raise BadInput(
            f"materials.{m.name}.reemission_prob: reemission has no counterpart in "
            "Geant4's optical physics here (its WLS conserves energy)",
            scene.path,
        )
    nist = g4.G4NistManager.Instance()
    if "nist" in phys:
        base = nist.FindOrBuildMaterial(phys["nist"])
        if base is None:
            raise BadInput(f"materials.{m.name}.nist: Geant4 knows no {phys['nist']!r}", scene.path)
        mat = g4.G4Material(
            m.name, phys.get("density", base.GetDensity() / (g4.g / g4.cm3)) * g4.g / g4.cm3, 1
        )
        mat.AddMaterial(base, 1.0)
    elif "composition" in phys:
        comp = phys["composition"]
        mat = g4.G4Material(m.name, phys["density"] * g4.g / g4.cm3, len(comp))
        for sym, atoms in comp.items():
            el = nist.FindOrBuildElement(sym)
            if el is None:
                raise BadInput(
                    f"materials.{m.name}.composition.{sym}: Geant4 knows no such element",
                    scene.path,
                )
            mat.AddElement(el, int(atoms))
    else:  # optical photons only: any near-vacuum will do
        mat = g4.G4Material(
            m.name, 1.0, 1.008 * g4.g / g4.mole, phys.get("density", 1e-25) * g4.g / g4.cm3
        )
    mpt = g4.G4MaterialPropertiesTable()
    keep += [mat, mpt]
    _mpt_vector(g4, mpt, "RINDEX", tables["refractive_index"], 1.0, keep)
    for key, name in (("absorption_length", "ABSLENGTH"), ("scattering_length", "RAYLEIGH")):
        v = tables.get(key)
        if v is None:
            continue
        vals = [float(r[1]) for r in v] if isinstance(v, list) else [float(v)]
        if min(vals) >= min(NO_LENGTH, NO_INTERACTION):
            continue  # "never"
        _mpt_vector(g4, mpt, name, v, g4.mm, keep)
    if "scintillation_yield" in phys:
        spectrum = tables.get("reemission_spectrum", tables.get("reemission_wavelength"))
        if not isinstance(spectrum, list):  # one wavelength: a narrow line around it
            w = float(spectrum)
            spectrum = [[w - 0.5, 0.0], [w, 1.0], [w + 0.5, 0.0]]
        for k, (tau, y) in enumerate(phys["scintillation_components"], start=1):
            _mpt_vector(g4, mpt, f"SCINTILLATIONCOMPONENT{k}", spectrum, 1.0, keep)
            mpt.AddConstProperty(f"SCINTILLATIONTIMECONSTANT{k}", tau * g4.ns)
            mpt.AddConstProperty(f"SCINTILLATIONYIELD{k}", y)
        mpt.AddConstProperty("SCINTILLATIONYIELD", phys["scintillation_yield"] / g4.MeV)
        mpt.AddConstProperty("RESOLUTIONSCALE", phys.get("resolution_scale", 1.0))
        if phys.get("birks_constant", 0.0) > 0:
            mat.GetIonisation().SetBirksConstant(phys["birks_constant"] * g4.mm / g4.MeV)
    mat.SetMaterialPropertiesTable(mpt)
    return mat


def optical_surface(
    g4: ModuleType, name: str, probs: tuple[float, float, float, float], keep: list[Any]
) -> Any:
    detect, absorb, spec, diff = probs
    refl = spec + diff
    eff = detect / (detect + absorb) if detect + absorb > 0 else 0.0
    finish = g4.ground if diff > 0 else g4.polished
    surf = g4.G4OpticalSurface(name, g4.unified, finish, g4.dielectric_metal)
    mpt = g4.G4MaterialPropertiesTable()
    keep += [surf, mpt]
    _mpt_vector(g4, mpt, "REFLECTIVITY", refl, 1.0, keep)
    _mpt_vector(g4, mpt, "EFFICIENCY", eff, 1.0, keep)
    if diff > 0:
        surf.SetSigmaAlpha(0.0)
        for key, v in (
            ("SPECULARSPIKECONSTANT", spec / refl),
            ("SPECULARLOBECONSTANT", 0.0),
            ("BACKSCATTERCONSTANT", 0.0),
        ):
            _mpt_vector(g4, mpt, key, v, 1.0, keep)
    surf.SetMaterialPropertiesTable(mpt)
    return surf


def build(g4: ModuleType, scene: Scene) -> Built:
    """Construct the scene's volumes (call from DetectorConstruction.Construct)."""
    b = Built()
    keep = b.keep
    for i, m in enumerate(scene.materials):
        b.materials[m.name] = material(g4, scene, i, keep)
    nist = g4.G4NistManager.Instance()
    galactic = nist.FindOrBuildMaterial("G4_Galactic")
    half = scene.container_half
    wh = [h * 1.1 + 10.0 for h in half]
    s_world = g4.G4Box("World", *wh)
    b.world_lv = g4.G4LogicalVolume(s_world, galactic, "World")
    b.world_pv = g4.G4PVPlacement(None, g4.G4ThreeVector(), b.world_lv, "World", None, False, 0)
    s_cont = g4.G4Box("Container", *half)
    cmat = b.materials[scene.materials[scene.container_material].name]
    b.container_lv = g4.G4LogicalVolume(s_cont, cmat, "Container")
    b.container_pv = g4.G4PVPlacement(
        None, g4.G4ThreeVector(), b.container_lv, "Container", b.world_lv, False, 0
    )
    keep += [s_world, s_cont]
    for j, o in enumerate(scene.objects):
        solid = (
            g4.G4Box(f"Object{j}", *o.half_size)
            if o.shape == "box"
            else g4.G4Orb(f"Object{j}", o.half_size[0])
        )
        lv = g4.G4LogicalVolume(solid, b.materials[scene.materials[o.material].name], f"Object{j}")
        pv = g4.G4PVPlacement(
            None, g4.G4ThreeVector(*o.center), lv, f"Object{j}", b.container_lv, False, j + 1
        )
        keep += [solid, lv, pv]
        b.object_lvs.append(lv)
        if o.surface >= 0:
            name, probs = scene.surfaces[o.surface]
            surf = optical_surface(g4, f"{name}-{j}", probs, keep)
            keep.append(g4.G4LogicalSkinSurface(f"skin{j}", lv, surf))
    if scene.container_surface >= 0:
        name, probs = scene.surfaces[scene.container_surface]
        surf = optical_surface(g4, name, probs, keep)
        keep.append(g4.G4LogicalBorderSurface("containerWall", b.container_pv, b.world_pv, surf))
    return b


def detecting_volumes(scene: Scene, built: Built) -> list[Any]:
    """Every logical volume for a GDML detector (the surface's owner is found per hit);
    else: Logical volumes whose sensitive detector Geant4 invokes on a detection: the one a
    photon steps into at a detecting surface (the world for the container's wall; the
    object, and the container for photons leaving it, for an object's skin)."""
    if scene.gdml is not None:
        return list(built.object_lvs)
    out = []
    if scene.container_surface >= 0 and scene.surfaces[scene.container_surface][1][0] > 0:
        out.append(built.world_lv)
    for j, o in enumerate(scene.objects):
        if o.surface >= 0 and scene.surfaces[o.surface][1][0] > 0:
            out.append(built.object_lvs[j])
            if built.container_lv not in out:
                out.append(built.container_lv)
    return out


def read_gdml(g4: ModuleType, scene: Scene) -> Built:
    """The scene's GDML read by Geant4's own G4GDMLParser (no schema validation: offline),
    its optical tables and surfaces as the file gives them."""
    assert scene.gdml is not None
    b = Built()
    parser = g4.G4GDMLParser()
    parser.Read(str(scene.gdml["file"]), False)
    b.world_pv = parser.GetWorldVolume()
    b.world_lv = b.world_pv.GetLogicalVolume()
    seen: dict[str, Any] = {}
    stack = [b.world_lv]
    while stack:
        lv = stack.pop()
        if lv.GetName() in seen:
            continue
        seen[lv.GetName()] = lv
        stack.extend(lv.GetDaughter(i).GetLogicalVolume() for i in range(lv.GetNoDaughters()))
    b.object_lvs = list(seen.values())
    b.keep.append(parser)
    return b
