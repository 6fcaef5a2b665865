"""tboolean-box on one core, this tree against reference commits, interleaved.

Why a benchmark of its own: the geometry merge (one BVH/CSG tracer for every scene) made
the simplest analytic scene about 2x slower than the vectorised box test before it, and
the machine this runs on is shared, so a rate means something only next to a reference
measured in the same minutes. Each reference tree (``--ref``, repeatable; default: main
before the geometry merge, the merge's first parent) is exported with ``git archive`` into
a temporary directory, and every tree runs the same command as whole processes, in turn
(A, B, A, B, ... or A, B, C, A, B, C, ...):

    python -m engine propagate tboolean-box -o OUT --photons 1e6 --backend numpy \
        --workers 1 --json

Reported per tree: the median and every run's photons per wall second of the propagation
(``photons_per_second``: generation and stepping, no start-up) and per CPU second of the
process, and the ratio of this tree's medians to each reference's; the goal is 1e6
photons/s on one core. First-call compile time of the compiled tracer, RNG and lookup is
reported separately: a run of this tree with an empty Numba cache directory against a
warm one (the rounds above run warm: the first, untimed, run of each tree fills its
cache). The machine's load average is printed
before and after. Results also go to .bench/tboolean.json.

    python benchmarks/bench_tboolean.py [--rounds 7] [--photons 1000000] [--ref REV ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 1e6


def export(rev: str, dest: Path) -> str:
    """The reference tree's engine and assets under dest; its short commit."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    arch = subprocess.run(
        ["git", "-C", str(ROOT), "archive", sha, "engine", "assets"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=arch, check=True)
    return sha


def one_run(tree: Path, out: Path, photons: int, env_extra: dict[str, str]) -> dict:
    """One whole process of ``engine propagate`` in ``tree``; its --json line, plus wall."""
    env = dict(os.environ, PYTHONPATH=str(tree), **env_extra)
    t0 = time.perf_counter()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "propagate",
            "tboolean-box",
            "-o",
            str(out),
            "--photons",
            str(photons),
            "--backend",
            "numpy",
            "--workers",
            "1",
            "--json",
        ],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{tree}: {r.stderr.strip()[-500:]}")
    m = json.loads(r.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return {
        "pps": m["photons_per_second"],
        "pps_cpu": photons / m["process_cpu_seconds"],
        "process_wall": wall,
        "propagate_seconds": m["propagate_seconds"],
    }


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--photons", type=int, default=1_000_000)
    ap.add_argument(
        "--ref",
        action="append",
        help="a reference revision, repeatable (default: 5061173^1, main before the "
        "geometry merge)",
    )
    a = ap.parse_args()
    refs = a.ref or ["5061173^1"]
    work = Path(tempfile.mkdtemp(prefix="bench-tboolean-"))
    try:
        trees: dict[str, Path] = {}
        for i, rev in enumerate(refs):
            t = work / f"ref{i}"
            t.mkdir()
            trees[f"reference {export(rev, t)}"] = t
        trees["this tree"] = ROOT
        before = load()
        # untimed first runs: each tree's compiled functions into its cache
        for t in trees.values():
            one_run(t, work / "warm", 10_000, {})
        runs: dict[str, list[dict]] = {k: [] for k in trees}
        for _ in range(a.rounds):
            for name, t in trees.items():
                runs[name].append(one_run(t, work / "ev", a.photons, {}))
        # compile time: this tree with an empty cache directory, against a warm run
        cold = one_run(ROOT, work / "cold", 10_000, {"NUMBA_CACHE_DIR": str(work / "nc")})
        warm = one_run(ROOT, work / "warm", 10_000, {"NUMBA_CACHE_DIR": str(work / "nc")})
        after = load()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {
        k: {q: statistics.median(r[q] for r in v) for q in ("pps", "pps_cpu")}
        for k, v in runs.items()
    }
    rows = [
        ("tree", "photons/s (wall, median)", "photons/s (CPU, median)", "x goal 1e6/s"),
    ]
    for k in trees:
        rows.append(
            (k, f"{med[k]['pps']:,.0f}", f"{med[k]['pps_cpu']:,.0f}", f"{med[k]['pps'] / GOAL:.2f}")
        )
    ratios = {}
    for k in trees:
        if k != "this tree":
            ratios[k] = (
                med["this tree"]["pps"] / med[k]["pps"],
                med["this tree"]["pps_cpu"] / med[k]["pps_cpu"],
            )
            rows.append((f"this tree / {k}", f"{ratios[k][0]:.2f}x", f"{ratios[k][1]:.2f}x", ""))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    print(f"tboolean-box, {a.photons:,} photons, numpy, 1 worker, {a.rounds} interleaved rounds")
    for r in rows:
        print("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)))
    for k, v in runs.items():
        print(f"{k} runs, photons/s wall: " + ", ".join(f"{r['pps']:,.0f}" for r in v))
    print(
        f"first call (empty Numba cache, 10k photons): process {cold['process_wall']:.2f} s "
        f"against {warm['process_wall']:.2f} s warm: {cold['process_wall'] - warm['process_wall']:.1f} s "
        "of compilation, not in the rates above"
    )
    print(f"machine: {os.cpu_count()} CPUs, load average {before} before, {after} after")
    res = {
        "references": refs,
        "photons": a.photons,
        "rounds": a.rounds,
        "runs": runs,
        "median": med,
        "ratios_wall_cpu": ratios,
        "compile_seconds": cold["process_wall"] - warm["process_wall"],
        "load_before": before,
        "load_after": after,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (ROOT / ".bench").mkdir(exist_ok=True)
    (ROOT / ".bench" / "tboolean.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
