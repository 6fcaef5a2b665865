"""Slurm benchmarks, each against a reference measured in the same run.

1. Orchestration overhead per process instance on Slurm: a stream of N empty instances
   (`gen`, then N x `true` as a `foreach` substream) run by `run_stream` with the Slurm
   launcher, `jobs` at once; reference: the same N empty jobs submitted directly with
   `sbatch --wrap`, `jobs` outstanding at a time, each writing an exit file that the
   reference polls as the launcher does. Goal: skydeck's wall within 1.2x the reference.
2. End to end: one mock downlink (2 chunks, 2 runs) through the whole halfpipe stream with
   the Slurm launcher against the local launcher. No goal (a batch system adds its
   scheduling cycle per job); reported as the ratio.

Needs a Slurm cluster: a running one (tests/slurm/cluster.sh's env file) or, as root, the
one `tests/slurm/cluster.sh up` starts (and this benchmark then stops again).
Run: `make bench` or `.venv/bin/python benchmarks/bench_slurm.py [--instances 40 --jobs 2]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_pipeline import run_empty_stream  # noqa: E402  (same folder)

from engine.core.settings import Slurm  # noqa: E402
from engine.core.workspace import Workspace, init_workspace  # noqa: E402
from engine.mock.delivery import MockSpec, deliver  # noqa: E402
from engine.pipeline.launchers.slurm import SlurmLauncher  # noqa: E402
from engine.pipeline.task import load_task  # noqa: E402

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
SLURM_DIR = Path(os.environ.get("SKYDECK_SLURM_DIR", "/tmp/skydeck-slurm"))


def cluster_env() -> tuple[dict[str, str], bool]:
    """SLURM_CONF of a running cluster (started here when none runs); whether we started it."""

    def read() -> dict[str, str]:
        try:
            lines = (SLURM_DIR / "env").read_text().splitlines()
        except OSError:
            return {}
        return dict(ln.split("=", 1) for ln in lines if "=" in ln and not ln.startswith("#"))

    def answers(env: dict[str, str]) -> bool:
        if not env or shutil.which("sinfo") is None:
            return False
        res = subprocess.run(["sinfo", "-h"], capture_output=True, env={**os.environ, **env})
        return res.returncode == 0

    env = read()
    if answers(env):
        return env, False
    if os.geteuid() != 0:
        raise SystemExit("no Slurm cluster answers; run tests/slurm/cluster.sh up as root")
    subprocess.run([str(CLUSTER), "up"], check=True, capture_output=True)
    return read(), True


def _ws(root: Path, launcher: str = "local") -> Workspace:
    ws = init_workspace(root)
    cfg = ws.root / "skydeck.toml"
    text = cfg.read_text()
    for old, new in (
        ("reserve_bytes = 1_000_000_000", "reserve_bytes = 0"),
        ('launcher = "local"', f'launcher = "{launcher}"'),
        ("max_jobs = 2 ", "max_jobs = 4 "),
        ("maxEvents = 125000", "maxEvents = 200"),
    ):
        assert old in text, old
        text = text.replace(old, new)
    cfg.write_text(text)
    return Workspace.open(ws.root)


def bench_overhead(tmp: Path, n: int, jobs: int) -> dict[str, float]:
    wall = run_empty_stream(tmp, n, SlurmLauncher(jobs, Slurm()), gen_local=True)
    # reference: the same empty jobs straight to sbatch, each leaving an exit file
    ref_dir = tmp / "ref"
    ref_dir.mkdir()
    t0 = time.perf_counter()
    outstanding: list[Path] = []
    for i in range(n):
        while len(outstanding) >= jobs:
            outstanding = [p for p in outstanding if not p.exists()]
            time.sleep(0.001)
        done = ref_dir / f"{i}.exit"
        subprocess.run(
            [
                "sbatch",
                "--parsable",
                "--job-name=bench-ref",
                f"--output={ref_dir}/{i}.log",
                "--ntasks=1",
                f"--wrap=true; echo 0 > {done}",
            ],
            check=True,
            capture_output=True,
        )
        outstanding.append(done)
    while any(not p.exists() for p in outstanding):
        time.sleep(0.001)
    ref = time.perf_counter() - t0
    return {"instances": n + 1, "jobs": jobs, "wall_s": wall, "ref_s": ref, "ratio": wall / ref}


def bench_end_to_end(tmp: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for launcher in ("local", "slurm"):
        root = tmp / f"e2e-{launcher}"
        ws = _ws(root, launcher)
        spec = MockSpec(
            dlid="251201998", sources=2, events=600, event_bytes=400, runs=2, chunks=2, seed=0
        )
        deliver(spec, "level0", ws.incoming_level0)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        t0 = time.perf_counter()
        res = subprocess.run(
            [sys.executable, "-m", "engine", "-w", str(ws.root), "run", spec.dlid],
            capture_output=True,
            text=True,
            env=env,
        )
        out[launcher] = time.perf_counter() - t0
        assert res.returncode == 0, res.stderr[-2000:]
        assert load_task(ws).name == "halfpipe"
    out["ratio"] = out["slurm"] / out["local"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", type=int, default=40)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    env, started = cluster_env()
    os.environ.update(env)
    try:
        with tempfile.TemporaryDirectory(prefix="skydeck-bench-slurm-") as t:
            tmp = Path(t)
            ovh = bench_overhead(tmp, args.instances, args.jobs)
            e2e = bench_end_to_end(tmp)
    finally:
        if started:
            subprocess.run([str(CLUSTER), "down"], capture_output=True)
    print(f"{'benchmark':<58}{'measured':>10}{'reference':>11}{'ratio':>8}  goal")
    print(
        f"{'stream of empty jobs on Slurm vs sbatch direct':<58}"
        f"{ovh['wall_s']:>9.2f}s{ovh['ref_s']:>10.2f}s{ovh['ratio']:>8.2f}  <= 1.2  "
        f"({ovh['instances']} instances, {ovh['jobs']} at once; "
        f"{1000 * (ovh['wall_s'] - ovh['ref_s']) / ovh['instances']:.1f} ms/instance more)"
    )
    print(
        f"{'mock downlink end to end: Slurm vs local launcher':<58}"
        f"{e2e['slurm']:>9.2f}s{e2e['local']:>10.2f}s{e2e['ratio']:>8.2f}  (no goal)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
