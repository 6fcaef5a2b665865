"""What the Slurm launcher tells an operator is true, against a real slurmctld and slurmd.

A job that fails is FAILED in Slurm too (``scontrol show job``: JobState and ExitCode are the
process's own), and its error line reaches the instance's note, the stream's note,
``streams --json`` and ``downlinks``; a job is QUEUED while Slurm holds it (with Slurm's
reason) and RUNNING once it runs, its queue time and run time kept apart; nothing from a task
file becomes shell text in the batch script; a workspace path with ``%`` in it works.
"""

from __future__ import annotations

import json
import subprocess
import time

from ..pipeline.conftest import cli, make_delivery, wait_for
from .test_slurm_launcher import _all_instances, _run_proc, _task, _ws

FAIL = """[[process]]
name = "build"
command = ["{python}", "-c", "import sys; print('reading epix.h5'); print('skydeck-engine: epix.h5: truncated HDF5 file', file=sys.stderr); sys.exit(2)"]
"""


def _scontrol(job_id: str) -> dict[str, str]:
    res = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stderr
    return dict(tok.split("=", 1) for tok in res.stdout.split() if "=" in tok)


def test_a_failing_job_is_failed_in_slurm_with_its_exit_code_and_its_error_line(tmp_path, capsys):
    dlid = "251207201"
    w = _task(_ws(tmp_path / "ws"), FAIL, "fails")
    make_delivery(w, dlid, **{"events": 50, "event_bytes": 400, "chunks": 1, "runs": 1})
    rc, _, err = cli(w, "run", dlid, capsys=capsys)
    assert rc == 1, err
    (pi,) = _all_instances(w, dlid)
    why = "exit code 2: skydeck-engine: epix.h5: truncated HDF5 file"
    assert (pi.status, pi.exit_code, pi.launcher, pi.note) == ("FAILED", 2, "slurm", why)
    # Slurm says what the exit file says (MinJobAge keeps the ended job for scontrol; this
    # cluster has no slurmdbd, so no sacct)
    info = _scontrol(str(pi.job_id))
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "2:0")

    rc, out, _ = cli(w, "streams", "--json", capsys=capsys)
    (view,) = json.loads(out)
    assert view["instances"][0]["note"] == why
    assert view["stream"]["status"] == "FAILED"
    assert view["stream"]["note"] == f"failed: build (build: {why})"
    rc, out, _ = cli(w, "downlinks", "--json", capsys=capsys)
    assert rc == 0
    (row,) = [d for d in json.loads(out)["downlinks"] if d["dlid"] == dlid]
    assert why in row["note"]
    rc, out, _ = cli(w, "downlinks", capsys=capsys)
    assert "epix.h5: truncated HDF5 file" in out


WAIT_THEN_RUN = """[[process]]
name = "later"
command = ["{python}", "-c", "import time; time.sleep(2)"]
batch = ["--begin=now+6"]
"""


def test_queued_while_slurm_holds_the_job_then_running_with_queue_and_run_time_apart(
    tmp_path, capsys
):
    dlid = "251207202"
    w = _task(_ws(tmp_path / "ws"), WAIT_THEN_RUN, "later")
    make_delivery(w, dlid, **{"events": 50, "event_bytes": 400, "chunks": 1, "runs": 1})
    proc = _run_proc(w, dlid, tmp_path / "run.log")
    seen: list[tuple[str, str | None]] = []

    def status() -> str | None:
        pis = _all_instances(w, dlid)
        if not pis:
            return None
        if not seen or seen[-1] != (pis[0].status, pis[0].note):
            seen.append((pis[0].status, pis[0].note))
        return pis[0].status if pis[0].status in ("SUCCESS", "FAILED") else None

    wait_for(status, 120, 0.1, "the job's end")
    assert proc.wait(30) == 0
    assert ("QUEUED", "queued in slurm: BeginTime") in seen
    assert seen[-1] == ("SUCCESS", None)
    assert seen.index(("QUEUED", "queued in slurm: BeginTime")) < [s for s, _ in seen].index(
        "SUCCESS"
    )
    (pi,) = _all_instances(w, dlid)
    assert pi.submitted and pi.started and pi.ended
    now = time.time()
    queue_s, run_s = pi.queue_s(now), pi.run_s(now)
    assert queue_s is not None and run_s is not None
    assert queue_s >= 3.0, (queue_s, run_s)  # --begin=now+6: it waited about that long
    assert 1.0 <= run_s < queue_s + 2, (queue_s, run_s)  # it slept 2 s
    rc, out, _ = cli(w, "streams", "--json", capsys=capsys)
    (got,) = json.loads(out)[0]["instances"]
    assert got["queue_s"] == round(queue_s, 3) and got["run_s"] == round(run_s, 3)
    assert got["started"] == pi.started and got["submitted"] == pi.submitted
