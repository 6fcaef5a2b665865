"""The Slurm launcher against a real slurmctld and slurmd (tests/slurm/cluster.sh).

What an operator relies on: a stream on Slurm stages the same bytes as on this host; each
job is in ``squeue`` under ``<task>-<DLID>-<process>[-<key>]`` while it runs; a runner
killed with SIGKILL leaves its jobs running and the next runner adopts them (one job per
instance, never two); a job cancelled from outside is a failure the process's retries
cover; a queued job says why it waits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core.workspace import Workspace, init_workspace
from engine.pipeline.launchers import JobSpec
from engine.pipeline.launchers.slurm import SlurmLauncher, exit_file
from engine.store import StateDB

from ..pipeline.conftest import (
    REPO,
    cli,
    make_delivery,
    quick,
    set_config,
    start_daemon,
    stop_daemon,
    stream_status,
    wait_for,
)
from .conftest import SLURM_DIR, node_takes_jobs, squeue_names

SLURM = '[pipeline]\nlauncher = "slurm"\nmax_jobs = 4\n'


def _ws(root: Path, extra: str = "") -> Workspace:
    w = init_workspace(root)
    return set_config(w, "[disk]\nreserve_bytes = 0\n" + extra)


def _staged(w: Workspace, dlid: str) -> dict[str, bytes]:
    return {
        str(p.relative_to(w.stage)): p.read_bytes()
        for p in sorted((w.stage / dlid).rglob("*"))
        if p.is_file()
    }


def _all_instances(w: Workspace, dlid: str) -> list:
    """Every execution of every process of the stream ([] before the stream exists)."""
    if not w.state_db.exists():
        return []
    with StateDB(w.state) as db:
        streams = [s for s in db.streams() if s.dlid == dlid]
        return db.instances(streams[0].id, latest_only=False) if streams else []


def _jobcomp_lines() -> list[str]:
    """One line per job the cluster finished (jobcomp/filetxt), oldest first."""
    try:
        return (
            (SLURM_DIR / "jobcomp.txt").read_text(encoding="utf-8", errors="replace").splitlines()
        )
    except OSError:
        return []


def _jobcomp_names(skip: int) -> list[str]:
    """JobName of every job the cluster finished after the first ``skip`` lines."""
    return [
        tok.split("=", 1)[1]
        for line in _jobcomp_lines()[skip:]
        for tok in line.split()
        if tok.startswith("Name=")
    ]


_STARTED: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path: Path) -> Iterator[None]:
    """A failed test leaves no runner of its own nor any of its jobs behind."""
    yield
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    _STARTED.clear()
    ours = [i for i, n in squeue_names(with_dirs=True).items() if n.startswith(str(tmp_path))]
    if ours:
        subprocess.run(["scancel", *ours], capture_output=True, timeout=30)


def _run_proc(w: Workspace, dlid: str, log: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    fh = open(log, "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "-w", str(w.root), "run", dlid],
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=env,
    )
    _STARTED.append(proc)
    return proc


def _task(w: Workspace, body: str, name: str) -> Workspace:
    path = w.root / f"{name}.toml"
    path.write_text(f'[task]\nname = "{name}"\n\n{body}', encoding="utf-8")
    return set_config(w, f'[pipeline]\nlauncher = "slurm"\nmax_jobs = 4\ntask = "{path}"\n')


def test_a_mock_stream_on_slurm_stages_what_a_local_run_stages(tmp_path, capsys):
    dlid = "251201101"
    root = tmp_path / "ws"  # the staged files name their workspace: the same path both times
    staged = {}
    for launcher in ("local", "slurm"):
        shutil.rmtree(root, ignore_errors=True)
        w = _ws(root, "[halfpipe]\nmaxEvents = 200\n" + (SLURM if launcher == "slurm" else ""))
        make_delivery(w, dlid, as_="fcopy", events=600, event_bytes=400, runs=2, chunks=2)
        rc, out, err = cli(w, "run", dlid, capsys=capsys)
        assert rc == 0, err
        assert json.loads(out.splitlines()[-1])["event"] == "stream_success"
        staged[launcher] = _staged(w, dlid)
    slurm = w
    a, b = staged["local"], staged["slurm"]
    assert a and list(a) == list(b)
    assert a == b, [k for k in a if a[k] != b[k]]
    rc, out, _ = cli(slurm, "streams", "--json", capsys=capsys)
    insts = json.loads(out)[0]["instances"]
    batch = [p for p in insts if p["launcher"] == "slurm"]
    assert {p["process"] for p in batch} == {"makeEvt", "mergeIndices", "mergeEvt", "cleanup"}
    assert len({p["job_id"] for p in batch}) == len(batch)
    for p in batch:  # the job id is in the instance's log too
        assert f"slurm job {p['job_id']} " in Path(p["log_path"]).read_text()
    rc, out, _ = cli(slurm, "streams", capsys=capsys)
    assert f"job {batch[0]['job_id']:>7}" in out


def test_every_job_is_in_squeue_under_its_name_while_it_runs(tmp_path):
    dlid = "251201102"
    w = _ws(tmp_path / "ws", SLURM)
    make_delivery(w, dlid, as_="fcopy", events=400, event_bytes=400, runs=2, chunks=2)
    proc = _run_proc(w, dlid, tmp_path / "run.log")
    seen: dict[str, str] = {}
    while proc.poll() is None:
        seen |= {i: n for i, n in squeue_names().items() if dlid in n}
        time.sleep(0.05)
    assert proc.returncode == 0, (tmp_path / "run.log").read_text()
    by_job = {pi.job_id: pi for pi in _all_instances(w, dlid) if pi.job_id}
    assert seen, "no job of the stream was ever seen in squeue"
    for job_id, name in seen.items():
        pi = by_job[job_id]
        assert name == "-".join(p for p in ("halfpipe", dlid, pi.process, pi.key) if p)
    assert any(n.startswith(f"halfpipe-{dlid}-makeEvt-") for n in seen.values())


NAP = """[[process]]
name = "nap"
command = ["{python}", "-c", "import sys, time; time.sleep(float(sys.argv[2])); open(sys.argv[1], 'w').write('slept')", "{stage}/nap-{dlid}.txt", "NAP_S"]
outputs = ["{stage}/nap-{dlid}.txt"]

