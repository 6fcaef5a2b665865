"""`skydeck-engine run DLID` stopped by SIGTERM or SIGINT: both stop the
running jobs, record the stream TERMINATED and exit 143 / 130. Ctrl-C used to leave the
stream claimed and its jobs to a parent-death SIGKILL (no cleanup)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from engine.store import Downlink, StateDB
from tests.pipeline.conftest import REPO, set_config, stream_status, wait_for


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_run_stops_its_jobs_on_sigterm_and_sigint(ws, tmp_path, signum: int, code: int) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "started"
    task = tmp_path / "task.toml"
    task.write_text(
        '[task]\nname = "halfpipe"\n[[process]]\nname = "slow"\n'
        f'command = ["{sys.executable}", "-c", "import pathlib, time; '
        f"pathlib.Path('{marker}').touch(); time.sleep(120)\"]\n"
    )
    ws = set_config(ws, f'[pipeline]\ntask = "{task}"\n')
    with StateDB(ws.state) as db:
        db.register_downlink(
            Downlink(
                "251125001",
                "level0",
                str(ws.incoming_level0 / "251125001"),
                1,
                False,
                None,
                time.time(),
                time.time(),
            )
        )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "-w", str(ws.root), "run", "251125001"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    run = psutil.Process(proc.pid)
    jobs: list[psutil.Process] = []
    try:
        wait_for(marker.exists, timeout=60, what="the job to start")
        jobs = run.children(recursive=True)
        assert jobs
        proc.send_signal(signum)
        proc.communicate(timeout=60)
        assert proc.returncode == code
        _, alive = psutil.wait_procs(jobs, timeout=10)
        assert alive == []
        assert stream_status(ws) == {"251125001": "TERMINATED"}
    finally:
        for p in [run, *jobs]:
            with contextlib.suppress(psutil.Error):
                p.kill()
