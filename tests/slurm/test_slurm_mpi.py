"""MPI event building under Slurm (tests/slurm/cluster.sh): a makeEvt with ``[build] ranks =
2`` is one batch job of two tasks whose ranks Hydra's ``mpiexec`` starts inside the
allocation, and it stages what one rank stages; plain ``srun -n K skydeck-engine build``
(K single-rank copies racing on one output) is refused with the command to use instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from engine.core.workspace import Workspace, init_workspace
from engine.store import StateDB

from ..pipeline.conftest import REPO, cli, make_delivery, set_config


def _ws(root: Path, extra: str) -> Workspace:
    return set_config(init_workspace(root), "[disk]\nreserve_bytes = 0\n" + extra)


def _staged(w: Workspace, dlid: str) -> dict[str, bytes]:
    return {
        str(p.relative_to(w.stage)): p.read_bytes()
        for p in sorted((w.stage / dlid).rglob("*"))
        if p.is_file()
    }


def test_an_mpi_makeevt_of_two_tasks_stages_what_one_local_rank_stages(tmp_path, capsys):
    dlid = "251201201"
    root = tmp_path / "ws"  # the staged files name their workspace: the same path both times
    staged = {}
    for how, extra in (
        ("local, 1 rank", ""),
        ("slurm, 2 ranks", '[pipeline]\nlauncher = "slurm"\nmax_jobs = 2\n[build]\nranks = 2\n'),
    ):
        shutil.rmtree(root, ignore_errors=True)
        w = _ws(root, "[halfpipe]\nmaxEvents = 200\n" + extra)
        make_delivery(w, dlid, events=600, event_bytes=400, runs=2, chunks=2)
        rc, out, err = cli(w, "run", dlid, capsys=capsys)
        assert rc == 0, (how, err, out[-2000:])
        staged[how] = _staged(w, dlid)
    a, b = staged["local, 1 rank"], staged["slurm, 2 ranks"]
    assert a and a == b, [k for k in a if a.get(k) != b.get(k)]
    with StateDB(w.state) as db:
        st = db.latest_stream(dlid)
        assert st is not None
        make = [p for p in db.instances(st.id) if p.process == "makeEvt"]
    assert len(make) == 2 and all(p.launcher == "slurm" and p.job_id for p in make)
    for p in make:  # the job asked for two tasks, and the build ran on two ranks
        log = Path(p.log_path).read_text()
        assert "-n 2" in log or '"ranks": 2' in log, log[-1500:]
        res = subprocess.run(
            ["scontrol", "show", "job", str(p.job_id)], capture_output=True, text=True, timeout=30
        )
        if res.returncode == 0 and "NumTasks=" in res.stdout:  # kept for MinJobAge seconds
            assert "NumTasks=2" in res.stdout, res.stdout


def test_plain_srun_copies_of_a_build_are_refused_with_the_command_to_use(tmp_path):
    w = _ws(tmp_path / "ws", "")
    src = make_delivery(w, "251201202", events=50, chunks=1)
    inputs = sorted(str(p) for p in src.rglob("*.h5"))
    out = tmp_path / "out.h5"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run(
        ["srun", "-n", "2", sys.executable, "-m", "engine", "build", *inputs, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "separate copies" in ln]
    assert len(lines) == 2, res.stderr  # one line from each copy
    assert "srun --mpi=pmi2 -n 2 skydeck-engine build" in lines[0]
    assert "mpiexec -n 2" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".out.h5*"))  # nothing half-written
    # the same build through MPI between the ranks is fine
    res = subprocess.run(
        [
            "srun",
            "--mpi=pmi2",
            "-n",
            "2",
            sys.executable,
            "-m",
            "engine",
            "build",
            *inputs,
            "-o",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["ranks"] == 2


def test_contrib_build_sbatch_runs_one_build_on_two_ranks(tmp_path):
    """The README's way to build on a cluster: `sbatch --ntasks=K contrib/slurm/build.sbatch`."""
    w = _ws(tmp_path / "ws", "")
    src = make_delivery(w, "251201203", events=80, chunks=1)
    inputs = sorted(str(p) for p in src.rglob("*.h5"))
    out, log = tmp_path / "built.h5", tmp_path / "build.log"
    env = dict(os.environ, SKYDECK_ENGINE=str(Path(sys.executable).with_name("skydeck-engine")))
    res = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--ntasks=2",
            f"--output={log}",
            f"--chdir={tmp_path}",
            str(REPO / "contrib/slurm/build.sbatch"),
            str(out),
            *inputs,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    job = res.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        q = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, timeout=30)
        if job not in q.stdout:
            break
        time.sleep(0.5)
    text = log.read_text()
    summary = json.loads([ln for ln in text.splitlines() if ln.startswith("{")][-1])
    assert summary["ranks"] == 2 and out.exists(), text[-2000:]
