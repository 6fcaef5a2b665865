"""Benchmark of the propagation engine; `make bench` runs it.

Rows, each measured in this run (best of a few repeats: the machine may be shared):
  numpy, tboolean-box, production, 1 worker          photons/s  (goal >= 1e6)
  numpy, tboolean-box, production, all cores          photons/s  (ratio to 1 worker)
  production vs development bytes, same run            ratio      (goal <= 5 %)
  cuda at 1e8 photons, and CPU/GPU agreement at 1e6    (only where PyCUDA + a GPU exist)
  per core against Geant4 tracking the same optical photons itself, for TORCH, CERENKOV and
  SCINTILLATION gensteps (goal >= 3x Geant4 on every kind; only where geant4-pybind is):
    TORCH          tboolean-box, 1e5 photons: Geant4's tracking CPU (its Python primary
                   loop subtracted) against skydeck's numpy CPU, 1 worker
    CERENKOV       water-tank, the gensteps of a 1 GeV muon collected by `geant4 gensteps`:
                   Geant4 generating and tracking the photons in C++ (CPU of a run with
                   photons minus one without) against skydeck generating and propagating
                   the same gensteps
    SCINTILLATION  scint-tank, ten 2 MeV electrons, the same way
Results also go to .bench/propagate.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.core.workspace import ASSETS  # noqa: E402
from engine.propagate import cuda_backend  # noqa: E402
from engine.propagate.backends import default_workers  # noqa: E402
from engine.propagate.event import Request, propagate  # noqa: E402

TBOX = ASSETS / "scenes" / "tboolean-box.toml"
TBOX_DETECT = ASSETS / "scenes" / "tboolean-box-detect.toml"
WORK = ROOT / ".bench" / "propagate"


def run(scene: Path, name: str, **kw) -> dict:
    out = WORK / name
    return propagate(Request(scene, out, **kw))


def best_rate(scene: Path, photons: int, workers: int, repeats: int = 3) -> tuple[float, dict]:
    """Best wall-clock rate of a few runs (the machine may be shared with other work)."""
    best, meta = 0.0, {}
    for i in range(repeats):
        m = run(
            scene, f"rate-{workers}-{i}", photons=photons, backend="numpy", workers=workers, seed=i
        )
        if m["photons_per_second"] > best:
            best, meta = m["photons_per_second"], m
    return best, meta


def engine_json(*args: object) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "engine", *map(str, args), "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed")
    return json.loads(r.stdout.strip().splitlines()[-1])


def skydeck_cpu_rate(scene: Path, repeats: int = 3, **kw) -> float:
    """Best photons per CPU-second of one worker (generation and propagation)."""
    best = 0.0
    for i in range(repeats):
        m = run(scene, f"g4cmp-{i}", backend="numpy", workers=1, seed=i, **kw)
        best = max(best, m["photons"] / m["process_cpu_seconds"])
    return best


def against_geant4(rows: list[tuple[str, str, str]], res: dict) -> None:
    """skydeck per core against Geant4 tracking the same optical photons (module docstring)."""
    from engine.geant4.runtime import has_geant4

    ok, why = has_geant4()
    if not ok:
        rows.append(("Geant4 comparison", "not measured", why))
        res["geant4"] = f"not measured: {why}"
        return
    work = WORK / "g4"
    work.mkdir(parents=True, exist_ok=True)
    g = engine_json("geant4", "propagate", TBOX, "--photons", 100_000, "--timing")
    g4_torch = g["geant4"]["tracking_photons_per_cpu_second"]
    sky_torch = skydeck_cpu_rate(TBOX, photons=1_000_000)
    table = [("TORCH", "tboolean-box", 100_000, g4_torch, sky_torch)]
    for kind, scene, gun in (
        (
            "CERENKOV",
            "water-tank",
            [
                "--particle",
                "mu-",
                "--energy",
                "1GeV",
                "--position",
                "0,0,-990",
                "--direction",
                "0,0,1",
            ],
        ),
        (
            "SCINTILLATION",
            "scint-tank",
            ["--particle", "e-", "--energy", "2MeV", "--position", "0,0,0", "--count", "10"],
        ),
    ):
        gs = work / f"{scene}.npy"
        # the photon count of the timed run: the same seed and actions that use no random
        # numbers make the same event ('track' counts and tracks, 'bare' only tracks)
        counted = engine_json(
            "geant4",
            "gensteps",
            scene,
            "-o",
            gs,
            "--mode",
            "track",
            "--track-photons",
            work / f"{scene}-g4",
            "--seed",
            1,
            *gun,
        )
        bare = engine_json("geant4", "gensteps", scene, "--mode", "bare", "--seed", 1, *gun)
        charged = engine_json("geant4", "gensteps", scene, "--mode", "charged", "--seed", 1, *gun)
        photons = counted["photons"]
        g4_rate = photons / max(bare["cpu_seconds"] - charged["cpu_seconds"], 1e-9)
        sky = skydeck_cpu_rate(ASSETS / "scenes" / f"{scene}.toml", gensteps=gs)
        table.append((kind, scene, photons, g4_rate, sky))
    res["geant4"] = {}
    for kind, scene, photons, g4_rate, sky in table:
        ratio = sky / g4_rate
        rows.append(
            (
                f"{kind} per core vs Geant4, {scene}, {photons:,} photons",
                f"{sky:,.0f} / {g4_rate:,.0f} photons/s",
                f"{ratio:.1f} x Geant4 (goal >= 3x)",
            )
        )
        res["geant4"][kind] = {
            "scene": scene,
            "photons": photons,
            "skydeck_pps_cpu": sky,
            "geant4_pps_cpu": g4_rate,
            "ratio": ratio,
        }
    res["geant4"]["version"] = g["geant4"]["version"]


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    rows: list[tuple[str, str, str]] = []
    res: dict = {}
    n1 = 1_000_000
    before = load()
    r1, m1 = best_rate(TBOX, n1, 1)
    cpu_rate = n1 / m1["process_cpu_seconds"]
    rows.append(
        (
            "numpy 1 worker, tboolean-box, production, 1e6 photons (wall)",
            f"{r1:,.0f} photons/s",
            f"{r1 / 1e6:.2f} x goal 1e6/s",
        )
    )
    rows.append(
        (
            "numpy 1 worker, same run, per CPU-second of the process",
            f"{cpu_rate:,.0f} photons/s",
            f"{cpu_rate / 1e6:.2f} x goal 1e6/s",
        )
    )
    res["numpy_1worker_pps"] = r1
    res["numpy_1worker_pps_cpu"] = cpu_rate
    res["load_before"] = before
    w = default_workers()
    if w > 1:
        rw, _ = best_rate(TBOX, 2 * n1, w, repeats=2)
        rows.append(
            (
                f"numpy {w} workers, tboolean-box, production, 2e6 photons",
                f"{rw:,.0f} photons/s",
                f"{rw / r1:.2f} x 1 worker",
            )
        )
        res["numpy_allcores_pps"] = rw
        res["workers"] = w
    nb = 200_000
    for scene, label in (
        (TBOX, "tboolean-box (hit mask SD: no hits)"),
        (TBOX_DETECT, "tboolean-box-detect (every photon a hit)"),
    ):
        p = run(scene, "bytes-prod", photons=nb, backend="numpy", mode="production", seed=7)
        d = run(scene, "bytes-dev", photons=nb, backend="numpy", mode="development", seed=7)
        assert p["hits"] == d["hits"], "production and development disagree on hits"
        ratio = p["bytes"] / d["bytes"]
        rows.append(
            (
                f"production/development bytes, {label}, 2e5 photons",
                f"{p['bytes']:,} / {d['bytes']:,} B",
                f"{100 * ratio:.2f} % (goal <= 5 %)",
            )
        )
        res[f"bytes_ratio_{scene.stem}"] = ratio
    against_geant4(rows, res)
    ok, why = cuda_backend.available()
    if ok:
        big = 100_000_000
        m = run(TBOX, "cuda-1e8", photons=big, backend="cuda")
        rows.append(
            (
                f"cuda {why}, tboolean-box, production, 1e8 photons",
                f"{m['photons_per_second']:,.0f} photons/s",
                f"{m['photons_per_second'] / r1:,.0f} x numpy 1 worker",
            )
        )
        res["cuda_pps"] = m["photons_per_second"]
        a = run(TBOX_DETECT, "agree-np", photons=n1, backend="numpy", mode="development", seed=3)
        b = run(TBOX_DETECT, "agree-cu", photons=n1, backend="cuda", mode="development", seed=3)
        sa = np.load(WORK / "agree-np" / "seq.npy")
        sb = np.load(WORK / "agree-cu" / "seq.npy")
        same = float(np.mean(sa == sb))
        rows.append(
            (
                "CPU/GPU agreement, tboolean-box-detect, 1e6 photons",
                f"seqhis equal for {100 * same:.4f} %",
                f"hits {a['hits']:,} vs {b['hits']:,}",
            )
        )
        res["cpu_gpu_seqhis_agreement"] = same
    else:
        rows.append(("cuda rows", "not measured", f"no GPU here: {why}"))
        res["cuda"] = f"not measured: {why}"
    width = max(len(r[0]) for r in rows)
    print(f"{'propagation benchmark':<{width}}  {'result':>28}  ratio")
    for a_, b_, c_ in rows:
        print(f"{a_:<{width}}  {b_:>28}  {c_}")
    print(f"machine: {os.cpu_count()} CPUs, {before} before, {load()} after")
    res["rows"] = rows
    res["when"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    (ROOT / ".bench").mkdir(exist_ok=True)
    (ROOT / ".bench" / "propagate.json").write_text(json.dumps(res, indent=1))
    shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
