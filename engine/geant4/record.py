"""Geant4's optical photons as skydeck sees them: flags per step, and a skydeck event
directory, so ``skydeck-engine hits G4EVENT --vs SKYEVENT`` compares the two directly
(docs/geant4.md, "Histories").

Why inferred: geant4-pybind does not bind G4OpBoundaryProcess, so its status is read from
the step. Per optical step (``flag_of``): leaving the world is MI; a step ended by
OpAbsorption is AB, by OpRayleigh SC; at a geometric boundary a killed photon is SD when it
deposited energy (Geant4 deposits the photon's energy on detection), MI at a surface-less
container (the world has no refractive index), else SA; a surviving one is reflected when
the normal component of its direction changed sign: SR or DR at a surface (DR when the new
direction is not the mirror image), BR at a bare boundary, BT otherwise; a zero-length
boundary step gives no flag. The normal and the surface hit come from the scene's boxes and
spheres (``surface_at``), so this works for skydeck's own shapes only. Like skydeck, a
photon is stopped after ``max_bounce`` flags.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine import __version__
from engine.core.atomic import fsync_dir, remove_path, sweep_stale_temps, temp_name
from engine.propagate import flags as F
from engine.propagate.scene import HC_EV_NM, Scene


class Surfaces:
    """Which volume's boundary a point lies on, the face, and the outward normal there."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.vols: list[tuple[str, np.ndarray, np.ndarray]] = [
            ("box", np.zeros(3), np.array(scene.container_half, np.float64))
        ]
        for o in scene.objects:
            self.vols.append(
                (o.shape, np.array(o.center, np.float64), np.array(o.half_size, np.float64))
            )
        self.surface = [scene.container_surface] + [o.surface for o in scene.objects]

    def at(self, p: np.ndarray) -> tuple[int, int, np.ndarray]:
        best = (np.inf, 0, 0, np.array([0.0, 0.0, 1.0]))
        for v, (shape, c, h) in enumerate(self.vols):
            rel = p - c
            if shape == "box":
                gap = np.abs(np.abs(rel) - h)
                ax = int(np.argmin(gap))
                dist = float(gap[ax])
                sign = 1.0 if rel[ax] > 0 else -1.0
                normal = np.zeros(3)
                normal[ax] = sign
                face = 2 * ax + (1 if sign > 0 else 0)
            else:
                r = float(np.linalg.norm(rel))
                dist = abs(r - h[0])
                normal = rel / r if r > 0 else np.array([0.0, 0.0, 1.0])
                face = 0
            if dist < best[0]:
                best = (dist, v, face, normal)
        return best[1], best[2], best[3]


@dataclass
class Photons:
    """Per-photon record of a Geant4 run, in skydeck's photon layout."""

    n: int
    max_bounce: int
    ox: np.ndarray = field(init=False)
    seq: np.ndarray = field(init=False)
    nflag: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.ox = np.zeros((self.n, 4, 4), np.float32)
        self.seq = np.zeros(self.n, np.uint64)
        self.nflag = np.zeros(self.n, np.int32)
        u = self.ox.view(np.uint32)
        u[:, 3, 2] = np.arange(self.n, dtype=np.uint64).astype(np.uint32)

    def start(self, i: int, first: int, pos: Any, t: float, d: Any, pol: Any, wl: float) -> None:
        self.ox[i, 0] = (*pos, t)
        self.ox[i, 1] = (*d, 1.0)
        self.ox[i, 2] = (*pol, wl)
        u = self.ox.view(np.uint32)
        u[i, 3, 0] = first
        u[i, 3, 3] = first
        self.seq[i] = F.nibble(first)

    def flag(
        self,
        i: int,
        flag: int,
        boundary: int,
        sensor: int,
        pos: Any,
        t: float,
        d: Any,
        pol: Any,
        wl: float,
    ) -> bool:
        """Record a step's flag and the state after it; True when the bounce limit is hit."""
        k = int(self.nflag[i]) + 1
        self.nflag[i] = k
        if k < 16:
            self.seq[i] |= np.uint64(F.nibble(flag)) << np.uint64(4 * k)
        self.ox[i, 0] = (*pos, t)
        self.ox[i, 1, :3] = d
        self.ox[i, 2] = (*pol, wl)
        u = self.ox.view(np.uint32)
        u[i, 3, 0] = (boundary << 16) | flag
        if sensor:
            u[i, 3, 1] = sensor
        u[i, 3, 3] |= flag
        return k >= self.max_bounce


