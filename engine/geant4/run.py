"""The Geant4 runs: a scene's torch photons tracked by Geant4 (the A/B reference), and a
particle gun whose Cerenkov and scintillation steps become gensteps (docs/geant4.md).

Why one module: both runs share the application around Geant4 (detector, physics, the
actions, the run manager) and differ in the actions. Each call is the whole life of a
Geant4 run manager, so a process runs one of them (``skydeck-engine geant4 ...``).

``propagate_torch``: the photons are skydeck's own (its torch generator, the same seed),
given to Geant4 one primary each, 1000 per event; a stepping action turns every step into
a skydeck flag (``record``), and the event directory has ``ox.npy``, ``seq.npy``, ``ht.npy``
and ``meta.json``. ``timing`` runs without the stepping action and reports the CPU time
Geant4 spent tracking (the Python that makes the primaries subtracted).

``collect_gensteps``: per step of a charged track, the optical photons Cerenkov and
scintillation made in it are counted by their creator model, and the step becomes a
genstep in Opticks' layout (gensteps.py): Cerenkov with G4Cerenkov's BetaInverse, maxSin2
and MeanNumberOfPhotons1/2 (``engine.propagate.yields``) and the photons counted; a
scintillation step one genstep per time component, split as G4Scintillation splits it.
matline is Geant4's material index, and the material map goes beside the file. The photons
are then killed (``collect``: propagating them is skydeck's job), tracked by Geant4 with
its hits written as an event directory (``track``: the reference for the gensteps), or,
for timing, tracked with no Python in the loop (``bare``) or never made (``charged``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from engine.core.atomic import atomic_write_bytes
from engine.core.errors import BadInput
from engine.geant4 import detector, physics, record, runtime
from engine.propagate import flags as F
from engine.propagate.generate import generate
from engine.propagate.generate.kinds import CERENKOV, SCINTILLATION
from engine.propagate.gensteps import sidecar_for
from engine.propagate.scene import Scene, gensteps, load_scene
from engine.propagate.yields import CerenkovTable, component_split, table

PHOTONS_PER_EVENT = 1000
MODES = ("collect", "track", "bare", "charged")
PARTICLES = ("mu-", "mu+", "e-", "e+", "gamma", "proton", "pi-", "pi+")
MAX_PRIMARIES = 100_000


@dataclass
class Gun:
    particle: str = "mu-"
    energy_mev: float = 1000.0
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, float, float] = (0.0, 0.0, 1.0)
    count: int = 1


def _v3(g4: ModuleType, v: Any) -> Any:
    return g4.G4ThreeVector(float(v[0]), float(v[1]), float(v[2]))


def _xyz(v: Any) -> tuple[float, float, float]:
    return (v.x, v.y, v.z)


class _App:
    """Detector, physics and run manager of one Geant4 run; actions supplied per run."""

    def __init__(
        self, g4: ModuleType, scene: Scene, kind: str, seed: int, sd_hit: Any = None
    ) -> None:
        self.g4, self.scene = g4, scene
        self.built: detector.Built | None = None
        app = self

        class Detector(g4.G4VUserDetectorConstruction):  # type: ignore[name-defined,misc]
            def Construct(self) -> Any:
                if scene.gdml is not None:  # Geant4 reads the same file itself
                    app.built = detector.read_gdml(g4, scene)
                else:
                    app.built = detector.build(g4, scene)
                return app.built.world_pv

            def ConstructSDandField(self) -> None:
                if sd_hit is None or app.built is None:
                    return

                class SD(g4.G4VSensitiveDetector):  # type: ignore[name-defined,misc]
                    def ProcessHits(self, step: Any, history: Any) -> bool:
                        return bool(sd_hit(step))

                sd = SD("skydeckDetect")
                g4.G4SDManager.GetSDMpointer().AddNewDetector(sd)
                app.built.keep.append(sd)
                for lv in detector.detecting_volumes(scene, app.built):
                    lv.SetSensitiveDetector(sd)

        g4.HepRandom.setTheSeed(int(seed) % (2**31 - 1) or 1)
        self.rm = g4.G4RunManagerFactory.CreateRunManager(g4.G4RunManagerType.Serial)
        self.detector = Detector()
        self.physics = physics.make_list(g4, kind, runtime.full_em())
        self.rm.SetUserInitialization(self.detector)
        self.rm.SetUserInitialization(self.physics)

    def run(self, actions: Any, events: int, before: tuple[str, ...] = ()) -> float:
        """Initialise, apply the settings, run ``events`` events; CPU seconds of the run."""
        self.rm.SetUserInitialization(actions)
        physics.commands(self.g4, physics.BEFORE_INIT + before)
        self.rm.Initialize()
        physics.commands(self.g4, physics.AFTER_INIT)
        c0 = time.process_time()
        self.rm.BeamOn(int(events))
        return time.process_time() - c0


def propagate_torch(
    scene_path: Path,
    out: Path | None,
    photons: int | None = None,
    seed: int = 0,
    timing: bool = False,
    log: Path | None = None,
    hitmask: str | None = None,
) -> dict[str, Any]:
    """Geant4 tracks the scene's torch photons; the event directory at ``out``."""
    g4 = runtime.load()
    scene = load_scene(scene_path)
    if scene.source is None:
        raise BadInput("the scene has no [source] to shoot", scene.path)
    if scene.gdml is not None:
        return _propagate_gdml(g4, scene, out, photons, seed, timing, log, hitmask)
    n = scene.source.photons if photons is None else photons
    if not 0 < n <= 10_000_000:
        raise BadInput("--photons must be within 1..10000000 for a Geant4 run")
    mask = F.parse_mask(hitmask or scene.hitmask)
    sa = scene.arrays()
    gs = gensteps(scene.source, n, scene.container_material)
    ph = generate(gs, np.arange(n, dtype=np.uint64), seed, 0, sa)
    rec = record.Photons(n, scene.max_bounce)
    surfaces = record.Surfaces(scene)
    state = {"base": 0, "gun_cpu": 0.0}
    t_wall = time.perf_counter()
    with runtime.quiet(log):
        app = _App(g4, scene, "optical", seed)
        op = g4.G4OpticalPhoton.Definition()
        kill = g4.G4TrackStatus.fStopAndKill
        pos, d, pol, t, wl = ph["pos"], ph["dir"], ph["pol"], ph["t"], ph["wl"]
        if not timing:
            for i in range(n):
                rec.start(i, F.TO, pos[:, i], float(t[i]), d[:, i], pol[:, i], float(wl[i]))

        class Primaries(g4.G4VUserPrimaryGeneratorAction):  # type: ignore[name-defined,misc]
            def __init__(self) -> None:
                super().__init__()
                self.gun = g4.G4ParticleGun(1)
                self.gun.SetParticleDefinition(op)
                self.event = 0

            def GeneratePrimaries(self, event: Any) -> None:
                c0 = time.process_time()
                lo = self.event * PHOTONS_PER_EVENT
                state["base"] = lo
                gun = self.gun
                for i in range(lo, min(n, lo + PHOTONS_PER_EVENT)):
                    gun.SetParticlePosition(
                        g4.G4ThreeVector(float(pos[0, i]), float(pos[1, i]), float(pos[2, i]))
                    )
                    gun.SetParticleMomentumDirection(
                        g4.G4ThreeVector(float(d[0, i]), float(d[1, i]), float(d[2, i]))
                    )
                    gun.SetParticlePolarization(
                        g4.G4ThreeVector(float(pol[0, i]), float(pol[1, i]), float(pol[2, i]))
                    )
                    gun.SetParticleEnergy(record.HC_EV_NM / float(wl[i]) * g4.eV)
                    gun.SetParticleTime(float(t[i]) * g4.ns)
                    gun.GeneratePrimaryVertex(event)
                self.event += 1
                state["gun_cpu"] += time.process_time() - c0

        class Stepping(g4.G4UserSteppingAction):  # type: ignore[name-defined,misc]
            def UserSteppingAction(self, step: Any) -> None:
                flag, bnd, sensor = record.flag_of(g4, step, surfaces)
                if not flag:
                    return
                track = step.GetTrack()
                i = state["base"] + track.GetTrackID() - 1
                post = step.GetPostStepPoint()
                if (
                    rec.flag(
                        i,
                        flag,
                        bnd,
                        sensor,
                        _xyz(post.GetPosition()),
                        post.GetGlobalTime(),
                        _xyz(post.GetMomentumDirection()),
                        _xyz(post.GetPolarization()),
                        record.wavelength(post.GetKineticEnergy()),
                    )
                    and not flag & F.TERMINAL
                ):
                    track.SetTrackStatus(kill)

        class Actions(g4.G4VUserActionInitialization):  # type: ignore[name-defined,misc]
            def Build(self) -> None:
                self.SetUserAction(Primaries())
                if not timing:
                    self.SetUserAction(Stepping())

        events = math.ceil(n / PHOTONS_PER_EVENT)
        cpu = app.run(Actions(), events)
    wall = time.perf_counter() - t_wall
    tracking = max(cpu - state["gun_cpu"], 1e-9)
    info = {
        "geant4": {
            "version": runtime.version(g4),
            "physics": "G4OpticalPhysics",
            "run_cpu_seconds": round(cpu, 4),
            "primary_python_cpu_seconds": round(state["gun_cpu"], 4),
            "tracking_cpu_seconds": round(tracking, 4),
            "tracking_photons_per_cpu_second": n / tracking,
            "history": "inferred from steps" if not timing else "none (timing run)",
        },
        "device": f"Geant4 {runtime.version(g4)} (cpu, 1 thread)",
        "seed": seed,
        "event": 0,
        "wall_seconds": round(wall, 4),
        "photons_per_second": n / tracking,
    }
    if timing or out is None:
        return {"photons": n, **info}
    fm = rec.ox.view(np.uint32)[:, 3, 3]
    vals, cnts = np.unique(fm, return_counts=True)
    hits = rec.ox[(fm & np.uint32(mask)) == mask]
    return record.write_event(
        out,
        scene,
        info,
        mask,
        n,
        hits,
        {int(v): int(c) for v, c in zip(vals, cnts, strict=True)},
        ox=rec.ox,
        seq=rec.seq,
        gs=gs,
    )


