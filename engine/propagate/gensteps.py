"""Genstep files at the boundary: a delivery's ``gensteps.npy`` and its material map, read,
checked row by row and turned into what the generators may trust (docs/propagation.md,
"Gensteps").

Why here and strict: gensteps come from outside (a detector simulation, a delivery), and a
bad field would otherwise surface as NaN photons, an endless rejection loop or a read
outside the material table on the GPU. Every problem is one BadInput line naming the file,
the genstep row and the field (``gensteps.npy: row 12, q0.w numphoton: -5 is negative``);
the first bad row of the first failed check is reported.

Layout (Opticks' current quad6, ``sysrap/scerenkov.h``, ``sscint.h``, ``storch.h``): q0 as
int32 (gentype, trackid, matline, numphoton); q1 position, time; q2 DeltaPosition, step
length (torch: direction, weight); q3 PDG code (int), charge, weight, velocity (torch:
polarization, wavelength); q4/q5 per kind (kinds.py, cerenkov.py, scint.py, torch.py).

``matline`` is the scene material's index in the order the scene file lists them. A file
written by Geant4 holds Geant4's material indices instead; its map, a JSON sidecar
``<stem>.materials.json`` beside it (or ``--genstep-materials FILE``), lists Geant4's
material names in index order ``{"materials": ["G4_AIR", "Water", ...]}``, and each index a
genstep uses is mapped to the scene material of that name (an unknown name is refused).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.errors import BadInput
from engine.core.inputs import regular_file
from engine.core.memory import check_npy_header
from engine.propagate.generate.kinds import (
    CERENKOV,
    GENTYPES,
    KIND_NAMES,
    SCINTILLATION,
    TORCH,
    kinds,
)
from engine.propagate.scene import (
    MAX_PHOTONS,
    MAX_PHOTONS_PER_GENSTEP,
    MAX_TIME_NS,
    WL_GRID,
    Scene,
)

SIDECAR_SUFFIX = ".materials.json"
MAX_SIDECAR_BYTES = 1 << 20
MAX_SIDECAR_NAMES = 65536
MAX_STEP_PHOTONS = 10_000_000  # photons of one charged step: more is no physics
MAX_VELOCITY = 300.0  # mm/ns: a particle is slower than light (c = 299.79 mm/ns)
MAX_DECAY_NS = 1e6
TORCH_TYPES = (1, 2, 3)  # disc, point, sphere
# float fields read as integers, by (quad, lane), per kind: never checked for finiteness
_INT_FIELDS = {
    TORCH: {(0, 0), (0, 1), (0, 2), (0, 3), (5, 3)},
    CERENKOV: {(0, 0), (0, 1), (0, 2), (0, 3), (3, 0)},
    SCINTILLATION: {(0, 0), (0, 1), (0, 2), (0, 3), (3, 0), (4, 0)},
}
_NAMES = {
    (1, 0): "q1.x position",
    (1, 1): "q1.y position",
    (1, 2): "q1.z position",
    (1, 3): "q1.w time",
    (2, 0): "q2.x DeltaPosition",
    (2, 1): "q2.y DeltaPosition",
    (2, 2): "q2.z DeltaPosition",
    (2, 3): "q2.w step_length",
    (3, 1): "q3.y charge",
    (3, 2): "q3.z weight",
    (3, 3): "q3.w velocity",
    (4, 0): "q4.x",
    (4, 1): "q4.y",
    (4, 2): "q4.z",
    (4, 3): "q4.w",
    (5, 0): "q5.x",
    (5, 1): "q5.y",
    (5, 2): "q5.z",
    (5, 3): "q5.w",
}


@dataclass
class Gensteps:
    """Checked gensteps: ``array`` (G,6,4) float32 with matline as the scene's index."""

    array: np.ndarray
    photons: int
    kinds: dict[str, dict[str, int]] = field(default_factory=dict)
    material_map: str | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "rows": int(len(self.array)),
            "photons": self.photons,
            "kinds": self.kinds,
            "material_map": self.material_map,
        }