def wavelength(energy_mev: float) -> float:
    return HC_EV_NM / (energy_mev * 1e6)


def flag_of(g4: Any, step: Any, surfaces: Surfaces) -> tuple[int, int, int]:
    """(flag, boundary, sensor) of one optical photon step; flag 0: none."""
    post = step.GetPostStepPoint()
    status = post.GetStepStatus()
    if status == g4.fWorldBoundary:
        return F.MI, 0, 0
    proc = post.GetProcessDefinedStep()
    name = proc.GetProcessName() if proc is not None else ""
    if name == "OpAbsorption":
        return F.AB, 0, 0
    if name == "OpRayleigh":
        return F.SC, 0, 0
    if status != g4.fGeomBoundary or step.GetStepLength() <= 0:
        return 0, 0, 0
    p = post.GetPosition()
    vol, face, normal = surfaces.at(np.array([p.x, p.y, p.z]))
    track = step.GetTrack()
    has_surface = surfaces.surface[vol] >= 0
    if track.GetTrackStatus() == g4.G4TrackStatus.fStopAndKill:
        if step.GetTotalEnergyDeposit() > 0:
            return F.SD, vol + 1, vol * 8 + face + 1
        if vol == 0 and not has_surface:
            return F.MI, vol + 1, 0
        return F.SA, vol + 1, 0
    d0 = step.GetPreStepPoint().GetMomentumDirection()
    d1 = post.GetMomentumDirection()
    a = np.array([d0.x, d0.y, d0.z])
    b = np.array([d1.x, d1.y, d1.z])
    reflected = float(a @ normal) * float(b @ normal) < 0
    if has_surface:
        mirror = a - 2.0 * float(a @ normal) * normal
        return (F.SR if np.allclose(b, mirror, atol=1e-6) else F.DR), vol + 1, 0
    return (F.BR if reflected else F.BT), vol + 1, 0


def terminal_counts(fm_counts: dict[int, int]) -> dict[str, int]:
    out = {"SD": 0, "SA": 0, "AB": 0, "MI": 0, "truncated": 0}
    for fm, c in fm_counts.items():
        term = [k for k in ("SD", "SA", "AB", "MI") if fm >> F.FLAG_BITS[k] & 1]
        for k in term:
            out[k] += c
        if not term:
            out["truncated"] += c
    return out


def write_event(
    out: Path,
    scene: Scene,
    meta_extra: dict[str, Any],
    hitmask: int,
    photons: int,
    ht: np.ndarray,
    fm_counts: dict[int, int],
    ox: np.ndarray | None = None,
    seq: np.ndarray | None = None,
    gs: np.ndarray | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """A skydeck event directory (docs/propagation.md, "Event directory") written under a
    temporary name and renamed into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(out)
    tmp = temp_name(out)
    remove_path(tmp)
    tmp.mkdir(parents=True)
    try:
        np.save(tmp / "ht.npy", np.ascontiguousarray(ht, np.float32).reshape(-1, 4, 4))
        if ox is not None:
            np.save(tmp / "ox.npy", ox)
        if seq is not None:
            np.save(tmp / "seq.npy", seq)
        if gs is not None:
            np.save(tmp / "gs.npy", gs)
        for name, arr in (extra or {}).items():
            np.save(tmp / name, arr)
        meta: dict[str, Any] = {
            "photons": int(photons),
            "hits": int(len(ht)),
            "mode": "development" if seq is not None else "production",
            "backend": "geant4",
            "scene": {"name": scene.name, "sha256": scene.sha256, "path": str(scene.path)},
            "hitmask": {
                "mask": hitmask,
                "label": F.mask_label(hitmask),
                "given": F.mask_label(hitmask),
            },
            "max_bounce": scene.max_bounce,
            "flags": {"version": F.FLAG_VERSION, "bits": F.bit_table()},
            "flagmask_counts": {f"0x{k:x}": int(v) for k, v in sorted(fm_counts.items())},
            "terminal_counts": terminal_counts(fm_counts),
            "geometry": {
                "container_half": list(scene.container_half),
                "objects": [
                    {"shape": o.shape, "center": list(o.center), "half_size": list(o.half_size)}
                    for o in scene.objects
                ],
            },
            "engine_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        meta.update(meta_extra)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            remove_path(old)
            os.replace(out, old)
        os.replace(tmp, out)
        fsync_dir(out.parent)
        if old is not None:
            remove_path(old)
    except BaseException:
        remove_path(tmp)
        raise
    return meta
