"""Read a GDML file into a ``Detector``: materials with their optical tables, optical
surfaces on skin and border surfaces, solids, and the logical-volume tree with its
placements, exactly as Geant4's G4GDMLParser reads them (docs/propagation.md, "Geometry").

Why its own reader: GDML is XML from outside. It is parsed with defusedxml (no DTD, no
entities), bounded in bytes, elements, nesting, names and values before anything is
built, and every quantity goes through ``units.evaluate`` (no eval). Geant4's conventions
are kept: a box's, tube's and cone's ``x``/``y``/``z`` are full lengths (halved), ``lunit``
and ``aunit`` default to mm and rad, a bare number is in internal units (mm, ns, MeV,
rad), a physvol's rotation (x, y, z) is applied as the inverse of Rz*Ry*Rx
(G4GDMLReadStructure::PhysvolRead) while a boolean's second solid is placed with Rz*Ry*Rx
itself (G4GDMLReadSolids::BooleanRead), property matrices pair photon energies with values.
A material named ``G4_...`` that the file does not define is a NIST material (no optical
properties: opaque). Whatever this reader cannot represent faithfully (a scale or
reflection, parameterised or replica volumes, an unknown solid) is refused, naming the
file and the element, never approximated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.errors import BadInput
from engine.propagate.geometry.units import evaluate, unit

MAX_BYTES = 64 * 2**20
MAX_ELEMENTS = 2_000_000
MAX_XML_DEPTH = 32
MAX_NAME = 256
MAX_MATRIX = 100_000  # values in one matrix
MAX_FACETS = 200_000  # facets in one tessellated solid
MAX_ZPLANES = 64
SOLID_TAGS = (
    "box",
    "tube",
    "cone",
    "sphere",
    "orb",
    "ellipsoid",
    "polycone",
    "torus",
    "tessellated",
    "union",
    "subtraction",
    "intersection",
)


@dataclass
class Table:
    """A property vector: photon energies (MeV, ascending) and values."""

    energy: np.ndarray
    value: np.ndarray


@dataclass
class GMaterial:
    name: str
    density: float = 0.0  # internal units (MeV ns^2 / mm^5): only ratios are used
    temperature: float = 293.15  # kelvin (Geant4's default NTP temperature)
    props: dict[str, Table] = field(default_factory=dict)
    consts: dict[str, float] = field(default_factory=dict)
    nist: bool = False


@dataclass
class GSurface:
    name: str
    model: str = "glisur"
    finish: str = "polished"
    type: str = "dielectric_dielectric"
    value: float = 1.0  # sigma_alpha (unified) or polish (glisur)
    props: dict[str, Table] = field(default_factory=dict)
    consts: dict[str, float] = field(default_factory=dict)


@dataclass
class GSolid:
    name: str
    kind: str
    p: dict[str, Any] = field(default_factory=dict)  # internal units; booleans: see read


@dataclass
class GPhysvol:
    name: str
    volume: str
    copynumber: int
    rot: np.ndarray  # (3,3) direct: x_mother = rot @ x_daughter + pos
    pos: np.ndarray  # (3,)


@dataclass
class GVolume:
    name: str
    material: str
    solid: str
    daughters: list[GPhysvol] = field(default_factory=list)


@dataclass
class Detector:
    path: Path
    materials: dict[str, GMaterial]
    surfaces: dict[str, GSurface]
    solids: dict[str, GSolid]
    volumes: dict[str, GVolume]
    world: str
    skins: dict[str, str]  # logical volume -> optical surface
    borders: dict[tuple[str, str], str]  # (physvol, physvol) -> optical surface
    physvols: dict[str, GPhysvol]  # by name (the first of a name, as Geant4's store finds it)


def rotation(angles: tuple[float, float, float]) -> np.ndarray:
    """CLHEP's rotateX, rotateY, rotateZ in turn: Rz @ Ry @ Rx (G4GDMLReadDefine)."""
    x, y, z = angles
    cx, sx, cy, sy, cz, sz = (
        math.cos(x),
        math.sin(x),
        math.cos(y),
        math.sin(y),
        math.cos(z),
        math.sin(z),
    )
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _tag(el: Any) -> str:
    t = el.tag if isinstance(el.tag, str) else ""
    return t.rsplit("}", 1)[-1]


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.names: dict[str, float] = {}
        self.positions: dict[str, np.ndarray] = {}
        self.rotations: dict[str, np.ndarray] = {}
        self.scales: dict[str, np.ndarray] = {}
        self.matrices: dict[str, np.ndarray] = {}
        self.matrix_cols: dict[str, int] = {}

    def bad(self, where: str, why: str) -> BadInput:
        return BadInput(f"{where}: {why}", self.path)

    # ---------------------------------------------------------------- attributes
    def name(self, el: Any, where: str, required: bool = True) -> str:
        n = el.get("name")
        if n is None:
            if required:
                raise self.bad(where, f"<{_tag(el)}> has no name")
            return ""
        if not 0 < len(n) <= MAX_NAME:
            raise self.bad(where, f"a name must have 1..{MAX_NAME} characters")
        return n

    def ref(self, el: Any, where: str) -> str:
        r = el.get("ref")
        if r is None or not 0 < len(r) <= MAX_NAME:
            raise self.bad(where, f"<{_tag(el)}> needs a ref of 1..{MAX_NAME} characters")
        return r

    def num(
        self, el: Any, attr: str, where: str, default: float | None = None, scale: float = 1.0
    ) -> float:
        text = el.get(attr)
        if text is None:
            if default is None:
                raise self.bad(where, f"missing attribute {attr!r}")
            return default
        try:
            return evaluate(text, self.names, f"{where} {attr}") * scale
        except BadInput as err:
            raise BadInput(err.message, self.path) from None

    def unit_of(
        self, el: Any, attr: str, kind: str, where: str, default: str | None = None
    ) -> float:
        try:
            return unit(el.get(attr, default), kind, where)
        except BadInput as err:
            raise BadInput(err.message, self.path) from None

    # ---------------------------------------------------------------- define
    def vector(self, el: Any, where: str, kind: str) -> np.ndarray:
        u = self.unit_of(el, "unit", "unit", where, None)
        return np.array([self.num(el, a, where, 0.0) * u for a in "xyz"])

    def define(self, root: Any) -> None:
        for el in root:
            tag = _tag(el)
            where = f"define/{tag}"
            if tag in ("constant", "variable"):
                n = self.name(el, where)
                self.names[n] = self.num(el, "value", f"{where} {n}")
            elif tag == "quantity":
                n = self.name(el, where)
                u = self.unit_of(el, "unit", "unit", f"{where} {n}")
                self.names[n] = self.num(el, "value", f"{where} {n}") * u
            elif tag == "position":
                self.positions[self.name(el, where)] = self.vector(el, where, "position")
            elif tag == "rotation":
                self.rotations[self.name(el, where)] = self.vector(el, where, "rotation")
            elif tag == "scale":
                n = self.name(el, where)
                self.scales[n] = np.array([self.num(el, a, f"{where} {n}", 1.0) for a in "xyz"])
            elif tag == "matrix":
                n = self.name(el, where)
                cols = int(self.num(el, "coldim", f"{where} {n}", 1.0))
                text = el.get("values", "")
                toks = text.split()
                if not 1 <= cols <= 16 or len(toks) > MAX_MATRIX or not toks or len(toks) % cols:
                    raise self.bad(
                        f"{where} {n}", f"needs 1..{MAX_MATRIX} values in rows of coldim ({cols})"
                    )
                vals = np.array([self.num_text(t, f"{where} {n}") for t in toks])
                self.matrices[n] = vals.reshape(-1, cols)
                self.matrix_cols[n] = cols
            elif tag == "expression":
                n = self.name(el, where)
                self.names[n] = self.num_text(el.text or "", f"{where} {n}")
            else:
                raise self.bad(where, f"unknown element <{tag}> in <define>")

    def num_text(self, text: str, where: str) -> float:
        try:
            return evaluate(text, self.names, where)
        except BadInput as err:
            raise BadInput(err.message, self.path) from None

    # ---------------------------------------------------------------- materials
    def properties(self, el: Any, where: str) -> tuple[dict[str, Table], dict[str, float]]:
        props: dict[str, Table] = {}
        consts: dict[str, float] = {}
        for p in el:
            if _tag(p) != "property":
                continue
            n = self.name(p, where)
            r = self.ref(p, f"{where} property {n}")
            if r not in self.matrices:
                raise self.bad(f"{where} property {n}", f"no <matrix> named {r!r}")
            m = self.matrices[r]
            if m.shape[1] == 1:
                if m.shape[0] != 1:
                    raise self.bad(f"{where} property {n}", "a constant property needs one value")
                consts[n] = float(m[0, 0])
                continue
            if m.shape[1] != 2 or m.shape[0] < 1:
                raise self.bad(f"{where} property {n}", "a property vector needs coldim 2")
            e, v = m[:, 0], m[:, 1]
            if np.any(e <= 0) or np.any(np.diff(e) <= 0):
                raise self.bad(
                    f"{where} property {n}", "photon energies must be positive and increasing"
                )
            props[n] = Table(e.copy(), v.copy())
        return props, consts

    def materials(self, root: Any, out: dict[str, GMaterial]) -> None:
        for el in root:
            tag = _tag(el)
            if tag in ("isotope", "element"):
                continue
            where = f"materials/{tag}"
            if tag != "material":
                raise self.bad(where, f"unknown element <{tag}> in <materials>")
            n = self.name(el, where)
            m = GMaterial(n)
            for c in el:
                ct = _tag(c)
                if ct == "D":
                    u = self.unit_of(c, "unit", "unit", f"material {n} D", "g/cm3")
                    m.density = self.num(c, "value", f"material {n} D") * u
                elif ct == "T":
                    u = self.unit_of(c, "unit", "unit", f"material {n} T", "K")
                    m.temperature = self.num(c, "value", f"material {n} T") * u
            m.props, m.consts = self.properties(el, f"material {n}")
            out[n] = m

    # ---------------------------------------------------------------- solids
    def solids(self, root: Any, solids: dict[str, GSolid], surfaces: dict[str, GSurface]) -> None:
        for el in root:
            tag = _tag(el)
            where = f"solids/{tag}"
            if tag == "opticalsurface":
                n = self.name(el, where)
                s = GSurface(
                    n,
                    el.get("model", "glisur"),
                    el.get("finish", "polished"),
                    el.get("type", "dielectric_dielectric"),
                    self.num(el, "value", f"opticalsurface {n}", 1.0),
                )
                s.props, s.consts = self.properties(el, f"opticalsurface {n}")
                surfaces[n] = s
                continue
            if tag not in SOLID_TAGS:
                raise self.bad(where, f"unknown solid <{tag}> (supported: {', '.join(SOLID_TAGS)})")
            n = self.name(el, where)
            w = f"solid {n}"
            lu = self.unit_of(el, "lunit", "lunit", w, None)
            au = self.unit_of(el, "aunit", "aunit", w, None)
            L = lambda a, d=None, el=el, w=w, lu=lu: self.num(el, a, w, d, lu)  # noqa: E731
            A = lambda a, d=None, el=el, w=w, au=au: self.num(el, a, w, d, au)  # noqa: E731
            p: dict[str, Any]
            if tag == "box":
                p = {"hx": L("x") / 2, "hy": L("y") / 2, "hz": L("z") / 2}
            elif tag == "tube":
                p = {
                    "rmin": L("rmin", 0.0),
                    "rmax": L("rmax"),
                    "hz": L("z") / 2,
                    "phi0": A("startphi", 0.0),
                    "dphi": A("deltaphi", 2 * math.pi),
                }
            elif tag == "cone":
                p = {
                    "rmin1": L("rmin1", 0.0),
                    "rmax1": L("rmax1"),
                    "rmin2": L("rmin2", 0.0),
                    "rmax2": L("rmax2"),
                    "hz": L("z") / 2,
                    "phi0": A("startphi", 0.0),
                    "dphi": A("deltaphi", 2 * math.pi),
                }
            elif tag == "sphere":
                p = {
                    "rmin": L("rmin", 0.0),
                    "rmax": L("rmax"),
                    "phi0": A("startphi", 0.0),
                    "dphi": A("deltaphi", 2 * math.pi),
                    "theta0": A("starttheta", 0.0),
                    "dtheta": A("deltatheta", math.pi),
                }
            elif tag == "orb":
                p = {"r": L("r")}
            elif tag == "ellipsoid":
                p = {
                    "ax": L("ax"),
                    "by": L("by"),
                    "cz": L("cz"),
                    "zcut1": L("zcut1", 0.0),
                    "zcut2": L("zcut2", 0.0),
                }
            elif tag == "torus":
                p = {
                    "rmin": L("rmin", 0.0),
                    "rmax": L("rmax"),
                    "rtor": L("rtor"),
                    "phi0": A("startphi", 0.0),
                    "dphi": A("deltaphi", 2 * math.pi),
                }
            elif tag == "polycone":
                planes = []
                for z in el:
                    if _tag(z) == "zplane":
                        planes.append(
                            (
                                self.num(z, "rmin", w, 0.0, lu),
                                self.num(z, "rmax", w, None, lu),
                                self.num(z, "z", w, None, lu),
                            )
                        )
                if not 2 <= len(planes) <= MAX_ZPLANES:
                    raise self.bad(w, f"a polycone needs 2..{MAX_ZPLANES} <zplane>s")
                p = {
                    "phi0": A("startphi", 0.0),
                    "dphi": A("deltaphi", 2 * math.pi),
                    "planes": planes,
                }
            elif tag == "tessellated":
                p = {"facets": self.facets(el, w)}
            else:  # union, subtraction, intersection
                p = self.boolean(el, w, solids)
            solids[n] = GSolid(n, tag, p)

    def facets(self, el: Any, where: str) -> np.ndarray:
        tris: list[np.ndarray] = []
        for f in el:
            t = _tag(f)
            if t not in ("triangular", "quadrangular"):
                raise self.bad(where, f"unknown facet <{t}>")
            k = 3 if t == "triangular" else 4
            vs = []
            for i in range(1, k + 1):
                r = f.get(f"vertex{i}")
                if r not in self.positions:
                    raise self.bad(where, f"facet vertex{i} {r!r} is no <position>")
                vs.append(self.positions[r])
            if f.get("type", "ABSOLUTE") == "RELATIVE":
                vs = [vs[0]] + [vs[0] + v for v in vs[1:]]
            tris.append(np.array(vs[:3]))
            if k == 4:
                tris.append(np.array([vs[0], vs[2], vs[3]]))
            if len(tris) > MAX_FACETS:
                raise self.bad(where, f"more than {MAX_FACETS} facets")
        if len(tris) < 4:
            raise self.bad(where, "a tessellated solid needs at least 4 facets")
        return np.array(tris)

    def placement(
        self, el: Any, where: str, prefix: str = ""
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """(position, rotation angles, has scale != 1) of a physvol or boolean child list."""
        pos, ang, scaled = np.zeros(3), np.zeros(3), False
        for c in el:
            t = _tag(c)
            if t == f"{prefix}position":
                pos = self.vector(c, where, "position")
            elif t == f"{prefix}positionref":
                r = self.ref(c, where)
                if r not in self.positions:
                    raise self.bad(where, f"no <position> named {r!r}")
                pos = self.positions[r]
            elif t == f"{prefix}rotation":
                ang = self.vector(c, where, "rotation")
            elif t == f"{prefix}rotationref":
                r = self.ref(c, where)
                if r not in self.rotations:
                    raise self.bad(where, f"no <rotation> named {r!r}")
                ang = self.rotations[r]
            elif t in (f"{prefix}scale", f"{prefix}scaleref"):
                s = (
                    np.array([self.num(c, a, where, 1.0) for a in "xyz"])
                    if t.endswith("scale")
                    else self.scales.get(self.ref(c, where), np.ones(3))
                )
                scaled = scaled or bool(np.any(s != 1.0))
        return pos, ang, scaled

    def boolean(self, el: Any, where: str, solids: dict[str, GSolid]) -> dict[str, Any]:
        first = second = None
        for c in el:
            if _tag(c) == "first":
                first = self.ref(c, where)
            elif _tag(c) == "second":
                second = self.ref(c, where)
        for r in (first, second):
            if r is None:
                raise self.bad(where, "a boolean solid needs <first> and <second>")
            if r not in solids:
                raise self.bad(where, f"no solid named {r!r} (defined before it)")
        pos, ang, scaled = self.placement(el, where)
        pos1, ang1, scaled1 = self.placement(el, where, "first")
        if scaled or scaled1:
            raise self.bad(where, "a scaled (reflected) boolean operand is not a rotation")
        return {
            "first": first,
            "second": second,
            "rot": rotation(tuple(ang)),
            "pos": pos,
            "rot1": rotation(tuple(ang1)),
            "pos1": pos1,
        }

    # ---------------------------------------------------------------- structure
    def structure(self, root: Any, d: Detector) -> None:
        for el in root:
            tag = _tag(el)
            where = f"structure/{tag}"
            if tag == "volume":
                n = self.name(el, where)
                w = f"volume {n}"
                mat = solid = None
                daughters: list[GPhysvol] = []
                for c in el:
                    ct = _tag(c)
                    if ct == "materialref":
                        mat = self.ref(c, w)
                    elif ct == "solidref":
                        solid = self.ref(c, w)
                    elif ct == "physvol":
                        daughters.append(self.physvol(c, w, d))
                    elif ct in ("replicavol", "paramvol", "divisionvol"):
                        raise self.bad(w, f"<{ct}> is not supported (place each copy as a physvol)")
                if mat is None or solid is None:
                    raise self.bad(w, "needs a <materialref> and a <solidref>")
                if solid not in d.solids:
                    raise self.bad(w, f"no solid named {solid!r}")
                if mat not in d.materials:
                    if not mat.startswith("G4_"):
                        raise self.bad(w, f"missing material {mat!r}")
                    d.materials[mat] = GMaterial(mat, nist=True)
                d.volumes[n] = GVolume(n, mat, solid, daughters)
            elif tag == "assembly":
                raise self.bad(where, "<assembly> is not supported")
            elif tag == "skinsurface":
                n = self.name(el, where)
                sp = el.get("surfaceproperty")
                if sp not in d.surfaces:
                    raise self.bad(f"skinsurface {n}", f"no <opticalsurface> named {sp!r}")
                lv = next((self.ref(c, n) for c in el if _tag(c) == "volumeref"), None)
                if lv is None or lv not in d.volumes:
                    raise self.bad(f"skinsurface {n}", f"no volume named {lv!r}")
                d.skins[lv] = sp
            elif tag == "bordersurface":
                n = self.name(el, where)
                sp = el.get("surfaceproperty")
                if sp not in d.surfaces:
                    raise self.bad(f"bordersurface {n}", f"no <opticalsurface> named {sp!r}")
                pvs = [self.ref(c, n) for c in el if _tag(c) == "physvolref"]
                if len(pvs) != 2:
                    raise self.bad(f"bordersurface {n}", "needs two <physvolref>s")
                d.borders[(pvs[0], pvs[1])] = sp
            else:
                raise self.bad(where, f"unknown element <{tag}> in <structure>")

    def physvol(self, el: Any, where: str, d: Detector) -> GPhysvol:
        lv = None
        for c in el:
            if _tag(c) == "volumeref":
                lv = self.ref(c, where)
            elif _tag(c) == "file":
                raise self.bad(where, "a physvol reading another file is not supported")
        if lv is None:
            raise self.bad(where, "physvol needs a <volumeref>")
        if lv not in d.volumes:
            raise self.bad(where, f"physvol places {lv!r}, which is not defined before it")
        n = el.get("name") or f"{lv}_PV"
        if len(n) > MAX_NAME:
            raise self.bad(where, f"a name must have 1..{MAX_NAME} characters")
        cn = self.num(el, "copynumber", f"{where} physvol {n}", 0.0)
        if cn != int(cn) or not -(2**31) <= cn < 2**31:
            raise self.bad(f"{where} physvol {n}", "copynumber must be an int32")
        pos, ang, scaled = self.placement(el, f"{where} physvol {n}")
        if scaled:
            raise self.bad(
                f"{where} physvol {n}", "placement is not a rotation (scale or reflection)"
            )
        pv = GPhysvol(n, lv, int(cn), rotation(tuple(ang)).T, pos)
        d.physvols.setdefault(n, pv)
        return pv


def _depth_and_count(root: Any, path: Path) -> None:
    stack = [(root, 1)]
    count = 0
    while stack:
        el, depth = stack.pop()
        count += 1
        if depth > MAX_XML_DEPTH:
            raise BadInput(f"XML nested deeper than {MAX_XML_DEPTH}", path)
        if count > MAX_ELEMENTS:
            raise BadInput(f"more than {MAX_ELEMENTS} XML elements", path)
        stack.extend((c, depth + 1) for c in el)


def parse(data: bytes, path: Path) -> Detector:
    """A Detector from GDML bytes; BadInput naming ``path`` and the element otherwise."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    if len(data) > MAX_BYTES:
        raise BadInput(f"GDML file is {len(data)} bytes; at most {MAX_BYTES}", path)
    try:
        root = fromstring(data, forbid_dtd=True)
    except DefusedXmlException as err:
        raise BadInput(f"GDML refused: {type(err).__name__}", path) from None
    except Exception as err:  # ParseError and whatever expat raises on garbage
        raise BadInput(f"GDML does not parse: {' '.join(str(err).split())[:160]}", path) from None
    if _tag(root) != "gdml":
        raise BadInput(f"not GDML: the root element is <{_tag(root)}>", path)
    _depth_and_count(root, path)
    r = _Reader(path)
    d = Detector(path, {}, {}, {}, {}, "", {}, {}, {})
    sections = {_tag(c): c for c in root}
    for c in root:
        t = _tag(c)
        if t not in ("define", "materials", "solids", "structure", "setup", "userinfo"):
            raise BadInput(f"unknown section <{t}>", path)
    if "define" in sections:
        r.define(sections["define"])
    if "materials" in sections:
        r.materials(sections["materials"], d.materials)
    if "solids" in sections:
        r.solids(sections["solids"], d.solids, d.surfaces)
    if "structure" not in sections or "setup" not in sections:
        raise BadInput("GDML needs <structure> and <setup>", path)
    r.structure(sections["structure"], d)
    world = next((c.get("ref") for c in sections["setup"] if _tag(c) == "world"), None)
    if world is None or world not in d.volumes:
        raise BadInput(f"setup: no world volume {world!r}", path)
    d.world = world
    return d


def read(path: Path) -> Detector:
    from engine.core.inputs import regular_file

    try:
        with regular_file(path) as fh:
            data = fh.read(MAX_BYTES + 1)
    except BadInput:
        raise
    except OSError as err:
        raise BadInput(f"cannot read: {err.strerror or err}", path) from None
    return parse(data, path)
