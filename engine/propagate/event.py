"""Propagation event directories: run a backend and write the event atomically
(docs/design.md, "Propagation event directory").

The directory is assembled under a temporary sibling name and renamed into place at the
end, so a reader never sees a half-written ``ht.npy`` and a killed run leaves only a
``.<name>.tmp-<pid>`` that the next run sweeps. ``ht.npy`` is always written, also when
empty (Opticks keeps it for consistent timestamps). Before anything runs, the projected
output is checked against free space minus the reserve.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine import __version__
from engine.core.atomic import fsync_dir, refuse_alias, remove_path, sweep_stale_temps, temp_name
from engine.core.diskspace import check_space
from engine.core.errors import BadInput, JobFailed, SkydeckError
from engine.core.interrupt import abort_job, exit_code
from engine.propagate import flags as F
from engine.propagate import gensteps as G
from engine.propagate.backends import (
    GPU_BACKENDS,
    default_workers,
    mpi_worker,
    mpi_world,
    resolve_backend,
    run_gpu,
    run_mpi_root,
    run_numpy,
)
from engine.propagate.npyio import NpyStream
from engine.propagate.numpy_backend import propagate_chunk
from engine.propagate.options import DEFAULT_CHUNK, MAX_CHUNK, MAX_PHOTONS, MODES
from engine.propagate.params import Params
from engine.propagate.scene import Scene, gensteps, load_scene

RECORD_BYTES = 16  # one compressed step record: 2 x short4
PILOT = 4096


@dataclass
class Request:
    scene: Path
    out: Path
    photons: int | None = None
    seed: int = 0
    event: int = 0
    mode: str = "production"
    backend: str = "auto"
    hitmask: str | None = None
    workers: int | None = None
    chunk: int = DEFAULT_CHUNK
    reserve: int = 0
    gensteps: Path | None = None  # a delivery's gensteps.npy instead of the scene's source
    genstep_materials: Path | None = None  # Geant4 material map (default: the sidecar)


def photon_bytes(mode: str, max_bounce: int) -> int:
    """Bytes per photon that development mode adds: ox + rx + seq."""
    return 0 if mode == "production" else 64 + (max_bounce + 1) * RECORD_BYTES + 8


def projected_bytes(scene: Scene, n: int, mode: str, hit_fraction_upper: float) -> int:
    """Projected size of the event: hits (from a pilot's upper hit fraction), gensteps,
    metadata, plus the development arrays."""
    hits = math.ceil(n * hit_fraction_upper) * 64
    return hits + 96 * (n // (2**31 - 1) + 1) + 65536 + n * photon_bytes(mode, scene.max_bounce)


def pilot_hit_fraction(scene: Scene, p: Params, gs: np.ndarray) -> float:
    """Upper estimate of the hit fraction from a short NumPy pilot run (4 sigma + 1/n) over
    gensteps spread across the event."""
    pg = G.pilot(gs, PILOT)
    n = int(pg.view(np.int32)[:, 0, 3].astype(np.int64).sum())
    if n == 0:
        return 0.0
    pp = Params(p.seed ^ 0x5EED, p.event, p.max_bounce, p.hitmask, False, p.domain)
    r = propagate_chunk(scene.arrays(), pg, 0, n, pp)
    f = r.hits.shape[0] / n
    return min(1.0, f + 4 * math.sqrt(f * (1 - f) / n) + 1.0 / n)


def _domain(scene: Scene, gs: np.ndarray) -> tuple[float, float]:
    """Step-record domain: the container's extent, and the latest time a photon can reach
    within the bounce limit (generation times, then every bounce across the diagonal at the
    slowest group velocity)."""
    ext = float(max(scene.container_half))
    vmin = float(min(m.props[4].min() for m in scene.materials))
    diag = 2.0 * math.sqrt(sum(h * h for h in scene.container_half))
    tmax = G.time_extent(gs) + (scene.max_bounce + 1) * diag / vmin
    return ext, tmax


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise BadInput("output exists and is not a directory", out)
    if out.is_dir() and any(out.iterdir()) and not (out / "meta.json").exists():
        raise BadInput("output directory is not empty and holds no event (meta.json)", out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BadInput(f"cannot create output directory: {err.strerror}", out.parent) from None
    sweep_stale_temps(out)


def propagate(
    req: Request,
    advance: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run one propagation event and write its directory; returns the metadata dict.

    Under ``mpiexec -n K`` (K > 1) rank 0 validates, checks the disk, collects and writes,
    ranks 1..K-1 compute chunks; they return ``{"mpi_worker": rank}`` and print nothing."""
    comm = mpi_world()
    if comm is not None and comm.Get_rank() > 0:
        job = comm.bcast(None, root=0)
        if job[0] == "abort":  # rank 0 refused the job and says why; exit with its code
            raise SystemExit(job[1])
        _, sa, gs, n, params, chunk = job
        mpi_worker(comm, sa, gs, n, params, chunk)
        return {"mpi_worker": comm.Get_rank()}
    state = {"started": False}
    try:
        return _propagate(req, advance, on_start, comm, state)
    except BaseException as err:
        if comm is not None and not state["started"]:  # refused before the workers got work
            code = (
                err.exit_code
                if isinstance(err, SkydeckError)
                else (exit_code(err) if isinstance(err, KeyboardInterrupt) else 1)
            )
            comm.bcast(("abort", code), root=0)
        raise


def _propagate(
    req: Request,
    advance: Callable[[int], None] | None,
    on_start: Callable[[int], None] | None,
    comm,  # noqa: ANN001
    state: dict[str, bool],
) -> dict[str, Any]:
    t_start = time.perf_counter()
    if req.mode not in MODES:
        raise BadInput(f"unknown mode {req.mode!r} (choose from {', '.join(MODES)})")
    refuse_alias(
        req.out, [p for p in (req.scene, req.gensteps) if p is not None], replaces_tree=True
    )
    scene = load_scene(req.scene)
    if scene.source is None and req.gensteps is None:
        raise BadInput("the scene has no [source]: give --gensteps FILE", req.scene)
    n = (
        scene.source.photons
        if scene.source is not None and req.photons is None
        else req.photons or 0
    )
    if not 0 <= n <= MAX_PHOTONS:
        raise BadInput(f"--photons must be within 0..{MAX_PHOTONS}")
    if not 0 <= req.seed < 2**64:
        raise BadInput("--seed must be within 0..2**64-1")
    if not 0 <= req.event < 2**32:
        raise BadInput("--event must be within 0..2**32-1")
    mask_text = req.hitmask or scene.hitmask
    try:
        hitmask = F.parse_mask(mask_text)
    except ValueError as err:
        raise BadInput(f"--hitmask: {err}") from None
    backend, device = resolve_backend(req.backend)
    workers = req.workers or default_workers()
    if comm is not None:
        if backend != "numpy":
            raise BadInput("under mpiexec only the numpy backend runs (one GPU per event)")
        workers = comm.Get_size() - 1
        device = f"cpu, MPI {comm.Get_size()} ranks ({workers} computing)"
    if not 1 <= req.chunk <= MAX_CHUNK:
        raise BadInput(f"--chunk must be within 1..{MAX_CHUNK}")
    dev = req.mode == "development"
    gsum: dict[str, Any]
    if req.gensteps is not None:
        if req.photons is not None:
            raise BadInput("--photons and --gensteps exclude each other (gensteps carry counts)")
        loaded = G.load(req.gensteps, scene, req.genstep_materials)
        gs, n, gsum = loaded.array, loaded.photons, loaded.summary()
        gsum["file"] = str(req.gensteps)
    else:
        if req.genstep_materials is not None:
            raise BadInput("--genstep-materials needs --gensteps")
        assert scene.source is not None
        gs = gensteps(scene.source, n, scene.container_material)
        gsum = {
            "rows": int(len(gs)),
            "photons": n,
            "kinds": {"TORCH": {"gensteps": int(len(gs)), "photons": n}},
            "material_map": None,
            "file": None,
        }
    params = Params(req.seed, req.event, scene.max_bounce, hitmask, dev, _domain(scene, gs))
    _prepare_out(req.out)
    f_up = pilot_hit_fraction(scene, params, gs)
    need = projected_bytes(scene, n, req.mode, f_up)
    check_space(req.out, need, req.reserve, what=f"{req.mode} event of {n} photons")

    tmp = temp_name(req.out)
    remove_path(tmp)
    sa = scene.arrays()
    if comm is not None:
        comm.bcast(("run", sa, gs, n, params, req.chunk), root=0)
        state["started"] = True
    streams: list[NpyStream] = []
    try:
        tmp.mkdir(parents=True)
        np.save(tmp / "gs.npy", gs)
        ht = NpyStream(tmp / "ht.npy", (4, 4), np.float32)
        streams.append(ht)
        if dev:
            ox = _open_array(tmp / "ox.npy", np.float32, (n, 4, 4))
            rx = _open_array(tmp / "rx.npy", np.int16, (n, scene.max_bounce + 1, 2, 4))
            seq = _open_array(tmp / "seq.npy", np.uint64, (n,))
        fm_counts: dict[int, int] = {}
        if on_start is not None:
            on_start(n)
        t0 = time.perf_counter()
        c0 = time.process_time()
        gpu_stats: dict[str, Any] = {}  # GPU backends: kernel_seconds, launches
        if backend in GPU_BACKENDS:
            results = run_gpu(backend, sa, gs, n, params, advance or (lambda k: None), gpu_stats)
        elif comm is not None:
            results = run_mpi_root(comm, n, req.chunk, advance or (lambda k: None))
        else:
            results = run_numpy(sa, gs, n, params, req.chunk, workers, advance or (lambda k: None))
        for r in results:
            ht.append(r.hits)
            for k, v in r.flagmask_counts.items():
                fm_counts[k] = fm_counts.get(k, 0) + v
            if dev:
                ox[r.start : r.start + r.count] = r.ox
                rx[r.start : r.start + r.count] = r.rx
                seq[r.start : r.start + r.count] = r.seq
        prop_s = time.perf_counter() - t0
        cpu_s = time.process_time() - c0
        hits = ht.close()
        if dev:
            for a in (ox, rx, seq):
                if isinstance(a, np.memmap):
                    a.flush()
            del ox, rx, seq
        meta = _meta(
            req,
            scene,
            n,
            hits,
            backend,
            device,
            workers,
            hitmask,
            mask_text,
            params,
            fm_counts,
            prop_s,
            time.perf_counter() - t_start,
        )
        meta["gensteps"] = gsum
        # CPU seconds of this process: the whole job for one worker (pool workers excluded)
        meta["process_cpu_seconds"] = round(cpu_s, 6)
        meta.update(gpu_stats)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        meta["files"] = files
        data = sum(files.values())
        meta["bytes"] = data
        for _ in range(4):  # "bytes" counts meta.json itself: iterate to a fixed point
            text = json.dumps(meta, indent=1, sort_keys=True) + "\n"
            if meta["bytes"] == data + len(text):
                break
            meta["bytes"] = data + len(text)
        (tmp / "meta.json").write_text(text)
        _swap_into_place(tmp, req.out)
    except BaseException as err:
        for s in streams:
            s.abort()
        remove_path(tmp)
        if comm is not None:
            # workers are mid-job: nothing can be told to them any more; end the MPI job
            # with the code a plain run would give, after saying why on stderr
            abort_job(comm, err)
        if isinstance(err, OSError):
            raise JobFailed(f"writing the event failed: {err.strerror or err}", req.out) from None
        raise
    return meta


def _open_array(path: Path, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """A development array filled chunk by chunk on disk (memory stays bounded); an empty
    one cannot be memory-mapped, so it is simply saved."""
    if math.prod(shape) == 0:
        empty: np.ndarray = np.zeros(shape, dtype)
        np.save(path, empty)
        return empty
    return np.lib.format.open_memmap(path, "w+", dtype, shape)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` (an older event, or nothing) by ``tmp`` with renames only."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        remove_path(old)
        os.replace(out, old)
    os.replace(tmp, out)
    fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _terminal_counts(fm_counts: dict[int, int]) -> dict[str, int]:
    out = {"SD": 0, "SA": 0, "AB": 0, "MI": 0, "truncated": 0}
    for fm, c in fm_counts.items():
        term = [k for k in ("SD", "SA", "AB", "MI") if fm >> F.FLAG_BITS[k] & 1]
        if term:
            for k in term:
                out[k] += c
        else:
            out["truncated"] += c
    return out


def _meta(
    req: Request,
    scene: Scene,
    n: int,
    hits: int,
    backend: str,
    device: str,
    workers: int,
    hitmask: int,
    mask_text: str,
    p: Params,
    fm_counts: dict[int, int],
    prop_s: float,
    wall_s: float,
) -> dict[str, Any]:
    return {
        "photons": n,
        "hits": hits,
        "mode": req.mode,
        "backend": backend,
        "device": device,
        "workers": workers if backend == "numpy" else 1,
        "seed": req.seed,
        "event": req.event,
        "scene": {"name": scene.name, "sha256": scene.sha256, "path": str(scene.path)},
        "hitmask": {"mask": hitmask, "label": F.mask_label(hitmask), "given": mask_text},
        "max_bounce": scene.max_bounce,
        "wall_seconds": round(wall_s, 6),
        "propagate_seconds": round(prop_s, 6),
        "photons_per_second": (n / prop_s) if prop_s > 0 else None,
        "flags": {"version": F.FLAG_VERSION, "bits": F.bit_table()},
        "flagmask_counts": {f"0x{k:x}": v for k, v in sorted(fm_counts.items())},
        "terminal_counts": _terminal_counts(fm_counts),
        "geometry": (
            {
                "container_half": list(scene.container_half),
                "objects": [
                    {"shape": o.shape, "center": list(o.center), "half_size": list(o.half_size)}
                    for o in scene.objects
                ],
            }
            if scene.gdml is None
            else {"gdml": scene.gdml, "world_half": list(scene.container_half)}
        ),
        "domain": {
            "space_extent_mm": p.domain[0],
            "time_max_ns": p.domain[1],
            "wavelength_nm": [60.0, 820.0],
        },
        "rng": "philox4x32-10 key=(seed) counter=(photon, block, event)",
        "velocity": "group velocity (GROUPVEL from the refractive index, as Geant4)",
        "engine_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
