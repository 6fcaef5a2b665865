"""Example detectors written as GDML by code, not committed by hand (docs/propagation.md,
"Example detectors"): ``python -m engine.propagate.geometry.examples juno-like -o FILE``.

Why generated: a real detector file is megabytes of placements; the script is the source
of truth, the committed ``assets/scenes/juno-like.gdml`` is its output (a test checks they
agree), and the benchmark writes larger ones on the fly.

- ``tank(pmts)``: the Geant4 A/B detector. A steel tube (no RINDEX: opaque) holding water
  named "Water" (dispersive RINDEX, ABSLENGTH, no RAYLEIGH: Geant4 computes it), whose
  boundary with the steel has a 30 % specular skin (on the steel's logical volume: the
  "other" skin of G4OpBoundaryProcess's lookup); an acrylic sphere holding water, the
  photons' start; ``pmts`` ellipsoidal Pyrex PMTs in rings on the wall, each rotated to
  face the axis, with a photocathode skin (dispersive EFFICIENCY, copynumber = sensor
  id); a boolean absorber (box union tube, opaque) under the sphere.
- ``juno_like(pmts)``: a JUNO-like detector: a water pool (tube), an acrylic sphere (12 cm)
  of liquid scintillator (RINDEX, ABSLENGTH, RAYLEIGH, reemission with its spectrum), and
  ``pmts`` 20-inch PMTs (an ellipsoid union its neck, a tube) on a Fibonacci sphere of
  19.5 m facing the centre, copynumbers 0..pmts-1.
Quantities are written both ways GDML files have them: unit expressions (``2.952*eV``,
``lunit="mm"``) and bare numbers in Geant4's internal units (MeV, mm).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

HC_EV_NM = 1239.84198433


def angles_of(d: np.ndarray) -> tuple[float, float, float]:
    """GDML physvol rotation angles (rad) that place a daughter with the direct rotation
    ``d`` (x_mother = d x_daughter + pos): Geant4 applies the inverse of Rz*Ry*Rx, so
    Rz(c) Ry(b) Rx(a) = d^T."""
    r = d.T
    b = -math.asin(max(-1.0, min(1.0, r[2, 0])))
    a = math.atan2(r[2, 1], r[2, 2])
    c = math.atan2(r[1, 0], r[0, 0])
    return a, b, c


def _facing_axis(u: np.ndarray) -> np.ndarray:
    """A rotation taking the daughter's +z to -u (its front faces back along u)."""
    z = -u / np.linalg.norm(u)
    x = np.cross([0.0, 0.0, 1.0], z) if abs(z[2]) < 0.999 else np.array([1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def _matrix(name: str, nm: list[float], vals: list[float], unit_style: bool) -> str:
    rows = sorted(zip([HC_EV_NM / w for w in nm], vals, strict=True))
    if unit_style:
        text = " ".join(f"{e:.6g}*eV {v:.6g}" for e, v in rows)
    else:  # Geant4's writer: internal units, MeV
        text = " ".join(f"{e * 1e-6:.9g} {v:.6g}" for e, v in rows)
    return f'  <matrix name="{name}" coldim="2" values="{text}"/>'


WL = [200.0, 300.0, 350.0, 400.0, 450.0, 500.0, 600.0, 700.0, 800.0]


def _n_water(w: float) -> float:
    return 1.3199 + 3.2e3 / (w * w) + 1.0e8 / w**4  # a Cauchy fit close to water's


def _n_acrylic(w: float) -> float:
    return 1.4795 + 4.5e3 / (w * w)


def _n_ls(w: float) -> float:
    return 1.4665 + 5.8e3 / (w * w)


def _elements() -> str:
    return """  <element name="H" formula="H" Z="1"><atom value="1.008"/></element>
  <element name="C" formula="C" Z="6"><atom value="12.011"/></element>
  <element name="O" formula="O" Z="8"><atom value="15.999"/></element>
  <element name="Si" formula="Si" Z="14"><atom value="28.085"/></element>
  <element name="Fe" formula="Fe" Z="26"><atom value="55.845"/></element>"""


def _mat(name: str, density: float, fractions: dict[str, float], props: dict[str, str]) -> str:
    lines = [f'  <material name="{name}" state="solid">']
    lines += [f'   <property name="{k}" ref="{v}"/>' for k, v in props.items()]
    lines.append(f'   <D value="{density}" unit="g/cm3"/>')
    lines += [f'   <fraction n="{f}" ref="{e}"/>' for e, f in fractions.items()]
    lines.append("  </material>")
    return "\n".join(lines)


def _physvol(name: str, vol: str, pos: np.ndarray, rot: np.ndarray | None, copy: int) -> str:
    s = f'   <physvol name="{name}" copynumber="{copy}"><volumeref ref="{vol}"/>'
    if np.any(pos):
        s += f'<position name="{name}_p" x="{pos[0]:.3f}" y="{pos[1]:.3f}" z="{pos[2]:.3f}" unit="mm"/>'
    if rot is not None:
        a = angles_of(rot)
        s += (
            f'<rotation name="{name}_r" x="{math.degrees(a[0]):.6f}" y="{math.degrees(a[1]):.6f}"'
            f' z="{math.degrees(a[2]):.6f}" unit="deg"/>'
        )
    return s + "</physvol>"


def _doc(
    define: list[str], materials: list[str], solids: list[str], structure: list[str], world: str
) -> str:
    return "\n".join(
        [
            '<?xml version="1.0" encoding="UTF-8"?>',
            "<gdml>",
            " <define>",
            *define,
            " </define>",
            " <materials>",
            _elements(),
            *materials,
            " </materials>",
            " <solids>",
            *solids,
            " </solids>",
            " <structure>",
            *structure,
            " </structure>",
            f' <setup name="Default" version="1.0"><world ref="{world}"/></setup>',
            "</gdml>",
            "",
        ]
    )


def tank(pmts: int = 36, rings: int = 3) -> str:
    per = max(1, pmts // rings)
    define = [
        _matrix("RINDEX_water", WL, [_n_water(w) for w in WL], True),
        _matrix(
            "ABS_water",
            WL,
            [2000.0, 8000.0, 15000.0, 20000.0, 25000.0, 20000.0, 8000.0, 2000.0, 1000.0],
            False,
        ),
        _matrix("RINDEX_acrylic", WL, [_n_acrylic(w) for w in WL], True),
        _matrix(
            "ABS_acrylic",
            WL,
            [10.0, 300.0, 2000.0, 5000.0, 6000.0, 6000.0, 6000.0, 6000.0, 6000.0],
            True,
        ),
        _matrix("RINDEX_pyrex", [200.0, 800.0], [1.47, 1.47], True),
        _matrix("EFF_pmt", WL, [0.0, 0.05, 0.2, 0.28, 0.25, 0.18, 0.06, 0.01, 0.0], True),
        _matrix("REFL_pmt", [200.0, 800.0], [0.0, 0.0], True),
        _matrix("REFL_steel", [200.0, 800.0], [0.3, 0.3], True),
    ]
    materials = [
        _mat(
            "Water",
            1.0,
            {"H": 0.112, "O": 0.888},
            {"RINDEX": "RINDEX_water", "ABSLENGTH": "ABS_water"},
        ),
        _mat(
            "Acrylic",
            1.19,
            {"H": 0.08, "C": 0.6, "O": 0.32},
            {"RINDEX": "RINDEX_acrylic", "ABSLENGTH": "ABS_acrylic"},
        ),
        _mat("Pyrex", 2.23, {"Si": 0.47, "O": 0.53}, {"RINDEX": "RINDEX_pyrex"}),
        _mat("Steel", 7.9, {"Fe": 1.0}, {}),
        _mat("Rock", 2.6, {"Si": 0.47, "O": 0.53}, {}),
    ]
    solids = [
        ' <box name="WorldBox" x="2.4" y="2.4" z="2.4" lunit="m"/>',
        ' <tube name="TankTube" rmax="1010" z="2020" deltaphi="360" aunit="deg" lunit="mm"/>',
        ' <tube name="WaterTube" rmax="1000" z="2000" deltaphi="2*pi"/>',
        ' <orb name="AcrylicBall" r="400" lunit="mm"/>',
        ' <sphere name="InnerBall" rmax="38*cm" deltaphi="360" deltatheta="180" aunit="deg"/>',
        ' <ellipsoid name="PmtBulb" ax="100" by="100" cz="60" zcut1="-40" zcut2="60" lunit="mm"/>',
        ' <box name="AbsPlate" x="400" y="400" z="40"/>',
        ' <tube name="AbsPost" rmax="60" z="300" deltaphi="2*pi"/>',
        ' <union name="Absorber"><first ref="AbsPlate"/><second ref="AbsPost"/>'
        '<position name="AbsPostPos" z="170"/></union>',
        ' <opticalsurface name="Photocathode" model="unified" finish="polished" '
        'type="dielectric_metal" value="0"><property name="EFFICIENCY" ref="EFF_pmt"/>'
        '<property name="REFLECTIVITY" ref="REFL_pmt"/></opticalsurface>',
        ' <opticalsurface name="SteelWall" model="glisur" finish="polished" '
        'type="dielectric_metal" value="1"><property name="REFLECTIVITY" ref="REFL_steel"/>'
        '</opticalsurface>',
    ]
    structure = [
        '  <volume name="PMT"><materialref ref="Pyrex"/><solidref ref="PmtBulb"/></volume>',
        '  <volume name="Absorber"><materialref ref="Steel"/><solidref ref="Absorber"/></volume>',
        '  <volume name="Inner"><materialref ref="Water"/><solidref ref="InnerBall"/></volume>',
        '  <volume name="Acrylic"><materialref ref="Acrylic"/><solidref ref="AcrylicBall"/>',
        '   <physvol name="inner_pv"><volumeref ref="Inner"/></physvol>',
        '  </volume>',
        '  <volume name="Water"><materialref ref="Water"/><solidref ref="WaterTube"/>',
        '   <physvol name="acrylic_pv"><volumeref ref="Acrylic"/><position name="ap" z="100"/></physvol>',
        _physvol("absorber_pv", "Absorber", np.array([0.0, 0.0, -700.0]), None, 0),
    ]
    copy = 0
    zs = np.linspace(-600.0, 600.0, rings) if rings > 1 else np.array([0.0])
    for ring, z in enumerate(zs):
        for k in range(per):
            phi = 2 * math.pi * (k + 0.5 * (ring % 2)) / per
            u = np.array([math.cos(phi), math.sin(phi), 0.0])
            structure.append(
                _physvol(f"pmt_{copy}", "PMT", u * 935.0 + [0.0, 0.0, z], _facing_axis(u), copy)
            )
            copy += 1
    structure += [
        "  </volume>",
        '  <volume name="Tank"><materialref ref="Steel"/><solidref ref="TankTube"/>',
        '   <physvol name="water_pv"><volumeref ref="Water"/></physvol>',
        "  </volume>",
        '  <volume name="World"><materialref ref="Rock"/><solidref ref="WorldBox"/>',
        '   <physvol name="tank_pv"><volumeref ref="Tank"/></physvol>',
        "  </volume>",
        '  <skinsurface name="pmt_skin" surfaceproperty="Photocathode"><volumeref ref="PMT"/></skinsurface>',
        '  <skinsurface name="steel_skin" surfaceproperty="SteelWall"><volumeref ref="Tank"/></skinsurface>',
    ]
    return _doc(define, materials, solids, structure, "World")


def fibonacci(n: int) -> np.ndarray:
    """n unit vectors spread evenly over the sphere (the golden-angle spiral)."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    r = np.sqrt(1.0 - z * z)
    phi = k * math.pi * (3.0 - math.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def juno_like(pmts: int = 2000, radius: float = 19500.0, scale: float = 1.0) -> str:
    """``scale`` multiplies the PMT's size (the benchmark keeps the photocathode coverage
    fixed: scale = sqrt(2000 / pmts))."""
    ls_wl = [300.0, 350.0, 380.0, 400.0, 420.0, 440.0, 460.0, 500.0, 600.0, 800.0]
    define = [
        _matrix("RINDEX_water", WL, [_n_water(w) for w in WL], True),
        _matrix(
            "ABS_water",
            WL,
            [5000.0, 20000.0, 40000.0, 60000.0, 70000.0, 60000.0, 20000.0, 5000.0, 2000.0],
            False,
        ),
        _matrix("RINDEX_acrylic", WL, [_n_acrylic(w) for w in WL], True),
        _matrix(
            "ABS_acrylic",
            WL,
            [10.0, 500.0, 5000.0, 10000.0, 12000.0, 12000.0, 12000.0, 12000.0, 12000.0],
            True,
        ),
        _matrix("RINDEX_ls", ls_wl, [_n_ls(w) for w in ls_wl], True),
        _matrix(
            "ABS_ls",
            ls_wl,
            [0.1, 1.0, 100.0, 15000.0, 22000.0, 25000.0, 26000.0, 27000.0, 27000.0, 27000.0],
            True,
        ),
        _matrix(
            "RAYLEIGH_ls",
            ls_wl,
            [
                5000.0,
                10000.0,
                15000.0,
                20000.0,
                27000.0,
                32000.0,
                38000.0,
                50000.0,
                100000.0,
                300000.0,
            ],
            True,
        ),
        _matrix("REEM_ls", ls_wl, [0.8, 0.8, 0.7, 0.5, 0.3, 0.1, 0.0, 0.0, 0.0, 0.0], True),
        _matrix("SPECTRUM_ls", ls_wl, [0.0, 0.0, 0.05, 0.5, 1.0, 0.8, 0.5, 0.15, 0.0, 0.0], True),
        _matrix("RINDEX_pyrex", [200.0, 800.0], [1.48, 1.48], True),
        _matrix("EFF_pmt", WL, [0.0, 0.02, 0.22, 0.3, 0.28, 0.2, 0.07, 0.01, 0.0], True),
        _matrix("REFL_pmt", [200.0, 800.0], [0.0, 0.0], True),
        '  <matrix name="YIELD_ls" coldim="1" values="10000/MeV"/>',
        '  <matrix name="TAU1_ls" coldim="1" values="4.6*ns"/>',
    ]
    materials = [
        _mat(
            "Water",
            1.0,
            {"H": 0.112, "O": 0.888},
            {"RINDEX": "RINDEX_water", "ABSLENGTH": "ABS_water"},
        ),
        _mat(
            "Acrylic",
            1.19,
            {"H": 0.08, "C": 0.6, "O": 0.32},
            {"RINDEX": "RINDEX_acrylic", "ABSLENGTH": "ABS_acrylic"},
        ),
        _mat(
            "LS",
            0.86,
            {"H": 0.12, "C": 0.88},
            {
                "RINDEX": "RINDEX_ls",
                "ABSLENGTH": "ABS_ls",
                "RAYLEIGH": "RAYLEIGH_ls",
                "REEMISSIONPROB": "REEM_ls",
                "SCINTILLATIONCOMPONENT1": "SPECTRUM_ls",
                "SCINTILLATIONYIELD": "YIELD_ls",
                "SCINTILLATIONTIMECONSTANT1": "TAU1_ls",
            },
        ),
        _mat("Pyrex", 2.23, {"Si": 0.47, "O": 0.53}, {"RINDEX": "RINDEX_pyrex"}),
        _mat("Rock", 2.6, {"Si": 0.47, "O": 0.53}, {}),
    ]
    solids = [
        ' <box name="WorldBox" x="44" y="44" z="44" lunit="m"/>',
        ' <tube name="PoolTube" rmax="21" z="42" deltaphi="360" aunit="deg" lunit="m"/>',
        ' <orb name="AcrylicBall" r="17820"/>',
        ' <orb name="LSBall" r="17.7*m"/>',
        f' <ellipsoid name="PmtBulb" ax="{254 * scale:.6g}" by="{254 * scale:.6g}" '
        f'cz="{190 * scale:.6g}" lunit="mm"/>',
        f' <tube name="PmtNeck" rmax="{80 * scale:.6g}" z="{300 * scale:.6g}" deltaphi="2*pi"/>',
        ' <union name="PmtSolid"><first ref="PmtBulb"/><second ref="PmtNeck"/>'
        f'<position name="NeckPos" z="{-300 * scale:.6g}" unit="mm"/></union>',
        ' <opticalsurface name="Photocathode" model="unified" finish="polished" '
        'type="dielectric_metal" value="0"><property name="EFFICIENCY" ref="EFF_pmt"/>'
        '<property name="REFLECTIVITY" ref="REFL_pmt"/></opticalsurface>',
    ]
    structure = [
        '  <volume name="PMT"><materialref ref="Pyrex"/><solidref ref="PmtSolid"/></volume>',
        '  <volume name="LS"><materialref ref="LS"/><solidref ref="LSBall"/></volume>',
        '  <volume name="Acrylic"><materialref ref="Acrylic"/><solidref ref="AcrylicBall"/>',
        '   <physvol name="ls_pv"><volumeref ref="LS"/></physvol>',
        "  </volume>",
        '  <volume name="Pool"><materialref ref="Water"/><solidref ref="PoolTube"/>',
        '   <physvol name="acrylic_pv"><volumeref ref="Acrylic"/></physvol>',
    ]
    for i, u in enumerate(fibonacci(pmts)):
        # the bulb's +z faces the centre; the neck (along -z) points outwards
        structure.append(_physvol(f"pmt_{i}", "PMT", u * radius, _facing_axis(u), i))
    structure += [
        "  </volume>",
        '  <volume name="World"><materialref ref="Rock"/><solidref ref="WorldBox"/>',
        '   <physvol name="pool_pv"><volumeref ref="Pool"/></physvol>',
        "  </volume>",
        '  <skinsurface name="pmt_skin" surfaceproperty="Photocathode"><volumeref ref="PMT"/></skinsurface>',
    ]
    return _doc(define, materials, solids, structure, "World")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m engine.propagate.geometry.examples",
        description="write an example detector as GDML",
    )
    ap.add_argument("which", choices=("tank", "juno-like"))
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--pmts", type=int, default=None)
    a = ap.parse_args(argv)
    text = tank(a.pmts or 36) if a.which == "tank" else juno_like(a.pmts or 2000)
    a.output.write_text(text)
    print(f"{a.output}: {a.which}, {len(text):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