def _check_gun(gun: Gun, scene: Scene) -> None:
    if gun.particle not in PARTICLES:
        raise BadInput(f"--particle must be one of {', '.join(PARTICLES)}")
    if not 0 < gun.energy_mev <= 1e7:
        raise BadInput("--energy must be within 0..10 TeV")
    if not 1 <= gun.count <= MAX_PRIMARIES:
        raise BadInput(f"--count must be within 1..{MAX_PRIMARIES}")
    if not all(abs(p) < h for p, h in zip(gun.position, scene.container_half, strict=True)):
        raise BadInput(f"--position {list(gun.position)} lies outside the scene's container")
    if not math.isfinite(sum(gun.direction)) or np.linalg.norm(gun.direction) == 0:
        raise BadInput("--direction must be a non-zero vector")


def collect_gensteps(
    scene_path: Path,
    out: Path | None,
    gun: Gun,
    seed: int = 0,
    mode: str = "collect",
    track_out: Path | None = None,
    log: Path | None = None,
) -> dict[str, Any]:
    """Shoot ``gun`` into the scene; write the gensteps (and, tracked, Geant4's hits)."""
    if mode not in MODES:
        raise BadInput(f"--mode must be one of {', '.join(MODES)}")
    if mode in ("collect", "track") and out is None:
        raise BadInput("-o FILE.npy is required to collect gensteps")
    if mode == "track" and track_out is None:
        raise BadInput("--mode track needs --track-photons DIR for Geant4's own hits")
    g4 = runtime.load()
    scene = load_scene(scene_path)
    _check_gun(gun, scene)
    tables = {
        m.name: CerenkovTable(*table(m.physics["tables"]["refractive_index"]))
        for m in scene.materials
        if "refractive_index" in m.physics.get("tables", {})
    }
    comps = {m.name: m.physics.get("scintillation_components") for m in scene.materials}
    rows: list[np.ndarray] = []
    counts = {"CERENKOV": 0, "SCINTILLATION": 0, "steps": 0}
    models: dict[int, int] = {}  # creator model id -> CERENKOV, SCINTILLATION or 0
    surfaces = record.Surfaces(scene)
    hits: list[tuple[Any, ...]] = []
    generated: list[tuple[float, float, float, float]] = []
    collect = mode in ("collect", "track")

    def kind_of(track: Any) -> int:
        mid = track.GetCreatorModelID()
        k = models.get(mid)
        if k is None:
            name = track.GetCreatorModelName()
            k = CERENKOV if "Cerenkov" in name else SCINTILLATION if "Scintillation" in name else 0
            models[mid] = k
        return k

    def on_step(step: Any) -> None:
        track = step.GetTrack()
        charge = track.GetDefinition().GetPDGCharge()
        if charge == 0 or step.GetNumberOfSecondariesInCurrentStep() == 0:
            return
        ck = si = 0
        secs = step.GetSecondaryInCurrentStep()
        for sec in secs:
            k = kind_of(sec)
            if k == CERENKOV:
                ck += 1
            elif k == SCINTILLATION:
                si += 1
        if not ck and not si:
            return
        if mode == "track":  # what Geant4 generated, for the generation comparisons
            dp = step.GetDeltaPosition()
            u = np.array([dp.x, dp.y, dp.z])
            u /= max(float(np.linalg.norm(u)), 1e-300)
            for sec in secs:
                k = kind_of(sec)
                if k:
                    d = sec.GetMomentumDirection()
                    generated.append(
                        (
                            record.wavelength(sec.GetKineticEnergy()),
                            d.x * u[0] + d.y * u[1] + d.z * u[2],
                            sec.GetGlobalTime(),
                            float(k),
                        )
                    )
        counts["steps"] += 1
        pre, post = step.GetPreStepPoint(), step.GetPostStepPoint()
        mat = track.GetMaterial()
        name = mat.GetName()
        x0, dp = _xyz(pre.GetPosition()), _xyz(step.GetDeltaPosition())
        base = np.zeros((6, 4), np.float32)
        base.view(np.int32)[0, 1:3] = (track.GetTrackID(), mat.GetIndex())
        base[1] = (*x0, pre.GetGlobalTime())
        base[2] = (*dp, step.GetStepLength())
        base[3, 1:3] = (charge / g4.eplus, track.GetWeight())
        base.view(np.int32)[3, 0] = track.GetDefinition().GetPDGEncoding()
        v0, v1 = pre.GetVelocity(), post.GetVelocity()
        if ck:
            if name not in tables:
                raise BadInput(f"Cerenkov light in {name!r}, which is no scene material")
            f = tables[name].fields(pre.GetBeta(), post.GetBeta(), charge / g4.eplus)
            g = base.copy()
            g.view(np.int32)[0, 0] = CERENKOV
            g.view(np.int32)[0, 3] = ck
            g[3, 3] = v0
            g[4] = (f["BetaInverse"], f["Wmin"], f["Wmax"], f["maxCos"])
            g[5] = (f["maxSin2"], f["MeanNumberOfPhotons1"], f["MeanNumberOfPhotons2"], v1)
            rows.append(g)
            counts["CERENKOV"] += ck
        if si:
            cl = comps.get(name)
            if not cl:
                raise BadInput(f"scintillation light in {name!r}, which has no components here")
            for k, cnt in enumerate(component_split(si, [w for _, w in cl])):
                if cnt:
                    g = base.copy()
                    g.view(np.int32)[0, 0] = SCINTILLATION
                    g.view(np.int32)[0, 3] = cnt
                    g[3, 3] = 0.5 * (v0 + v1)
                    g.view(np.int32)[4, 0] = k
                    g[5, 0] = cl[k][0]
                    rows.append(g)
            counts["SCINTILLATION"] += si

    def sd_hit(step: Any) -> bool:
        if step.GetTotalEnergyDeposit() <= 0:
            return False
        track = step.GetTrack()
        if track.GetDefinition() != op:
            return False
        post = step.GetPostStepPoint()
        p = post.GetPosition()
        vol, face, _ = surfaces.at(np.array([p.x, p.y, p.z]))
        first = F.CK if kind_of(track) == CERENKOV else F.SI
        hits.append(
            (
                _xyz(p),
                post.GetGlobalTime(),
                _xyz(post.GetMomentumDirection()),
                _xyz(post.GetPolarization()),
                record.wavelength(post.GetKineticEnergy()),
                first,
                vol,
                vol * 8 + face + 1,
                track.GetTrackID(),
            )
        )
        return True

    t_wall = time.perf_counter()
    with runtime.quiet(log):
        app = _App(g4, scene, "em_optical", seed, sd_hit if mode == "track" else None)
        op = g4.G4OpticalPhoton.Definition()
        fkill, furgent = (
            g4.G4ClassificationOfNewTrack.fKill,
            g4.G4ClassificationOfNewTrack.fUrgent,
        )
        particle = g4.G4ParticleTable.GetParticleTable().FindParticle(gun.particle)

        class Primaries(g4.G4VUserPrimaryGeneratorAction):  # type: ignore[name-defined,misc]
            def __init__(self) -> None:
                super().__init__()
                self.gun = g4.G4ParticleGun(1)
                self.gun.SetParticleDefinition(particle)
                self.gun.SetParticleEnergy(gun.energy_mev * g4.MeV)
                self.gun.SetParticlePosition(_v3(g4, gun.position))
                d = np.array(gun.direction, np.float64)
                self.gun.SetParticleMomentumDirection(_v3(g4, d / np.linalg.norm(d)))

            def GeneratePrimaries(self, event: Any) -> None:
                self.gun.GeneratePrimaryVertex(event)

        class Stepping(g4.G4UserSteppingAction):  # type: ignore[name-defined,misc]
            def UserSteppingAction(self, step: Any) -> None:
                on_step(step)

        class Stacking(g4.G4UserStackingAction):  # type: ignore[name-defined,misc]
            def ClassifyNewTrack(self, track: Any) -> Any:
                return fkill if track.GetDefinition() == op else furgent

        class Actions(g4.G4VUserActionInitialization):  # type: ignore[name-defined,misc]
            def Build(self) -> None:
                self.SetUserAction(Primaries())
                if collect:
                    self.SetUserAction(Stepping())
                if mode == "collect":
                    self.SetUserAction(Stacking())

        before: tuple[str, ...] = ()
        if mode == "charged":
            before = (
                "/process/optical/cerenkov/setStackPhotons false",
                "/process/optical/scintillation/setStackPhotons false",
            )
        cpu = app.run(Actions(), gun.count, before)
        names = [m.GetName() for m in g4.G4Material.GetMaterialTable()]
        removed = list(app.physics.removed)
    wall = time.perf_counter() - t_wall
    gs = np.stack(rows) if rows else np.zeros((0, 6, 4), np.float32)
    photons = counts["CERENKOV"] + counts["SCINTILLATION"]
    summary: dict[str, Any] = {
        "mode": mode,
        "primaries": gun.count,
        "particle": gun.particle,
        "energy_mev": gun.energy_mev,
        "position": list(gun.position),
        "direction": list(gun.direction),
        "seed": seed,
        "gensteps": int(len(gs)),
        "photons": photons,
        "photons_by_kind": {k: counts[k] for k in ("CERENKOV", "SCINTILLATION")},
        "cpu_seconds": round(cpu, 4),
        "wall_seconds": round(wall, 4),
        "geant4": {
            "version": runtime.version(g4),
            "full_em": runtime.full_em(),
            "removed_processes": removed,
            "physics": "G4EmStandardPhysics + G4OpticalPhysics",
        },
    }
    if collect and out is not None:
        _write_gensteps(out, gs, names, summary)
        summary["file"] = str(out)
        summary["material_map"] = str(sidecar_for(out))
    if mode == "track" and track_out is not None:
        summary["track_photons"] = str(track_out)
        _write_tracked(
            track_out,
            scene,
            gs,
            hits,
            counts,
            summary,
            np.array(generated, np.float32).reshape(-1, 4),
        )
    return summary


