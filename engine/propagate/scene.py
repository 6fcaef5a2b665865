"""Scene TOML (docs/design.md, "Scene file"): parse, validate, and flatten into arrays.

Validation happens before anything is written, and every problem is a BadInput (exit 2)
whose message names the offending key, e.g. ``surfaces.det: probabilities sum to 0.9``.
Every number must be finite and physical (NaN compares false with every bound, so a
``refractive_index = nan`` used to slip through); only lengths may be ``inf``, meaning
"never"; sizes (objects, photons) are bounded so a scene cannot make the job allocate
without limit.
The flattened ``SceneArrays`` is what both backends consume, so the CUDA kernel and the
NumPy code see exactly the same numbers (same wavelength grid, same interpolation).

Tables are read as Geant4 reads a G4MaterialPropertyVector (docs/geant4.md, "Material
tables"): linear in photon energy between the given nodes, the edge values beyond them. The
group velocity is derived from the refractive-index table exactly as Geant4's
``CalculateGROUPVEL`` does, and an emission spectrum becomes the inverse CDF that Geant4's
G4Scintillation and Opticks' scintillation texture sample (trapezoidal integral in energy),
so the same scene gives skydeck and Geant4 the same photons.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.errors import BadInput
from engine.core.workspace import load_toml
from engine.propagate.geometry.flatten import Geometry, from_boxes
from engine.propagate.options import MAX_PHOTONS
from engine.propagate.params import EPS as EPS_DEFAULT
from engine.propagate.tables import (  # noqa: F401 - re-exported: the scene's constants
    C_LIGHT_MM_NS,
    HC_EV_NM,
    ICDF_N,
    N_PROP,
    NO_INTERACTION,
    PROPS,
    WL_GRID,
    WL_MIN,
    WL_N,
    WL_STEP,
    emission_icdf,
    energy_resample,
    group_velocity_nodes,
)

SURFACE_KEYS = ("detect", "absorb", "reflect_specular", "reflect_diffuse")
SOURCE_TYPES = {"disc": 1, "point": 2, "sphere": 3}
SHAPES = {"box": 0, "sphere": 1}
GENTYPE_TORCH = 6  # OpticksGenstep_TORCH
MAX_PHOTONS_PER_GENSTEP = 2**31 - 1  # numphoton is an int32 in the genstep
MAX_INDEX = 10.0  # refractive index: optical materials lie within 1..~4
MAX_MM = 1e9  # coordinates and sizes (mm): float32 on the device, 1000 km is no detector
MAX_TIME_NS = 1e15
MAX_ITEMS = 1024  # materials, surfaces, objects: the overlap check is quadratic in objects


@dataclass
class Material:
    name: str
    props: np.ndarray  # (N_PROP, WL_N) float32
    icdf: np.ndarray  # (ICDF_N,) float32 emission wavelengths, or all -1 (keep wavelength)
    # what only a charged-particle simulation needs (engine.geant4): density, composition,
    # scintillation yield and components, Birks constant; the raw tables as given
    physics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Obj:
    shape: str
    center: tuple[float, float, float]
    half_size: tuple[float, float, float]  # box half sizes; sphere: (r, r, r)
    material: int
    surface: int  # -1: none (Fresnel boundary)


@dataclass
class Source:
    type: str
    position: tuple[float, float, float]
    direction: tuple[float, float, float] | None
    radius: float
    wavelength: float
    time: float
    photons: int
    polarization: tuple[float, float, float] | None


@dataclass
class Scene:
    """A validated scene; ``arrays()`` flattens it for the backends."""

    name: str
    path: Path
    sha256: str
    materials: list[Material]
    material_index: dict[str, int]
    surfaces: list[tuple[str, tuple[float, float, float, float]]]
    surface_index: dict[str, int]
    container_half: tuple[float, float, float]
    container_material: int
    container_surface: int
    objects: list[Obj]
    source: Source | None  # None: the scene is used with --gensteps only
    max_bounce: int = 9
    hitmask: str = "SD"
    extra: dict[str, Any] = field(default_factory=dict)
    # the volume tree as the backends trace it (flatten.from_boxes for a TOML scene)
    geometry: Geometry | None = None
    # (S, 4, WL_N) detect, absorb, specular, diffuse per wavelength; None: from ``surfaces``
    surface_tables: np.ndarray | None = None
    epsilon: float = float(EPS_DEFAULT)  # mm: a photon never meets a boundary nearer than this
    gdml: dict[str, Any] | None = None  # GDML scenes: file, sha256, volumes, sensors

    def tree(self) -> Geometry:
        if self.geometry is None:
            self.geometry = from_boxes(
                self.container_half,
                self.container_material,
                self.container_surface,
                [(o.shape, o.center, o.half_size, o.material, o.surface) for o in self.objects],
            )
        return self.geometry

    def arrays(self) -> SceneArrays:
        mat = np.stack([m.props for m in self.materials]).astype(np.float32)
        icdf = np.stack([m.icdf for m in self.materials]).astype(np.float32)
        if self.surface_tables is not None:
            surf = np.ascontiguousarray(self.surface_tables, np.float32)
        else:
            rows = np.array([s for _, s in self.surfaces], dtype=np.float32).reshape(-1, 4)
            surf = np.ascontiguousarray(np.repeat(rows[:, :, None], WL_N, axis=2))
        g = self.tree()
        const = bool(np.all(mat == mat[:, :, :1]))
        const_s = bool(np.all(surf == surf[:, :, :1])) if surf.size else True
        return SceneArrays(
            mat=mat,
            icdf=icdf,
            surf=surf,
            geo_i=g.geo_i,
            geo_f=g.geo_f,
            node_i=g.node_i,
            eps=float(self.epsilon),
            face_ids=g.face_ids,
            const_props=const,
            const_surf=const_s,
        )


@dataclass
class SceneArrays:
    """Flat arrays shared by the NumPy and CUDA backends.

    mat (M,N_PROP,WL_N) float32: n, absorption length, scattering length, reemission prob,
    group velocity (mm/ns) per wavelength; n = 0 marks a material without RINDEX (opaque:
    a photon reaching it is absorbed, Geant4's NoRINDEX).
    icdf (M,ICDF_N): emission wavelength at u = k/(ICDF_N-1), interpolated linearly between
    samples (-1: no spectrum; reemission keeps the photon's wavelength).
    surf (S,4,WL_N): detect, absorb, reflect_specular, reflect_diffuse per wavelength.
    geo_i, geo_f: the volume tree, CSG solids and BVH (engine.propagate.geometry.flatten);
    node_i (N,8) a view of its node table. eps: the minimum distance to a boundary (mm).
    """

    mat: np.ndarray
    icdf: np.ndarray
    surf: np.ndarray
    geo_i: np.ndarray
    geo_f: np.ndarray
    node_i: np.ndarray
    eps: float
    face_ids: bool
    const_props: bool
    const_surf: bool = True

    @property
    def surf_t(self) -> np.ndarray:
        """(S, WL_N, 4) view-copy of ``surf``: one gather fetches a surface's four shares."""
        t = self.__dict__.get("_surf_t")
        if t is None:
            t = np.ascontiguousarray(np.moveaxis(self.surf, 1, 2))
            self.__dict__["_surf_t"] = t
        return t

    @property
    def mat_t(self) -> np.ndarray:
        """(M, WL_N, N_PROP) view-copy of ``mat``: one gather fetches every property."""
        t = self.__dict__.get("_mat_t")
        if t is None:
            t = np.ascontiguousarray(np.moveaxis(self.mat, 1, 2))
            self.__dict__["_mat_t"] = t
        return t


def _bad(path: Path, key: str, problem: str) -> BadInput:
    return BadInput(f"{key}: {problem}", path)


def _num(path: Path, key: str, v: Any, *, allow_inf: bool = False, bound: float = MAX_MM) -> float:
    """A number, finite (``allow_inf``: +/-inf too) and within +/-``bound`` otherwise."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _bad(path, key, f"expected a number, got {v!r}")
    try:
        f = float(v)
    except OverflowError:  # a TOML integer beyond a double
        raise _bad(path, key, f"{v} is out of range") from None
    if math.isnan(f) or (math.isinf(f) and not allow_inf):
        raise _bad(path, key, f"must be a finite number, got {v!r}")
    if math.isfinite(f) and abs(f) > bound:
        raise _bad(path, key, f"{v!r} is outside -{bound:g}..{bound:g}")
    return f


def _vec3(path: Path, key: str, v: Any) -> tuple[float, float, float]:
    if not isinstance(v, list) or len(v) != 3:
        raise _bad(path, key, f"expected [x, y, z], got {v!r}")
    x, y, z = (_num(path, key, e) for e in v)
    if not all(math.isfinite(e) for e in (x, y, z)):
        raise _bad(path, key, "must be finite")
    return x, y, z


def _table(path: Path, key: str, v: list[Any]) -> np.ndarray:
    """A wavelength table [[nm, value], ...] as a float64 (k, 2) array, nm increasing."""
    try:
        tab = np.array(v, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise _bad(path, key, "table must be [[wavelength_nm, value], ...]") from None
    if tab.ndim != 2 or tab.shape[1] != 2 or len(tab) < 2 or tab.dtype.kind not in "iuf":
        raise _bad(path, key, "table must be [[wavelength_nm, value], ...] with >= 2 rows")
    if not np.all(np.isfinite(tab)) or np.any(np.abs(tab) > MAX_MM):
        raise _bad(path, key, f"table values must be finite and within -{MAX_MM:g}..{MAX_MM:g}")
    if np.any(np.diff(tab[:, 0]) <= 0):
        raise _bad(path, key, "table wavelengths must increase")
    if tab[0, 0] <= 0:
        raise _bad(path, key, "table wavelengths must be positive")
    return tab


def _property(
    path: Path, key: str, v: Any, default: float | None, allow_inf: bool = False
) -> np.ndarray:
    """A constant, or a wavelength table [[nm, value], ...] resampled onto WL_GRID (linear
    in photon energy, as Geant4 interpolates)."""
    if v is None:
        if default is None:
            raise _bad(path, key, "missing")
        return np.full(WL_N, default)
    if isinstance(v, list):
        tab = _table(path, key, v)
        return energy_resample(tab[:, 0], tab[:, 1])
    return np.full(WL_N, _num(path, key, v, allow_inf=allow_inf))


def _group_velocity(path: Path, key: str, v: Any) -> np.ndarray:
    """Group velocity on WL_GRID from the refractive index as given (constant n: c/n)."""
    if isinstance(v, list):
        tab = _table(path, key, v)
        e, vg = group_velocity_nodes(tab[:, 0], tab[:, 1])
        return np.interp(HC_EV_NM / WL_GRID, e, vg)
    return np.full(WL_N, C_LIGHT_MM_NS / _num(path, key, v))


def _icdf(path: Path, key: str, v: Any) -> np.ndarray:
    """Emission (reemission and scintillation) spectrum [[nm, weight], ...], or a single
    wavelength, as an inverse CDF on ICDF_N points; none: all -1 (keep the wavelength)."""
    if v is None:
        return np.full(ICDF_N, -1.0)
    if isinstance(v, int | float) and not isinstance(v, bool):
        wl = _num(path, key, v)
        if not WL_GRID[0] <= wl <= WL_GRID[-1]:
            raise _bad(path, key, f"must be within {WL_GRID[0]:.0f}..{WL_GRID[-1]:.0f} nm")
        return np.full(ICDF_N, wl)
    if not isinstance(v, list):
        raise _bad(path, key, "must be a wavelength (nm) or a table [[nm, weight], ...]")
    tab = _table(path, key, v)
    if tab[0, 0] < WL_GRID[0] or tab[-1, 0] > WL_GRID[-1]:
        raise _bad(path, key, f"wavelengths must lie within {WL_GRID[0]:.0f}..{WL_GRID[-1]:.0f} nm")
    if np.any(tab[:, 1] < 0):
        raise _bad(path, key, "weights must not be negative")
    if not np.any(tab[:, 1] > 0):
        raise _bad(path, key, "spectrum has no positive weight")
    return emission_icdf(tab[:, 0], tab[:, 1])


MATERIAL_KEYS = (
    "refractive_index",
    "absorption_length",
    "scattering_length",
    "reemission_prob",
    "reemission_spectrum",
    "reemission_wavelength",
    "density",
    "composition",
    "nist",
    "scintillation_yield",
    "scintillation_components",
    "birks_constant",
    "resolution_scale",
)
_ELEMENT = re.compile(r"[A-Z][a-z]?")
_NIST = re.compile(r"G4_[A-Za-z0-9_-]{1,40}")


def _physics(path: Path, key: str, d: dict[str, Any]) -> dict[str, Any]:
    """What a charged-particle simulation needs beyond the optical tables (engine.geant4):
    density (g/cm3) and composition (element symbol -> atoms) or a NIST name; scintillation
    yield (photons/MeV), components [[decay time ns, relative yield], ...], Birks constant
    (mm/MeV), resolution scale. skydeck's propagation uses none of them."""
    out: dict[str, Any] = {}
    if "density" in d:
        out["density"] = _num(path, f"{key}.density", d["density"], bound=30.0)
        if out["density"] <= 0:
            raise _bad(path, f"{key}.density", "must be positive (g/cm3)")
    if "composition" in d:
        comp = d["composition"]
        if not isinstance(comp, dict) or not comp or len(comp) > 32:
            raise _bad(
                path,
                f"{key}.composition",
                "must be a table of element = atoms, e.g. {H = 2, O = 1}",
            )
        for el, k in comp.items():
            if not _ELEMENT.fullmatch(el):
                raise _bad(path, f"{key}.composition.{el}", "is not an element symbol")
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 10000:
                raise _bad(path, f"{key}.composition.{el}", "atoms must be an integer in 1..10000")
        out["composition"] = dict(comp)
    if "nist" in d:
        if not isinstance(d["nist"], str) or not _NIST.fullmatch(d["nist"]):
            raise _bad(path, f"{key}.nist", "must be a Geant4 NIST material name like \"G4_WATER\"")
        out["nist"] = d["nist"]
    if "composition" in out and "density" not in out:
        raise _bad(path, f"{key}.density", "missing (a composition needs a density)")
    if "scintillation_yield" in d:
        y = _num(path, f"{key}.scintillation_yield", d["scintillation_yield"], bound=1e6)
        if y < 0:
            raise _bad(path, f"{key}.scintillation_yield", "must not be negative (photons/MeV)")
        out["scintillation_yield"] = y
        comps = d.get("scintillation_components")
        ck = f"{key}.scintillation_components"
        if comps is None:
            raise _bad(
                path, ck, "missing (a scintillator needs [[decay time ns, relative yield], ...])"
            )
        if not isinstance(comps, list) or not 1 <= len(comps) <= 3:
            raise _bad(path, ck, "must be 1 to 3 rows [decay time ns, relative yield]")
        rows = []
        for i, row in enumerate(comps):
            if not isinstance(row, list) or len(row) != 2:
                raise _bad(path, f"{ck}[{i}]", "must be [decay time ns, relative yield]")
            tau = _num(path, f"{ck}[{i}]", row[0], bound=1e6)
            w = _num(path, f"{ck}[{i}]", row[1], bound=1e6)
            if tau <= 0 or w < 0:
                raise _bad(path, f"{ck}[{i}]", "decay time must be positive, yield not negative")
            rows.append((tau, w))
        if sum(w for _, w in rows) <= 0:
            raise _bad(path, ck, "relative yields sum to 0")
        out["scintillation_components"] = rows
        if d.get("reemission_spectrum", d.get("reemission_wavelength")) is None:
            raise _bad(
                path, f"{key}.reemission_spectrum", "missing (a scintillator's emission spectrum)"
            )
    elif "scintillation_components" in d:
        raise _bad(path, f"{key}.scintillation_yield", "missing (components without a yield)")
    for k, bound in (("birks_constant", 10.0), ("resolution_scale", 100.0)):
        if k in d:
            out[k] = _num(path, f"{key}.{k}", d[k], bound=bound)
            if out[k] < 0:
                raise _bad(path, f"{key}.{k}", "must not be negative")
    return out


def _parse_material(path: Path, name: str, d: Any) -> Material:
    key = f"materials.{name}"
    if not isinstance(d, dict):
        raise _bad(path, key, "must be a table")
    unknown = sorted(set(d) - set(MATERIAL_KEYS))
    if unknown:
        raise _bad(path, f"{key}.{unknown[0]}", f"unknown key (known: {', '.join(MATERIAL_KEYS)})")
    rindex = d.get("refractive_index")
    props = np.stack(
        [
            _property(path, f"{key}.refractive_index", rindex, None),
            _property(path, f"{key}.absorption_length", d.get("absorption_length"), math.inf, True),
            _property(path, f"{key}.scattering_length", d.get("scattering_length"), math.inf, True),
            _property(path, f"{key}.reemission_prob", d.get("reemission_prob"), 0.0),
        ]
    )
    # "infinite" lengths become 1e30 mm: interpolation a + f*(b - a) must never see inf - inf
    props[1:3] = np.minimum(props[1:3], NO_INTERACTION)
    if np.any((props[0] < 1.0) | (props[0] > MAX_INDEX)):
        raise _bad(path, f"{key}.refractive_index", f"must be within 1..{MAX_INDEX:g}")
    if isinstance(rindex, list) and np.any(
        (_table(path, key, rindex)[:, 1] < 1.0) | (_table(path, key, rindex)[:, 1] > MAX_INDEX)
    ):
        raise _bad(path, f"{key}.refractive_index", f"must be within 1..{MAX_INDEX:g}")
    for i, p in ((1, "absorption_length"), (2, "scattering_length")):
        if np.any(props[i] <= 0):
            raise _bad(path, f"{key}.{p}", "lengths must be positive")
    if np.any((props[3] < 0) | (props[3] > 1)):
        raise _bad(path, f"{key}.reemission_prob", "must be within [0, 1]")
    vg = _group_velocity(path, f"{key}.refractive_index", rindex)
    props = np.concatenate([props, vg[None, :]])
    icdf = _icdf(
        path,
        f"{key}.reemission_spectrum",
        d.get("reemission_spectrum", d.get("reemission_wavelength")),
    )
    physics = _physics(path, key, d)
    # the optical tables as the scene gives them: Geant4 is built from these nodes
    physics["tables"] = {
        k: d[k]
        for k in (
            "refractive_index",
            "absorption_length",
            "scattering_length",
            "reemission_prob",
            "reemission_spectrum",
            "reemission_wavelength",
        )
        if k in d
    }
    return Material(name, props.astype(np.float32), icdf.astype(np.float32), physics)


def _parse_surface(path: Path, name: str, d: Any) -> tuple[float, float, float, float]:
    key = f"surfaces.{name}"
    if not isinstance(d, dict):
        raise _bad(path, key, "must be a table")
    unknown = set(d) - set(SURFACE_KEYS)
    if unknown:
        raise _bad(
            path, f"{key}.{sorted(unknown)[0]}", f"unknown key (known: {', '.join(SURFACE_KEYS)})"
        )
    vals = tuple(_num(path, f"{key}.{k}", d.get(k, 0.0), bound=1.0) for k in SURFACE_KEYS)
    for k, v in zip(SURFACE_KEYS, vals, strict=True):
        if not 0.0 <= v <= 1.0:
            raise _bad(path, f"{key}.{k}", f"probability {v} outside [0, 1]")
    if abs(sum(vals) - 1.0) > 1e-6:
        raise _bad(path, key, f"probabilities sum to {sum(vals):g}, not 1")
    return vals  # type: ignore[return-value]


def _count(path: Path, key: str, items: dict[str, Any] | list[Any]) -> None:
    if len(items) > MAX_ITEMS:
        raise _bad(path, key, f"{len(items)} entries; at most {MAX_ITEMS} are allowed")


def _lookup(path: Path, key: str, name: Any, index: dict[str, int], what: str) -> int:
    if not isinstance(name, str) or name not in index:
        raise _bad(path, key, f"unknown {what} {name!r} (known: {', '.join(index) or 'none'})")
    return index[name]


def _inside_box(p: np.ndarray, half: np.ndarray, margin: np.ndarray | float = 0.0) -> bool:
    return bool(np.all(np.abs(p) + margin < half))


def _overlap(a: Obj, b: Obj) -> bool:
    """True when two objects touch or overlap: tracking assumes disjoint volumes."""
    ca, cb = np.array(a.center), np.array(b.center)
    if a.shape == "box" and b.shape == "box":
        return bool(np.all(np.abs(ca - cb) <= np.array(a.half_size) + np.array(b.half_size)))
    if a.shape == "sphere" and b.shape == "sphere":
        return float(np.linalg.norm(ca - cb)) <= a.half_size[0] + b.half_size[0]
    box, sph = (a, b) if a.shape == "box" else (b, a)
    cbx, csp = np.array(box.center), np.array(sph.center)
    closest = np.clip(csp, cbx - np.array(box.half_size), cbx + np.array(box.half_size))
    return float(np.linalg.norm(closest - csp)) <= sph.half_size[0]


def load_scene(path: str | Path) -> Scene:
    """Read and validate a scene TOML; BadInput (exit 2) naming the key on any problem."""
    path = Path(path)
    doc = load_toml(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise BadInput(f"cannot read: {err.strerror}", path) from None
    return parse_scene(doc, path, hashlib.sha256(raw).hexdigest())


def parse_scene(doc: dict[str, Any], path: Path, sha256: str = "") -> Scene:
    """Validate a scene already read as TOML (``path`` names it in messages)."""
    name = doc.get("name", path.stem)
    if not isinstance(name, str):
        raise _bad(path, "name", "must be a string")

    if "geometry" in doc:
        return _gdml_scene(doc, path, sha256, name)
    mats = doc.get("materials")
    if not isinstance(mats, dict) or not mats:
        raise _bad(path, "materials", "at least one [materials.<name>] table is required")
    _count(path, "materials", mats)
    materials = [_parse_material(path, n, d) for n, d in mats.items()]
    material_index = {m.name: i for i, m in enumerate(materials)}

    surfs = doc.get("surfaces", {})
    if not isinstance(surfs, dict):
        raise _bad(path, "surfaces", "must be a table of [surfaces.<name>]")
    _count(path, "surfaces", surfs)
    surfaces = [(n, _parse_surface(path, n, d)) for n, d in surfs.items()]
    surface_index = {n: i for i, (n, _) in enumerate(surfaces)}

    cont = doc.get("container")
    if not isinstance(cont, dict):
        raise _bad(path, "container", "a [container] table is required")
    half = _vec3(path, "container.half_size", cont.get("half_size"))
    if min(half) <= 0:
        raise _bad(path, "container.half_size", "lengths must be positive")
    cmat = _lookup(path, "container.material", cont.get("material"), material_index, "material")
    csurf = -1
    if cont.get("surface") is not None:
        csurf = _lookup(path, "container.surface", cont["surface"], surface_index, "surface")

    objects: list[Obj] = []
    raw_objs = doc.get("objects", [])
    if not isinstance(raw_objs, list):
        raise _bad(path, "objects", "must be an array of [[objects]] tables")
    _count(path, "objects", raw_objs)
    half_arr = np.array(half)
    for i, o in enumerate(raw_objs):
        key = f"objects[{i}]"
        if not isinstance(o, dict):
            raise _bad(path, key, "must be a table")
        shape = o.get("shape")
        if not isinstance(shape, str) or shape not in SHAPES:
            raise _bad(path, f"{key}.shape", f"must be one of {', '.join(SHAPES)}, got {shape!r}")
        center = _vec3(path, f"{key}.center", o.get("center", [0.0, 0.0, 0.0]))
        if shape == "box":
            hs = _vec3(path, f"{key}.half_size", o.get("half_size"))
            if min(hs) <= 0:
                raise _bad(path, f"{key}.half_size", "lengths must be positive")
        else:
            r = _num(path, f"{key}.radius", o.get("radius"))
            if r <= 0:
                raise _bad(path, f"{key}.radius", "lengths must be positive")
            hs = (r, r, r)
        mat = _lookup(path, f"{key}.material", o.get("material"), material_index, "material")
        surf = -1
        if o.get("surface") is not None:
            surf = _lookup(path, f"{key}.surface", o["surface"], surface_index, "surface")
        obj = Obj(shape, center, hs, mat, surf)
        if not _inside_box(np.array(center), half_arr, 0.0) or np.any(
            np.abs(np.array(center)) + np.array(hs) >= half_arr
        ):
            raise _bad(path, key, "extends outside the container")
        for j, prev in enumerate(objects):
            if _overlap(obj, prev):
                raise _bad(path, key, f"overlaps objects[{j}]")
        objects.append(obj)

    # a scene used with --gensteps only needs no [source]
    source = (
        None
        if doc.get("source") is None
        else _parse_source(path, doc.get("source"), half_arr, objects)
    )

    max_bounce, hitmask, epsilon = _settings(doc, path)

    return Scene(
        name=name,
        path=path,
        sha256=sha256,
        materials=materials,
        material_index=material_index,
        surfaces=surfaces,
        surface_index=surface_index,
        container_half=half,
        container_material=cmat,
        container_surface=csurf,
        objects=objects,
        source=source,
        max_bounce=max_bounce,
        hitmask=hitmask,
        epsilon=float(EPS_DEFAULT) if epsilon is None else epsilon,
    )


def _settings(doc: dict[str, Any], path: Path) -> tuple[int, str, float | None]:
    """[settings]: max_bounce, hitmask, epsilon (mm, the minimum distance to a boundary;
    None: the scene kind's default)."""
    settings = doc.get("settings", {})
    if not isinstance(settings, dict):
        raise _bad(path, "settings", "must be a table")
    max_bounce = settings.get("max_bounce", 9)
    if (
        isinstance(max_bounce, bool)
        or not isinstance(max_bounce, int)
        or not 1 <= max_bounce <= 1000
    ):
        raise _bad(path, "settings.max_bounce", "must be an integer in 1..1000")
    hitmask = settings.get("hitmask", "SD")
    if not isinstance(hitmask, str):
        raise _bad(path, "settings.hitmask", "must be a string like \"SD\"")
    from engine.propagate.flags import parse_mask

    try:
        parse_mask(hitmask)
    except ValueError as err:
        raise _bad(path, "settings.hitmask", str(err)) from None

    eps = settings.get("epsilon")
    if eps is not None:
        eps = _num(path, "settings.epsilon", eps, bound=100.0)
        if not 1e-6 <= eps <= 100.0:
            raise _bad(path, "settings.epsilon", "must be within 1e-6..100 mm")
    return max_bounce, hitmask, eps


GDML_KEYS = ("gdml",)
SCENE_ONLY_KEYS = ("materials", "surfaces", "container", "objects")


def _gdml_scene(doc: dict[str, Any], path: Path, sha256: str, name: str) -> Scene:
    """A scene whose [geometry] gdml names a detector: materials, surfaces and volumes
    come from the GDML (engine.propagate.geometry.detector), [source] and [settings] from
    the scene; the source position is in world coordinates."""
    from engine.propagate.geometry import detector as D
    from engine.propagate.geometry import gdml as G
    from engine.propagate.geometry.check import check_overlaps

    geo = doc["geometry"]
    if not isinstance(geo, dict):
        raise _bad(path, "geometry", "must be a table with gdml = \"FILE\"")
    unknown = sorted(set(geo) - set(GDML_KEYS))
    if unknown:
        raise _bad(path, f"geometry.{unknown[0]}", "unknown key (known: gdml)")
    both = [k for k in SCENE_ONLY_KEYS if k in doc]
    if both:
        raise _bad(
            path,
            both[0],
            "a scene with [geometry] takes its volumes, materials and surfaces from the GDML",
        )
    rel = geo.get("gdml")
    if not isinstance(rel, str) or not rel or len(rel) > 4096:
        raise _bad(path, "geometry.gdml", "must be a file name (relative to the scene)")
    gpath = (path.parent / rel) if not Path(rel).is_absolute() else Path(rel)
    det = G.read(gpath)
    parts = D.build(det)
    check_overlaps(det, parts.geometry, points=parts.geometry.info.get("load_points", 8))
    try:
        gsha = hashlib.sha256(gpath.read_bytes()).hexdigest()
    except OSError as err:
        raise BadInput(f"cannot read: {err.strerror}", gpath) from None
    materials = [
        Material(n, props.astype(np.float32), icdf.astype(np.float32), phys)
        for n, props, icdf, phys in parts.materials
    ]
    g = parts.geometry
    hx, hy, hz = (float(max(abs(a), abs(b))) for a, b in zip(g.lo, g.hi, strict=True))
    half = (hx, hy, hz)
    surf_rows: list[tuple[str, tuple[float, float, float, float]]] = []
    for n, t in parts.surfaces:
        m0, m1, m2, m3 = (float(v) for v in t.mean(axis=1))
        surf_rows.append((n, (m0, m1, m2, m3)))
    tables = (
        np.stack([t for _, t in parts.surfaces]).astype(np.float32)
        if parts.surfaces
        else np.zeros((0, 4, WL_N), np.float32)
    )
    source = (
        None
        if doc.get("source") is None
        else _parse_source(path, doc.get("source"), np.array(half), [])
    )
    max_bounce, hitmask, eps = _settings(doc, path)
    if eps is None:  # a photon's float32 position is 2 um coarse at 20 m: stay above it
        eps = max(float(EPS_DEFAULT), 2.5e-6 * max(half))
    info = {
        "file": str(gpath),
        "sha256": gsha,
        **{k: v for k, v in parts.info.items() if k != "solid_index"},
    }
    return Scene(
        name=name,
        path=path,
        sha256=hashlib.sha256((sha256 + gsha).encode()).hexdigest(),
        materials=materials,
        material_index={m.name: i for i, m in enumerate(materials)},
        surfaces=surf_rows,
        surface_index={n: i for i, (n, _) in enumerate(surf_rows)},
        container_half=half,
        container_material=parts.world_material,
        container_surface=-1,
        objects=[],
        source=source,
        max_bounce=max_bounce,
        hitmask=hitmask,
        geometry=g,
        surface_tables=tables,
        epsilon=eps,
        gdml=info,
    )


def _parse_source(path: Path, s: Any, half: np.ndarray, objects: list[Obj]) -> Source:
    if not isinstance(s, dict):
        raise _bad(path, "source", "a [source] table is required")
    typ = s.get("type")
    if not isinstance(typ, str) or typ not in SOURCE_TYPES:
        raise _bad(path, "source.type", f"must be one of {', '.join(SOURCE_TYPES)}, got {typ!r}")
    pos = _vec3(path, "source.position", s.get("position", [0.0, 0.0, 0.0]))
    direction = None
    if s.get("direction") is not None:
        direction = _vec3(path, "source.direction", s["direction"])
        if np.linalg.norm(direction) == 0:
            raise _bad(path, "source.direction", "must not be zero")
    elif typ == "disc":
        raise _bad(path, "source.direction", "missing (a disc emits along its normal)")
    radius = _num(path, "source.radius", s.get("radius", 0.0))
    if typ == "disc" and radius < 0:
        raise _bad(path, "source.radius", "lengths must not be negative")
    if typ == "sphere" and radius == 0:
        raise _bad(path, "source.radius", "a sphere source needs a non-zero radius")
    wl = _num(path, "source.wavelength", s.get("wavelength", 420.0))
    if not WL_GRID[0] <= wl <= WL_GRID[-1]:
        raise _bad(
            path, "source.wavelength", f"must be within {WL_GRID[0]:.0f}..{WL_GRID[-1]:.0f} nm"
        )
    t = _num(path, "source.time", s.get("time", 0.0), bound=MAX_TIME_NS)
    photons = s.get("photons", 10000)
    if isinstance(photons, bool) or not isinstance(photons, int) or not 0 <= photons <= MAX_PHOTONS:
        raise _bad(path, "source.photons", f"must be an integer within 0..{MAX_PHOTONS}")
    pol = None
    if s.get("polarization") is not None:
        pol = _vec3(path, "source.polarization", s["polarization"])
        if direction is not None:
            d = np.array(direction) / np.linalg.norm(direction)
            if np.linalg.norm(np.array(pol) - np.dot(pol, d) * d) < 1e-6:
                raise _bad(path, "source.polarization", "must not be parallel to the direction")
    p = np.array(pos)
    extent: np.ndarray | float = abs(radius) if typ == "sphere" else 0.0
    if typ == "disc" and direction is not None:
        # a disc spans radius * sqrt(1 - d_a^2) along axis a (it is perpendicular to d)
        dn = np.array(direction) / np.linalg.norm(direction)
        extent = radius * np.sqrt(np.clip(1.0 - dn * dn, 0.0, 1.0))
    if not _inside_box(p, half, extent):
        raise _bad(path, "source.position", "source lies outside the container")
    return Source(typ, pos, direction, radius, wl, t, photons, pol)


def gensteps(src: Source, photons: int | None = None, material: int = 0) -> np.ndarray:
    """Torch gensteps (G,6,4) float32 in Opticks' quad6 layout (docs/opticks.md, "Torch gensteps").

    q0 (int32 view): gentype TORCH, trackid, material, numphoton; q1 pos, time; q2 mom,
    weight; q3 pol, wavelength; q4 unused (zenith/azimuth full range); q5 radius, distance,
    mode (1: isotropic), type (int32 view: disc 1, point 2, sphere 3). More photons than an
    int32 holds become several gensteps, as in Opticks.
    """
    n = src.photons if photons is None else photons
    counts = [MAX_PHOTONS_PER_GENSTEP] * (n // MAX_PHOTONS_PER_GENSTEP)
    if n % MAX_PHOTONS_PER_GENSTEP or not counts:
        counts.append(n % MAX_PHOTONS_PER_GENSTEP)
    gs = np.zeros((len(counts), 6, 4), dtype=np.float32)
    gi = gs.view(np.int32)
    d = np.array(src.direction if src.direction is not None else (0.0, 0.0, 1.0))
    d = d / np.linalg.norm(d)
    pol = np.zeros(3) if src.polarization is None else np.array(src.polarization)
    for g, c in enumerate(counts):
        gi[g, 0] = (GENTYPE_TORCH, 0, material, c)
        gs[g, 1] = (*src.position, src.time)
        gs[g, 2] = (*d, 1.0)
        gs[g, 3] = (*pol, src.wavelength)
        gs[g, 4] = (0.0, 1.0, 0.0, 1.0)
        gs[g, 5, :3] = (src.radius, 0.0, 1.0 if src.direction is None else 0.0)
        gi[g, 5, 3] = SOURCE_TYPES[src.type]
    return gs
