"""Survival: kill -9 of the daemon and of its jobs at random moments, many trials.

After each disturbance the daemon is restarted (or left to retry): every downlink must
complete, the staged output must equal an undisturbed run byte for byte, no lock may be
left, nothing may be staged twice, and no temporary file may remain where readers look.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from engine.core.workspace import init_workspace
from engine.intake import manifest
from engine.pipeline import locks
from engine.store import StateDB
from tests.pipeline.conftest import (
    REPO,
    make_delivery,
    set_config,
    start_daemon,
    stream_status,
    wait_for,
    wipe_state,
)

DLIDS = ("251125021", "251125022")
TRIALS = 10


def _fresh(root: Path):
    shutil.rmtree(root, ignore_errors=True)
    wipe_state()  # on PostgreSQL the state outlives the directory
    ws = init_workspace(root)
    ws = set_config(ws, "[disk]\nreserve_bytes = 0\n")
    ws = set_config(ws, "[halfpipe]\nmaxEvents = 100\n")
    ws = set_config(ws, "[watch]\nscan_interval_s = 1.0\nquiet_s = 0.5\n")
    make_delivery(ws, DLIDS[0], as_="fcopy", events=300, event_bytes=400, chunks=2, runs=2, seed=7)
    make_delivery(ws, DLIDS[1], events=300, event_bytes=400, chunks=2, runs=2, seed=8)
    return ws


def _staged(ws) -> dict[str, str]:
    out = {}
    for p in sorted(ws.stage.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(ws.stage))] = manifest.md5_file(p)
    return out


def _once(ws) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run(
        [sys.executable, "-m", "engine", "-w", str(ws.root), "watch", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def _check(ws, reference: dict[str, str], trial: str) -> None:
    assert stream_status(ws) == {d: "SUCCESS" for d in DLIDS}, trial
    assert _staged(ws) == reference, trial  # byte for byte, nothing extra
    assert locks.list_locks(ws.lock) == [], trial
    hidden = [
        p
        for p in [*ws.stage.rglob(".*"), *ws.downlinks.rglob(".*"), *ws.incoming_level0.glob(".*")]
    ]
    assert hidden == [], (trial, hidden)  # no temporaries left where readers look
    with StateDB(ws.state) as db:
        for d in DLIDS:
            st = db.latest_stream(d)
            assert all(p.status in ("SUCCESS", "SKIPPED") for p in db.instances(st.id)), trial


def test_kill9_daemon_and_jobs_at_random_moments(tmp_path):
    root = tmp_path / "ws"
    ws = _fresh(root)
    _once(ws)
    reference = _staged(ws)
    h5 = [k for k in reference if k.endswith(".h5")]
    assert len(h5) == 8 and len([k for k in reference if k.startswith("chunktokens")]) == 8
    rng = random.Random(20251125)
    kinds = []
    for trial in range(TRIALS):
        ws = _fresh(root)
        log = tmp_path / f"trial{trial}.log"
        d = start_daemon(ws, log)
        time.sleep(rng.uniform(0.3, 3.5))
        target = "daemon" if trial % 2 == 0 else "job"
        victim = d.pid
        if target == "job":
            kids = [c for c in psutil.Process(d.pid).children(recursive=True) if c.is_running()]
            if kids:
                victim = rng.choice(kids).pid
            else:
                target = "daemon"
        kinds.append(target)
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        if target == "daemon":
            d.wait(10)
            _once(ws)  # restart: resumes, fails+retries the orphaned instances, reclaims locks
        else:
            wait_for(
                lambda ws=ws: all(stream_status(ws).get(x) in ("SUCCESS", "FAILED") for x in DLIDS),
                120,
                what=f"trial {trial}",
            )
            d.send_signal(signal.SIGTERM)
            assert d.wait(20) == 0
        _check(ws, reference, f"trial {trial} ({target})")
    assert "daemon" in kinds