def _write_gensteps(out: Path, gs: np.ndarray, names: list[str], summary: dict[str, Any]) -> None:
    import io

    if out.suffix != ".npy":
        raise BadInput("the genstep file must end in .npy", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.save(buf, gs)
    side = {
        "materials": names,
        "written_by": "skydeck-engine geant4 gensteps",
        "geant4": summary["geant4"]["version"],
    }
    atomic_write_bytes(sidecar_for(out), (json.dumps(side, indent=1) + "\n").encode())
    atomic_write_bytes(out, buf.getvalue())


def _write_tracked(
    out: Path,
    scene: Scene,
    gs: np.ndarray,
    hits: list[tuple[Any, ...]],
    counts: dict[str, int],
    summary: dict[str, Any],
    generated: np.ndarray,
) -> dict[str, Any]:
    """Geant4's hits of the photons it tracked, as a production event directory, plus
    ``generated.npy``: every photon Geant4 made, (N,4) float32 wavelength nm, cosine to its
    step's direction, time ns, gentype kind (15 Cerenkov, 16 scintillation)."""
    ht = np.zeros((len(hits), 4, 4), np.float32)
    u = ht.view(np.uint32)
    fm_hits: dict[int, int] = {}
    for i, (p, t, d, pol, wl, first, vol, sensor, tid) in enumerate(hits):
        ht[i, 0] = (*p, t)
        ht[i, 1] = (*d, 1.0)
        ht[i, 2] = (*pol, wl)
        fm = first | F.SD
        u[i, 3] = ((vol + 1) << 16 | F.SD, sensor, tid & 0xFFFFFFFF, fm)
        fm_hits[fm] = fm_hits.get(fm, 0) + 1
    # photons not detected: their histories were not followed, only their first flag is known
    fm_counts = dict(fm_hits)
    for first, key in ((F.CK, "CERENKOV"), (F.SI, "SCINTILLATION")):
        rest = counts[key] - fm_hits.get(first | F.SD, 0)
        if rest > 0:
            fm_counts[first] = rest
    info = {
        "device": f"Geant4 {summary['geant4']['version']} (cpu, 1 thread)",
        "seed": summary["seed"],
        "event": 0,
        "geant4": {
            **summary["geant4"],
            "history": "hits only (sensitive detector)",
            "primaries": summary["primaries"],
            "particle": summary["particle"],
            "energy_mev": summary["energy_mev"],
        },
        "gensteps": {
            "rows": int(len(gs)),
            "photons": int(gs.view(np.int32)[:, 0, 3].sum()),
            "kinds": summary["photons_by_kind"],
        },
        "wall_seconds": summary["wall_seconds"],
    }
    return record.write_event(
        out,
        scene,
        info,
        F.SD,
        counts["CERENKOV"] + counts["SCINTILLATION"],
        ht,
        fm_counts,
        gs=gs,
        extra={"generated.npy": generated},
    )


def _propagate_gdml(
    g4: ModuleType,
    scene: Scene,
    out: Path | None,
    photons: int | None,
    seed: int,
    timing: bool,
    log: Path | None,
    hitmask: str | None,
) -> dict[str, Any]:
    """Geant4 reads the scene's GDML with G4GDMLParser and tracks skydeck's torch photons;
    a sensitive detector on every logical volume (invoked by G4OpBoundaryProcess on a
    detection) records each hit with the copynumber of the volume carrying the surface,
    found as G4OpBoundaryProcess finds the surface (docs/geant4.md, "GDML detectors").
    Only hits are known (no histories): the event holds TO|SD for hits and TO for the rest."""
    assert scene.source is not None
    n = scene.source.photons if photons is None else photons
    if not 0 < n <= 10_000_000:
        raise BadInput("--photons must be within 1..10000000 for a Geant4 run")
    mask = F.parse_mask(hitmask or scene.hitmask)
    if mask != F.SD:
        raise BadInput("a GDML detector in Geant4 gives hits (SD) only: --hitmask SD")
    sa = scene.arrays()
    gs = gensteps(scene.source, n, scene.container_material)
    ph = generate(gs, np.arange(n, dtype=np.uint64), seed, 0, sa)
    state = {"base": 0, "gun_cpu": 0.0}
    hits: list[tuple[Any, ...]] = []
    seen: set[int] = set()

    def owner_copy(step: Any) -> int | None:
        pre = step.GetPreStepPoint().GetTouchable().GetVolume()
        post = step.GetPostStepPoint().GetTouchable().GetVolume()
        entering = (
            post.GetMotherLogical() is not None
            and post.GetMotherLogical().GetName() == pre.GetLogicalVolume().GetName()
        )
        if g4.G4LogicalBorderSurface.GetSurface(pre, post) is not None:
            return int((post if entering else pre).GetCopyNo())
        order = (post, pre) if entering else (pre, post)
        for pv in order:
            if g4.G4LogicalSkinSurface.GetSurface(pv.GetLogicalVolume()) is not None:
                return int(pv.GetCopyNo())
        return None  # no surface: energy left at a boundary without a detection

    def sd_hit(step: Any) -> bool:
        # a detection deposits the photon's energy at a boundary; bulk absorption deposits
        # it too, but not at a boundary. G4OpBoundaryProcess (setInvokeSD) and the stepping
        # manager may both call with the same step: one hit per photon
        post = step.GetPostStepPoint()
        if step.GetTotalEnergyDeposit() <= 0 or post.GetStepStatus() != g4.fGeomBoundary:
            return False
        track = step.GetTrack()
        copy = owner_copy(step)
        if copy is None or state["base"] + track.GetTrackID() - 1 in seen:
            return False
        seen.add(state["base"] + track.GetTrackID() - 1)
        p, d, pol = post.GetPosition(), post.GetMomentumDirection(), post.GetPolarization()
        hits.append(
            (
                (p.x, p.y, p.z),
                post.GetGlobalTime(),
                (d.x, d.y, d.z),
                (pol.x, pol.y, pol.z),
                record.wavelength(post.GetKineticEnergy()),
                copy,
                state["base"] + track.GetTrackID() - 1,
            )
        )
        return True

    t_wall = time.perf_counter()
    with runtime.quiet(log):
        app = _App(g4, scene, "optical", seed, None if timing else sd_hit)
        op = g4.G4OpticalPhoton.Definition()
        pos, d, pol, t, wl = ph["pos"], ph["dir"], ph["pol"], ph["t"], ph["wl"]

        class Primaries(g4.G4VUserPrimaryGeneratorAction):  # type: ignore[name-defined,misc]
            def __init__(self) -> None:
                super().__init__()
                self.gun = g4.G4ParticleGun(1)
                self.gun.SetParticleDefinition(op)
                self.event = 0

            def GeneratePrimaries(self, event: Any) -> None:
                c0 = time.process_time()
                lo = self.event * PHOTONS_PER_EVENT
                state["base"] = lo
                gun = self.gun
                for i in range(lo, min(n, lo + PHOTONS_PER_EVENT)):
                    gun.SetParticlePosition(
                        g4.G4ThreeVector(float(pos[0, i]), float(pos[1, i]), float(pos[2, i]))
                    )
                    gun.SetParticleMomentumDirection(
                        g4.G4ThreeVector(float(d[0, i]), float(d[1, i]), float(d[2, i]))
                    )
                    gun.SetParticlePolarization(
                        g4.G4ThreeVector(float(pol[0, i]), float(pol[1, i]), float(pol[2, i]))
                    )
                    gun.SetParticleEnergy(record.HC_EV_NM / float(wl[i]) * g4.eV)
                    gun.SetParticleTime(float(t[i]) * g4.ns)
                    gun.GeneratePrimaryVertex(event)
                self.event += 1
                state["gun_cpu"] += time.process_time() - c0

        class Actions(g4.G4VUserActionInitialization):  # type: ignore[name-defined,misc]
            def Build(self) -> None:
                self.SetUserAction(Primaries())

        cpu = app.run(Actions(), math.ceil(n / PHOTONS_PER_EVENT))
    wall = time.perf_counter() - t_wall
    tracking = max(cpu - state["gun_cpu"], 1e-9)
    info = {
        "geant4": {
            "version": runtime.version(g4),
            "physics": "G4OpticalPhysics",
            "geometry": "G4GDMLParser",
            "run_cpu_seconds": round(cpu, 4),
            "primary_python_cpu_seconds": round(state["gun_cpu"], 4),
            "tracking_cpu_seconds": round(tracking, 4),
            "tracking_photons_per_cpu_second": n / tracking,
            "history": "hits only (sensitive detector)" if not timing else "none (timing run)",
        },
        "device": f"Geant4 {runtime.version(g4)} (cpu, 1 thread)",
        "seed": seed,
        "event": 0,
        "wall_seconds": round(wall, 4),
        "photons_per_second": n / tracking,
    }
    if timing or out is None:
        return {"photons": n, **info}
    ht = np.zeros((len(hits), 4, 4), np.float32)
    u = ht.view(np.uint32)
    for i, (p, tt, dd, pp, w, copy, idx) in enumerate(sorted(hits, key=lambda h: h[6])):
        ht[i, 0] = (*p, tt)
        ht[i, 1] = (*dd, 1.0)
        ht[i, 2] = (*pp, w)
        u[i, 3] = (F.SD, np.int64(copy) & 0xFFFFFFFF, idx & 0xFFFFFFFF, F.TO | F.SD)
    fm = {F.TO | F.SD: len(hits)}
    if n - len(hits):
        fm[F.TO] = n - len(hits)
    return record.write_event(out, scene, info, mask, n, ht, fm, gs=gs)