def sidecar_for(path: Path) -> Path:
    """The material map beside a genstep file: ``gensteps.npy`` -> ``gensteps.materials.json``."""
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def parse_material_map(data: bytes, path: Path | str) -> list[str]:
    """A material map's bytes: JSON ``{"materials": [name, ...]}`` in Geant4 index order."""
    if len(data) > MAX_SIDECAR_BYTES:
        raise BadInput(f"material map is {len(data)} bytes; at most {MAX_SIDECAR_BYTES}", path)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise BadInput(
            f"material map is not JSON: {' '.join(str(err).split())[:120]}", path
        ) from None
    names = doc.get("materials") if isinstance(doc, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadInput(
            'material map must be {"materials": ["name", ...]} (Geant4 index order)', path
        )
    if len(names) > MAX_SIDECAR_NAMES or any(not 0 < len(n) <= 256 for n in names):
        raise BadInput(
            f"material map: at most {MAX_SIDECAR_NAMES} names of 1..256 characters", path
        )
    return names


def read_material_map(path: Path) -> list[str]:
    with regular_file(path) as fh:
        data = fh.read(MAX_SIDECAR_BYTES + 1)
    return parse_material_map(data, path)


def read_array(path: Path) -> np.ndarray:
    """The raw (G,6,4) float32 array; BadInput for anything else (checked before loading)."""
    try:
        with regular_file(path) as fh:
            check_npy_header(fh, os.fstat(fh.fileno()).st_size, "gensteps", path)
        gs = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise BadInput(f"unreadable gensteps: {' '.join(str(err).split())[:160]}", path) from None
    if (
        not isinstance(gs, np.ndarray)
        or gs.ndim != 3
        or gs.shape[1:] != (6, 4)
        or gs.dtype != np.float32
    ):
        shape = getattr(gs, "shape", "?")
        raise BadInput(
            f"gensteps must be (G,6,4) float32, got {shape} {getattr(gs, 'dtype', '?')}", path
        )
    return np.ascontiguousarray(gs)


def load(path: Path, scene: Scene, materials: Path | None = None) -> Gensteps:
    """Read and check a genstep file for ``scene``; the material map is ``materials``, else
    the sidecar beside the file when there is one, else matline is the scene's index."""
    gs = read_array(path)
    names = None
    if materials is None and sidecar_for(path).is_file():
        materials = sidecar_for(path)
    if materials is not None:
        names = read_material_map(materials)
    return check(gs, scene, path, names, None if materials is None else str(materials))


class _Rows:
    """Collects the first bad row of a check and raises it as one line."""

    def __init__(self, path: Path | str) -> None:
        self.path = path

    def fail(self, bad: np.ndarray, fieldname: str, problem: Any) -> None:
        """``bad`` is a boolean per row; ``problem(row)`` the text for the first bad one."""
        rows = np.flatnonzero(bad)
        if rows.size:
            r = int(rows[0])
            text = problem(r) if callable(problem) else problem
            raise BadInput(f"row {r}, {fieldname}: {text}", self.path)


def check(
    gs: np.ndarray,
    scene: Scene,
    path: Path | str,
    geant4_names: list[str] | None = None,
    map_path: str | None = None,
) -> Gensteps:
    """Every check of the module docstring; returns a copy whose matline is the scene's."""
    gs = np.array(gs, dtype=np.float32, copy=True)
    gi = gs.view(np.int32)
    rows = _Rows(path)
    gentype = gi[:, 0, 0]
    kind = kinds(gentype)
    known = ", ".join(f"{c} {n}" for c, n in sorted(GENTYPES.items()))
    rows.fail(
        kind == 0, "q0.x gentype", lambda r: f"unknown gentype {int(gentype[r])} (known: {known})"
    )
    num = gi[:, 0, 3].astype(np.int64)
    rows.fail(num < 0, "q0.w numphoton", lambda r: f"{int(num[r])} is negative")
    step_kind = kind != TORCH
    rows.fail(
        step_kind & (num > MAX_STEP_PHOTONS),
        "q0.w numphoton",
        lambda r: f"{int(num[r])} photons from one step is absurd (at most {MAX_STEP_PHOTONS:,})",
    )
    rows.fail(num > MAX_PHOTONS_PER_GENSTEP, "q0.w numphoton", "exceeds an int32")
    total = int(num.sum())
    if total > MAX_PHOTONS:
        raise BadInput(f"gensteps hold {total} photons; at most {MAX_PHOTONS}", path)

    # finite floats (the integer lanes of each kind aside)
    for (qd, lane), name in _NAMES.items():
        isint = np.zeros(len(gs), bool)
        for k, lanes in _INT_FIELDS.items():
            if (qd, lane) in lanes:
                isint |= kind == k
        rows.fail(
            ~isint & ~np.isfinite(gs[:, qd, lane]),
            name,
            lambda r, qd=qd, lane=lane: f"{float(gs[r, qd, lane])!r} is not a finite number",
        )

    # materials: Geant4 indices through the map, else the scene's own indices
    matline = gi[:, 0, 2].astype(np.int64)
    nmat = len(scene.materials)
    if geant4_names is not None:
        rows.fail(
            (matline < 0) | (matline >= len(geant4_names)),
            "q0.z matline",
            lambda r: (
                f"Geant4 material index {int(matline[r])} is not in the material map "
                f"{map_path} ({len(geant4_names)} names)"
            ),
        )
        mapped = np.full(len(gs), -1, np.int64)
        for g4i in np.unique(matline):
            name = geant4_names[int(g4i)]
            if name not in scene.material_index:
                r = int(np.flatnonzero(matline == g4i)[0])
                raise BadInput(
                    f"row {r}, q0.z matline: Geant4 material {int(g4i)} {name!r} is "
                    f"not a scene material (scene has: {', '.join(scene.material_index)})",
                    path,
                )
            mapped[matline == g4i] = scene.material_index[name]
        matline = mapped
    else:
        rows.fail(
            (matline < 0) | (matline >= nmat),
            "q0.z matline",
            lambda r: (
                f"{int(matline[r])} is not a scene material index (0..{nmat - 1}, "
                f"the order of [materials] in {scene.path.name})"
            ),
        )
    gi[:, 0, 2] = matline.astype(np.int32)

    half = np.array(scene.container_half, np.float32)
    pos = np.abs(gs[:, 1, :3])
    rows.fail(
        np.any(pos >= half, axis=1),
        "q1 position",
        lambda r: (
            f"{gs[r, 1, :3].tolist()} lies outside the scene's container "
            f"(half size {list(scene.container_half)} mm)"
        ),
    )
    rows.fail(np.abs(gs[:, 1, 3]) > MAX_TIME_NS, "q1.w time", f"beyond +-{MAX_TIME_NS:g} ns")

    _check_torch(gs, kind == TORCH, rows)
    _check_steps(gs, (kind == CERENKOV) | (kind == SCINTILLATION), rows, half)
    _check_cerenkov(gs, kind == CERENKOV, rows, scene)
    _check_scint(gs, kind == SCINTILLATION, rows, scene)

    summary: dict[str, dict[str, int]] = {}
    for k, name in KIND_NAMES.items():
        sel = kind == k
        if sel.any():
            summary[name] = {"gensteps": int(sel.sum()), "photons": int(num[sel].sum())}
    return Gensteps(gs, total, summary, map_path)


def _check_torch(gs: np.ndarray, sel: np.ndarray, rows: _Rows) -> None:
    typ = gs.view(np.int32)[:, 5, 3]
    rows.fail(
        sel & ~np.isin(typ, TORCH_TYPES),
        "q5.w torch type",
        lambda r: f"{int(typ[r])} is not a torch type (1 disc, 2 point, 3 sphere)",
    )
    wl = gs[:, 3, 3]
    rows.fail(
        sel & ((wl < WL_GRID[0]) | (wl > WL_GRID[-1])),
        "q3.w wavelength",
        lambda r: f"{float(wl[r]):g} nm is outside {WL_GRID[0]:.0f}..{WL_GRID[-1]:.0f} nm",
    )
    rows.fail(sel & (np.abs(gs[:, 5, 0]) > 1e9), "q5.x radius", "beyond 1e9 mm")


def _check_steps(gs: np.ndarray, sel: np.ndarray, rows: _Rows, half: np.ndarray) -> None:
    """What Cerenkov and scintillation steps share: the step and the particle."""
    step = gs[:, 2, 3]
    rows.fail(sel & (step < 0), "q2.w step_length", lambda r: f"{float(step[r]):g} is negative")
    rows.fail(
        sel & (step > 2 * float(np.linalg.norm(half)) + 1.0),
        "q2.w step_length",
        lambda r: f"{float(step[r]):g} mm is longer than the container's diagonal",
    )
    # the displacement is at most the path (multiple scattering bends a step)
    dlen = np.linalg.norm(gs[:, 2, :3].astype(np.float64), axis=1)
    rows.fail(
        sel & (dlen > step * (1 + 1e-3) + 1e-3),
        "q2 DeltaPosition",
        lambda r: f"its length {dlen[r]:g} mm exceeds the step length {float(step[r]):g} mm",
    )
    end = np.abs(gs[:, 1, :3] + gs[:, 2, :3])
    rows.fail(
        sel & np.any(end >= half + 1e-3, axis=1),
        "q2 DeltaPosition",
        lambda r: "the step ends outside the scene's container",
    )
    rows.fail(
        sel & (np.abs(gs[:, 3, 1]) > 1000),
        "q3.y charge",
        lambda r: f"{float(gs[r, 3, 1]):g} is no particle's charge",
    )


def _velocity(gs: np.ndarray, sel: np.ndarray, rows: _Rows, qd: int, lane: int, name: str) -> None:
    v = gs[:, qd, lane]
    rows.fail(
        sel & ((v <= 0) | (v > MAX_VELOCITY)),
        name,
        lambda r: f"{float(v[r]):g} mm/ns is no particle velocity (0 < v <= c)",
    )


def _check_cerenkov(gs: np.ndarray, sel: np.ndarray, rows: _Rows, scene: Scene) -> None:
    if not sel.any():
        return
    step = gs[:, 2, 3]
    rows.fail(sel & (step <= 0), "q2.w step_length", "a Cerenkov step must have a length")
    dlen = np.linalg.norm(gs[:, 2, :3].astype(np.float64), axis=1)
    rows.fail(sel & (dlen <= 0), "q2 DeltaPosition", "zero: a Cerenkov step needs a direction")
    _velocity(gs, sel, rows, 3, 3, "q3.w preVelocity")
    _velocity(gs, sel, rows, 5, 3, "q5.w postVelocity")
    bi, wmin, wmax = gs[:, 4, 0], gs[:, 4, 1], gs[:, 4, 2]
    rows.fail(
        sel & (bi < 0.999),
        "q4.x BetaInverse",
        lambda r: f"{float(bi[r]):g} means faster than light (1/beta >= 1)",
    )
    lo, hi = float(WL_GRID[0]), float(WL_GRID[-1])
    rows.fail(
        sel & ((wmin < lo) | (wmin > hi)),
        "q4.y Wmin",
        lambda r: f"{float(wmin[r]):g} nm is outside {lo:.0f}..{hi:.0f} nm",
    )
    rows.fail(
        sel & ((wmax < lo) | (wmax > hi)),
        "q4.z Wmax",
        lambda r: f"{float(wmax[r]):g} nm is outside {lo:.0f}..{hi:.0f} nm",
    )
    rows.fail(sel & (wmax <= wmin), "q4.z Wmax", "must exceed Wmin")
    maxsin2 = gs[:, 5, 0]
    rows.fail(
        sel & ((maxsin2 <= 0) | (maxsin2 > 1)),
        "q5.x maxSin2",
        lambda r: f"{float(maxsin2[r]):g} is outside (0, 1]",
    )
    # near threshold G4Cerenkov's yield at one end of a step may come out slightly negative
    # (its linear interpolation); the position sampling needs the larger one positive
    for lane, name in ((1, "q5.y MeanNumberOfPhotons1"), (2, "q5.z MeanNumberOfPhotons2")):
        v = gs[:, 5, lane]
        rows.fail(
            sel & (np.abs(v) > 1e6),
            name,
            lambda r, v=v: f"{float(v[r]):g} photons/mm is outside -1e6..1e6",
        )
    rows.fail(
        sel & (np.maximum(gs[:, 5, 1], gs[:, 5, 2]) <= 0) & (gs.view(np.int32)[:, 0, 3] > 0),
        "q5.y MeanNumberOfPhotons1",
        "neither end of the step yields photons, yet it has some",
    )
    # the particle must be above threshold somewhere in [Wmin, Wmax] of its material, and
    # maxSin2 must bound sin^2(theta) there, else the rejection sampling cannot be right
    mat = gs.view(np.int32)[:, 0, 2]
    nmax = np.zeros(len(gs))
    for m in np.unique(mat[sel]):
        r = np.flatnonzero(sel & (mat == m))
        nmax[r] = _range_max(
            scene.materials[int(m)].props[0].astype(np.float64), wmin[r] - 1.0, wmax[r] + 1.0
        )
    names = [m.name for m in scene.materials]
    rows.fail(
        sel & (bi >= nmax),
        "q4.x BetaInverse",
        lambda r: (
            f"{float(bi[r]):.6g} is at or above {names[int(mat[r])]}'s largest "
            f"refractive index {nmax[r]:.6g} in {float(wmin[r]):g}..{float(wmax[r]):g} "
            "nm: the particle is below the Cerenkov threshold over the whole range"
        ),
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        s2 = 1.0 - (bi.astype(np.float64) / nmax) ** 2
    rows.fail(
        sel & (maxsin2 < s2 - 1e-3),
        "q5.x maxSin2",
        lambda r: (
            f"{float(maxsin2[r]):.6g} is below 1 - (BetaInverse/nMax)^2 = {s2[r]:.6g} "
            f"for {names[int(mat[r])]}"
        ),
    )
    num = gs.view(np.int32)[:, 0, 3].astype(np.float64)
    mean = np.maximum(0.0, 0.5 * (gs[:, 5, 1].astype(np.float64) + gs[:, 5, 2]) * step)
    rows.fail(
        sel & (num > mean + 10 * np.sqrt(mean) + 20),
        "q0.w numphoton",
        lambda r: (
            f"{int(num[r])} is absurd for MeanNumberOfPhotons over the step "
            f"(Poisson mean {mean[r]:.4g})"
        ),
    )


def _range_max(values: np.ndarray, lo_nm: np.ndarray, hi_nm: np.ndarray) -> np.ndarray:
    """Largest of ``values`` (on WL_GRID) between lo_nm and hi_nm, per row: a sparse table
    of maxima over power-of-two spans answers every row in O(1)."""
    n = len(values)
    table = [values]
    while 2 ** len(table) <= n:
        prev, h = table[-1], 2 ** (len(table) - 1)
        table.append(np.maximum(prev[:-h], prev[h:]))
    step = float(WL_GRID[1] - WL_GRID[0])
    i0 = np.clip(np.ceil((lo_nm - WL_GRID[0]) / step), 0, n - 1).astype(np.int64)
    i1 = np.clip(np.floor((hi_nm - WL_GRID[0]) / step), 0, n - 1).astype(np.int64)
    i1 = np.maximum(i0, i1)
    k = np.floor(np.log2(i1 - i0 + 1)).astype(np.int64)
    out = np.empty(len(i0))
    for lv in np.unique(k):
        sel = k == lv
        t = table[int(lv)]
        out[sel] = np.maximum(t[i0[sel]], t[i1[sel] - 2 ** int(lv) + 1])
    return out


def _check_scint(gs: np.ndarray, sel: np.ndarray, rows: _Rows, scene: Scene) -> None:
    if not sel.any():
        return
    step = gs[:, 2, 3]
    mv = gs[:, 3, 3]
    rows.fail(
        sel & (step > 0) & ((mv <= 0) | (mv > MAX_VELOCITY)),
        "q3.w meanVelocity",
        lambda r: f"{float(mv[r]):g} mm/ns is no particle velocity (0 < v <= c)",
    )
    comp = gs.view(np.int32)[:, 4, 0]
    rows.fail(
        sel & ((comp < 0) | (comp > 3)),
        "q4.x component",
        lambda r: f"{int(comp[r])} is not a scintillation component index (0..3)",
    )
    tau = gs[:, 5, 0]
    rows.fail(
        sel & ((tau < 0) | (tau > MAX_DECAY_NS)),
        "q5.x ScintillationTime",
        lambda r: f"{float(tau[r]):g} ns is outside 0..{MAX_DECAY_NS:g} ns",
    )
    mat = gs.view(np.int32)[:, 0, 2]
    for m in np.unique(mat[sel]):
        if scene.materials[int(m)].icdf[0] < 0:
            r = int(np.flatnonzero(sel & (mat == m))[0])
            raise BadInput(
                f"row {r}, q0.z matline: {scene.materials[int(m)].name} has no "
                "reemission_spectrum (or reemission_wavelength) to draw scintillation "
                "wavelengths from",
                rows.path,
            )


def pilot(gs: np.ndarray, photons: int) -> np.ndarray:
    """A small genstep set spread over the event (evenly spaced rows, counts capped so the
    total is at most ``photons``), for the disk-space pilot: the first 4096 photons of a
    muon's gensteps all come from its first centimetres."""
    num = gs.view(np.int32)[:, 0, 3]
    rows = np.flatnonzero(num > 0)
    if rows.size == 0:
        return gs[:0]
    k = min(rows.size, 64)
    pick = rows[np.linspace(0, rows.size - 1, k).round().astype(np.int64)]
    out = gs[pick].copy()
    cap = max(1, photons // k)
    out.view(np.int32)[:, 0, 3] = np.minimum(num[pick], cap)
    return out


def time_extent(gs: np.ndarray) -> float:
    """Latest generation time the gensteps can give (ns), for the record time domain:
    t0 + the step's transit + five decay times of a scintillation component."""
    if len(gs) == 0:
        return 0.0
    kind = kinds(gs.view(np.int32)[:, 0, 0])
    t = gs[:, 1, 3].astype(np.float64)
    extra = np.where(kind == SCINTILLATION, 5.0 * gs[:, 5, 0], 0.0)
    transit = np.where(kind != TORCH, gs[:, 2, 3] / 10.0, 0.0)  # at >= 10 mm/ns (beta > 0.03)
    return float(np.max(t + np.nan_to_num(extra) + np.nan_to_num(transit)))