[[process]]
name = "after"
after = ["nap"]
command = ["{python}", "-c", "import sys; open(sys.argv[1], 'w').write(open(sys.argv[2]).read() + ' then after')", "{stage}/after-{dlid}.txt", "{stage}/nap-{dlid}.txt"]
outputs = ["{stage}/after-{dlid}.txt"]
"""


@pytest.mark.parametrize("job_ends", ["while the runner is dead", "after the new runner adopts it"])
def test_kill9_of_the_runner_then_resume_adopts_the_running_job(tmp_path, job_ends):
    dlid = "251201103" if job_ends.startswith("while") else "251201104"
    w = _task(_ws(tmp_path / "ws"), NAP.replace("NAP_S", "4"), "nap")
    before = len(_jobcomp_lines())
    make_delivery(w, dlid, **{"events": 50, "event_bytes": 400, "chunks": 1, "runs": 1})
    proc = _run_proc(w, dlid, tmp_path / "run1.log")

    def nap_running():
        pis = [p for p in _all_instances(w, dlid) if p.process == "nap"]
        if pis and pis[-1].job_id and squeue_names().get(pis[-1].job_id):
            return pis[-1]
        return None

    nap = wait_for(nap_running, 60, 0.1, "the nap job in squeue")
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert squeue_names().get(nap.job_id) == f"nap-{dlid}-nap"  # the job outlives its runner
    if job_ends.startswith("while"):
        wait_for(lambda: exit_file(Path(nap.log_path)).exists(), 60, 0.1, "the job's exit file")
    res = subprocess.run(
        [sys.executable, "-m", "engine", "-w", str(w.root), "run", dlid],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert any(e["event"] == "adopted" and e["job_id"] == nap.job_id for e in events)
    assert events[-1]["event"] == "stream_success"
    naps = [p for p in _all_instances(w, dlid) if p.process == "nap"]
    assert [(p.execution, p.status, p.job_id) for p in naps] == [(1, "SUCCESS", nap.job_id)]
    # one job per instance, ever: the cluster finished exactly one job of that name
    assert _jobcomp_names(before).count(f"nap-{dlid}-nap") == 1
    assert (w.stage / f"after-{dlid}.txt").read_text() == "slept then after"


VICTIM = """[[process]]
name = "victim"
retries = RETRIES
command = ["sh", "-c", "if [ -e {workspace}/second-{dlid} ]; then exit 0; fi; touch {workspace}/second-{dlid}; exec sleep 120"]
"""


def _victim_running(w: Workspace, dlid: str) -> str:
    """The Slurm job id of the victim process once its job runs (it touched its marker)."""

    def running_job():
        pis = [p for p in _all_instances(w, dlid) if p.process == "victim" and p.job_id]
        return pis and (w.root / f"second-{dlid}").exists() and pis[0].job_id

    return wait_for(running_job, 60, 0.1, "the victim job running")


@pytest.mark.parametrize("retries", [1, 0])
def test_scancel_from_outside_is_a_failure_the_retries_cover(tmp_path, retries):
    dlid = f"25120110{5 + retries}"
    w = _task(_ws(tmp_path / "ws"), VICTIM.replace("RETRIES", str(retries)), "victim")
    make_delivery(w, dlid, **{"events": 50, "event_bytes": 400, "chunks": 1, "runs": 1})
    proc = _run_proc(w, dlid, tmp_path / "run.log")

    job_id = _victim_running(w, dlid)
    subprocess.run(["scancel", job_id], check=True, timeout=30)
    assert proc.wait(120) == (0 if retries else 1), (tmp_path / "run.log").read_text()
    pis = _all_instances(w, dlid)
    first = pis[0]
    assert (first.execution, first.status, first.job_id) == (1, "FAILED", job_id)
    # its reason: the signal, and Slurm's own line in the job's log
    assert first.exit_code == -15 and first.note is not None
    assert first.note.startswith("killed by signal 15: ") and "CANCELLED" in first.note
    if retries:
        assert [(p.execution, p.status) for p in pis] == [(1, "FAILED"), (2, "SUCCESS")]
        assert pis[1].job_id not in (None, job_id)
    else:
        assert len(pis) == 1


def test_a_pending_job_says_why_and_cancel_reaches_it(tmp_path):
    launcher = SlurmLauncher(max_jobs=2)
    log = tmp_path / "later.log"
    h = launcher.submit(
        JobSpec(
            1, ["true"], log, {}, tmp_path, name="skydeck-test-later", batch=("--begin=now+600",)
        )
    )
    assert squeue_names()[h.job_id] == "skydeck-test-later"
    wait_for(
        lambda: launcher.poll() == [] and launcher.pending_reason(1), 30, 0.2, "a pending reason"
    )
    assert launcher.pending_reason(1) == "BeginTime"
    assert launcher.cancel_all(grace_s=1.0) == [1]
    wait_for(lambda: h.job_id not in squeue_names(), 30, 0.2, "the job leaving the queue")
    assert launcher.active() == []


def test_a_local_process_under_the_slurm_launcher_stays_on_this_host(tmp_path, capsys):
    dlid = "251201108"
    body = NAP.replace("NAP_S", "0").replace(
        'name = "after"\n', 'name = "after"\nlauncher = "local"\n'
    )
    w = _task(_ws(tmp_path / "ws"), body, "mixed")
    make_delivery(w, dlid, **{"events": 50, "event_bytes": 400, "chunks": 1, "runs": 1})
    rc, _, err = cli(w, "run", dlid, capsys=capsys)
    assert rc == 0, err
    by = {p.process: p for p in _all_instances(w, dlid)}
    assert by["nap"].launcher == "slurm" and by["nap"].job_id
    assert by["after"].launcher == "local" and by["after"].job_id is None and by["after"].pid


def test_the_daemon_on_slurm_stages_an_fcopy_delivery(tmp_path):
    dlid = "251201109"
    w = quick(
        _ws(tmp_path / "ws", "[halfpipe]\nmaxEvents = 200\n" + SLURM), scan_interval=1.0, quiet=0.5
    )
    daemon = start_daemon(w, tmp_path / "watch.log")
    _STARTED.append(daemon)
    make_delivery(w, dlid, as_="fcopy", events=400, event_bytes=400, runs=2, chunks=2)
    seen: dict[str, str] = {}

    def done() -> bool:
        nonlocal seen
        seen |= {i: n for i, n in squeue_names().items() if dlid in n}
        return stream_status(w).get(dlid) == "SUCCESS"

    wait_for(done, 120, 0.05, "the stream's success")
    assert stop_daemon(daemon) == 0
    assert any(n.startswith(f"halfpipe-{dlid}-") for n in seen.values())
    staged = _staged(w, dlid)
    assert staged and all(k.endswith(".h5") for k in staged)
    batch = [p for p in _all_instances(w, dlid) if p.launcher == "slurm"]
    assert batch and all(p.job_id and p.status == "SUCCESS" for p in batch)


def test_a_queued_jobs_reason_reaches_streams_json(tmp_path, capsys):
    dlid = "251201110"
    body = '[[process]]\nname = "later"\ncommand = ["true"]\nbatch = ["--begin=now+600"]\n'
    w = _task(_ws(tmp_path / "ws"), body, "later")
    make_delivery(w, dlid, **{"events": 50, "event_bytes": 400, "chunks": 1, "runs": 1})
    _run_proc(w, dlid, tmp_path / "run.log")

    def note():
        pis = _all_instances(w, dlid)
        return pis and pis[0].note

    assert wait_for(note, 60, 0.2, "the queued job's note") == "queued in slurm: BeginTime"
    rc, out, _ = cli(w, "streams", "--json", capsys=capsys)
    (pi,) = json.loads(out)[0]["instances"]
    assert (pi["status"], pi["note"], pi["launcher"]) == (
        "QUEUED",
        "queued in slurm: BeginTime",
        "slurm",
    )
    assert squeue_names()[pi["job_id"]] == f"later-{dlid}-later"


DIE_BEFORE_RECORDING = """
import os, sys
from engine.core.workspace import Workspace
from engine.intake import deliveries, inbox
from engine.pipeline.launchers import make_launcher
from engine.pipeline.runner import StreamRunner
from engine.pipeline.task import load_task
from engine.store import StateDB
ws = Workspace.open(sys.argv[1])
db = StateDB(ws.state)
for c in inbox.scan(ws):
    deliveries.process(ws, db, c, 0.0)
