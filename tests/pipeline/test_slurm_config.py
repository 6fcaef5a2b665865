"""The Slurm launcher's configuration and job script, without a cluster.

Bad input is one line and exit 2 (an unknown launcher, a Slurm launcher where Slurm's
commands are missing, a bad task-file launcher or batch list, a mistyped [slurm] key); the
job script records its command's status where the launcher reads it, also when SIGTERM
(scancel) ends the command. The runs on a real cluster are in tests/slurm.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.core.settings import Settings, Slurm
from engine.core.workspace import init_workspace
from engine.pipeline.launchers import JobSpec
from engine.pipeline.launchers.slurm import exit_file, job_name, job_script

from ..conftest import engine_env, run_engine
from .conftest import make_delivery, set_config


def _ws(tmp_path: Path, extra: str):
    w = init_workspace(tmp_path / "ws")
    return set_config(w, "[disk]\nreserve_bytes = 0\n" + extra)


def test_an_unknown_launcher_is_exit_2_in_one_line(tmp_path):
    w = _ws(tmp_path, '[pipeline]\nlauncher = "lsf"\n')
    make_delivery(w, "251201201", events=50, event_bytes=400, chunks=1, runs=1)
    res = run_engine("-w", w.root, "run", "251201201")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == "skydeck-engine: unknown launcher 'lsf' (one of local, slurm)"


def test_the_slurm_launcher_without_sbatch_is_exit_2_in_one_line(tmp_path):
    w = _ws(tmp_path, '[pipeline]\nlauncher = "slurm"\n')
    make_delivery(w, "251201202", events=50, event_bytes=400, chunks=1, runs=1)
    empty = tmp_path / "bin"
    empty.mkdir()
    res = run_engine("-w", w.root, "run", "251201202", env=engine_env(PATH=str(empty)))
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (
        "skydeck-engine: launcher 'slurm': sbatch not found on PATH (install slurm-client)"
    )


def test_bad_task_file_launcher_or_batch_is_exit_2_naming_the_file(tmp_path):
    for field, why in (
        ('launcher = "slurm"', 'launcher must be "local"'),
        ('batch = "--mem=4G"', "batch must be a list of strings"),
    ):
        task = tmp_path / "t.toml"
        task.write_text(
            f'[task]\nname = "t"\n[[process]]\nname = "a"\ncommand = ["true"]\n{field}\n'
        )
        w = _ws(tmp_path, f'[pipeline]\ntask = "{task}"\n')
        res = run_engine("-w", w.root, "run", "251201203")
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert str(task) in res.stderr and why in res.stderr


def test_slurm_settings_are_typed_and_checked(tmp_path):
    w = _ws(
        tmp_path,
        '[slurm]\npartition = "milano"\naccount = "fermi:L1"\n'
        'extra_args = "--mem=4G --exclusive"\n',
    )
    assert w.settings.slurm == Slurm(
        partition="milano", account="fermi:L1", extra_args="--mem=4G --exclusive"
    )
    assert Settings().slurm.partition == ""  # empty: the cluster's default
    cfg = w.root / "skydeck.toml"
    cfg.write_text(cfg.read_text().replace('partition = "milano"', "partition = 3"))
    res = run_engine("-w", w.root, "config")
    assert res.returncode == 2
    assert res.stderr.strip() == f"skydeck-engine: {cfg}: slurm.partition must be text, got 3"


def test_unbalanced_extra_args_are_exit_2_in_one_line(tmp_path):
    w = _ws(tmp_path, '[pipeline]\nlauncher = "slurm"\n[slurm]\nextra_args = "--comment=\'x"\n')
    make_delivery(w, "251201204", events=50, event_bytes=400, chunks=1, runs=1)
    if shutil.which("sbatch") is None:
        pytest.skip("slurm-client not installed (tests/slurm/cluster.sh up installs it)")
    res = run_engine("-w", w.root, "run", "251201204")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (
        "skydeck-engine: slurm.extra_args \"--comment='x\": No closing quotation"
    )


def test_job_names_are_what_squeue_shows():
    assert (
        job_name("halfpipe", "251201001", "makeEvt", "00001") == "halfpipe-251201001-makeEvt-00001"
    )
    assert job_name("halfpipe", "251201001", "cleanup") == "halfpipe-251201001-cleanup"
    assert job_name("my task", "x", "a/b") == "my_task-x-a_b"


def _script_run(tmp_path: Path, argv: list[str], term_after: float | None = None) -> int | None:
    """Run the generated job script with bash as slurmd would; the exit file's status (the
    script itself exits with the command's status: what Slurm records, 128 + a signal)."""
    log = tmp_path / "job.log"
    spec = JobSpec(1, argv, log, {"SKYDECK_X": "a b,c'd"}, tmp_path)
    script = tmp_path / "job.sbatch"
    script.write_text(job_script(spec))
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["bash", str(script)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SLURM_JOB_ID": "7"},
            start_new_session=True,
        )
        if term_after is not None:
            time.sleep(term_after)
            os.killpg(proc.pid, signal.SIGTERM)  # scancel --signal=TERM --full: every process
        rc = proc.wait(30)
    text = exit_file(log).read_text()
    assert not list(tmp_path.glob("*.tmp"))
    status = int(text)
    assert rc == (128 - status if status < 0 else status), (rc, status)
    return status


def test_the_job_script_records_the_commands_status(tmp_path):
    py = sys.executable
    assert (
        _script_run(
            tmp_path, [py, "-c", "import os; assert os.environ['SKYDECK_X'] == \"a b,c'd\""]
        )
        == 0
    )
    assert _script_run(tmp_path, [py, "-c", "raise SystemExit(3)"]) == 3
    assert _script_run(tmp_path, ["sleep", "30"], term_after=0.5) == -15
    assert "slurm job 7 on " in (tmp_path / "job.log").read_text()
