"""Benchmark of the geometry: photons/s against the number of sensors on one core.

A JUNO-like detector (engine/propagate/geometry/examples.py: a water pool, a 17.7 m
scintillator ball in acrylic, N PMTs of ellipsoid union neck on a 19.5 m sphere, the PMT
size scaled by sqrt(2000/N) so the photocathode coverage, hence the physics per photon,
stays the same) for N = 256, 1k, 4k, 16k and 64k, each measured in this run:
  load      seconds to read the GDML, build the CSG programs, the tree and the BVH and
            check overlaps on load (8 points per daughter), in a fresh process (the
            compiled tracer already cached)
  memory    bytes of the geometry the backends read (the two blobs) and the process's
            peak RSS after loading
  photons/s numpy backend, 1 worker, production, 200k photons from the centre (best of 2),
            and the cost per photon against N = 256 (goal: 16k sensors at most 2x)
  Geant4    photons/s per core tracking the same photons through the same GDML
            (`geant4 propagate --timing`: its tracking CPU, the Python primary loop
            subtracted), where geant4-pybind is installed; 50k photons
Results also go to .bench/geometry.json; `python benchmarks/bench_geometry.py [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.propagate.geometry import examples as EX  # noqa: E402

WORK = ROOT / ".bench" / "geometry"
SIZES = (256, 1024, 4096, 16384, 65536)
PHOTONS = 200_000
G4_PHOTONS = 50_000

LOAD = """
import json, resource, sys, time
t0 = time.perf_counter()
from engine.propagate.scene import load_scene
t1 = time.perf_counter()
s = load_scene(sys.argv[1])
t2 = time.perf_counter()
g = s.tree()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "bytes": g.nbytes(),
                  "volumes": s.gdml["volumes"], "sensors": s.gdml["sensors"],
                  "bvh_depth": g.bvh_depth,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def engine(*args: object, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def scene(n: int) -> Path:
    d = WORK / f"n{n}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "det.gdml").write_text(EX.juno_like(n, scale=math.sqrt(2000 / n)))
    p = d / "det.toml"
    p.write_text(
        'name = "juno-like-bench"\n[geometry]\ngdml = "det.gdml"\n[settings]\n'
        'max_bounce = 32\n[source]\ntype = "point"\nposition = [0.0, 0.0, 0.0]\n'
        f'wavelength = 430.0\nphotons = {PHOTONS}\n'
    )
    return p


def measure(n: int, geant4: bool) -> dict:
    p = scene(n)
    r = subprocess.run(
        [sys.executable, "-c", LOAD, str(p)], cwd=ROOT, capture_output=True, text=True, timeout=1800
    )
    if r.returncode:
        raise SystemExit(f"load of {n} PMTs failed: {r.stderr.strip().splitlines()[-1]}")
    row = {"pmts": n, **json.loads(r.stdout)}
    best = 0.0
    for i in range(2):
        out = WORK / f"n{n}" / f"ev{i}"
        r = engine(
            "propagate", p, "-o", out, "--backend", "numpy", "--workers", "1", "--seed", i, "--json"
        )
        if r.returncode:
            raise SystemExit(f"propagate {n}: {r.stderr.strip()}")
        m = json.loads(r.stdout.strip().splitlines()[-1])
        if m["photons_per_second"] > best:
            best = m["photons_per_second"]
            row["hits"] = m["hits"]
    row["photons_per_second"] = best
    if geant4:
        r = engine("geant4", "propagate", p, "--timing", "--photons", G4_PHOTONS, "--json")
        if r.returncode == 0:
            g = json.loads(r.stdout.strip().splitlines()[-1])["geant4"]
            row["geant4_photons_per_second"] = g["tracking_photons_per_cpu_second"]
        else:
            row["geant4_error"] = r.stderr.strip()[-200:]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="256, 1k and 4k PMTs only")
    a = ap.parse_args(argv)
    from engine.geant4.runtime import has_geant4

    g4 = has_geant4()[0]
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    # one load first: Numba's compiled tracer is cached on disk after it (a cold cache
    # would put its compile time, about 16 s, into the first row's load)
    subprocess.run(
        [sys.executable, "-c", LOAD, str(scene(SIZES[0]))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    for n in SIZES[:3] if a.quick else SIZES:
        t = time.perf_counter()
        rows.append(measure(n, g4))
        print(f"  {n} PMTs measured in {time.perf_counter() - t:.0f} s", flush=True)
    ref = rows[0]["photons_per_second"]
    print(
        "\n| PMTs | volumes | BVH depth | load s | geometry MB | peak RSS MB | hits/photon "
        "| photons/s (1 core) | cost per photon vs 256 | Geant4 photons/s | skydeck/Geant4 |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        g = r.get("geant4_photons_per_second")
        print(
            f"| {r['pmts']:,} | {r['volumes']:,} | {r['bvh_depth']} | {r['load_s']:.2f} | "
            f"{r['bytes'] / 1e6:.2f} | {r['rss_mb']:.0f} | {r['hits'] / PHOTONS:.4f} | "
            f"{r['photons_per_second']:,.0f} | {ref / r['photons_per_second']:.2f}x | "
            + (f"{g:,.0f} | {r['photons_per_second'] / g:.1f}x |" if g else "- | - |")
        )
    at16 = next((r for r in rows if r["pmts"] == 16384), None)
    if at16 is not None:
        ratio = ref / at16["photons_per_second"]
        print(
            f"\ngoal: 16k sensors cost at most 2x per photon what 256 cost: {ratio:.2f}x "
            f"({'met' if ratio <= 2 else 'MISSED'})"
        )
    (WORK.parent / "geometry.json").write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