task = load_task(ws)
st, why = db.claim_stream(sys.argv[2], task.name)
runner = StreamRunner(ws, db, task, st, make_launcher(ws.settings, 2, "slurm"))
db.set_job = lambda *a: os._exit(9)  # killed right after sbatch, before the job id is written
runner.step()
"""


def test_a_runner_killed_between_sbatch_and_recording_the_id_still_gets_one_job(tmp_path):
    dlid = "251201111"
    w = _task(_ws(tmp_path / "ws"), NAP.replace("NAP_S", "3"), "nap")
    make_delivery(w, dlid, **{"events": 50, "event_bytes": 400, "chunks": 1, "runs": 1})
    before = len(_jobcomp_lines())
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run(
        [sys.executable, "-c", DIE_BEFORE_RECORDING, str(w.root), dlid],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert res.returncode == 9, res.stderr
    (pi,) = _all_instances(w, dlid)
    assert (pi.status, pi.job_id) == ("WAITING", None)  # nothing says a job runs...
    live = [i for i, n in squeue_names().items() if n == f"nap-{dlid}-nap"]
    assert len(live) == 1  # ...but one does
    res = subprocess.run(
        [sys.executable, "-m", "engine", "-w", str(w.root), "run", dlid],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [e["job_id"] for e in events if e["event"] == "adopted"] == live
    naps = [p for p in _all_instances(w, dlid) if p.process == "nap"]
    assert [(p.execution, p.status, p.job_id) for p in naps] == [(1, "SUCCESS", live[0])]
    assert _jobcomp_names(before).count(f"nap-{dlid}-nap") == 1


def test_a_node_failure_runs_the_job_again_without_using_a_retry(tmp_path):
    dlid = "251201112"
    body = VICTIM.replace("RETRIES", "0")  # no retries: only a free run again can save it
    w = _task(_ws(tmp_path / "ws"), body, "victim")
    make_delivery(w, dlid, **{"events": 50, "event_bytes": 400, "chunks": 1, "runs": 1})
    proc = _run_proc(w, dlid, tmp_path / "run.log")

    job_id = _victim_running(w, dlid)
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()
    subprocess.run(
        ["scontrol", "update", f"nodename={node}", "state=down", "reason=skydeck-test"],
        check=True,
        timeout=30,
    )
    try:
        wait_for(lambda: job_id not in squeue_names(), 30, 0.2, "the job lost with the node")
    finally:
        subprocess.run(
            ["scontrol", "update", f"nodename={node}", "state=resume"],
            capture_output=True,
            timeout=30,
        )
        wait_for(lambda: node_takes_jobs(dict(os.environ)), 30, 0.2, "the node back in service")
    assert proc.wait(120) == 0, (tmp_path / "run.log").read_text()
    pis = _all_instances(w, dlid)
    assert [(p.execution, p.status, p.auto_retry) for p in pis] == [
        (1, "FAILED", 0),
        (2, "SUCCESS", 0),
    ]
    assert pis[0].note.startswith("NODE_FAIL: ") and pis[0].job_id == job_id


WRAPPED = """[[process]]
name = "wrapped"
wrapper = ["env", "SKYDECK_WRAPPED=in-{dlid}"]
command = ["{python}", "-c", "import os, sys; open(sys.argv[1], 'w').write(os.environ['SKYDECK_WRAPPED'])", "{stage}/wrapped-{dlid}.txt"]
outputs = ["{stage}/wrapped-{dlid}.txt"]

[[process]]
name = "gpu"
after = ["wrapped"]
gpus = 1
command = ["true"]
"""


def test_a_wrapper_runs_around_the_command_and_gpus_reach_sbatch(tmp_path, capsys):
    """HalfPipe ran its jobs in a container (``singularity exec IMAGE``): a process's
    ``wrapper`` goes before its command in the batch job; ``gpus`` becomes ``--gpus``, which
    this GPU-less node refuses, so the instance fails naming sbatch's refusal."""
    dlid = "251201109"
    w = _task(_ws(tmp_path / "ws"), WRAPPED, "wrapped")
    make_delivery(w, dlid, **{"events": 50, "event_bytes": 400, "chunks": 1, "runs": 1})
    rc, _, _ = cli(w, "run", dlid, capsys=capsys)
    assert rc != 0  # the gpu process cannot be placed
    assert (w.stage / f"wrapped-{dlid}.txt").read_text() == f"in-{dlid}"
    by = {p.process: p for p in _all_instances(w, dlid)}
    assert by["wrapped"].status == "SUCCESS" and by["wrapped"].launcher == "slurm"
    assert by["gpu"].status == "FAILED"
    assert "sbatch refused the job" in (by["gpu"].note or ""), by["gpu"].note
