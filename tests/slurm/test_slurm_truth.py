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
from pathlib import Path

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


HOSTILE = {
    "SUBST": "$(touch PWNED)",
    "TICKS": "`touch PWNED2`",
    "QUOTES": "it's \"quoted\" '' \\\"",
    "NEWLINE": "line1\nline2; touch PWNED3",
    "META": "a;b|c&d>e<f *",
    "DOLLAR": "$HOME ${{HOME}}",
}
HOSTILE_NAME = "x$(touch PWN4)`id`'\"; n"
SAYS = (  # no braces: a command is a template
    "import json, os, sys; json.dump(dict(env=dict((k, os.environ[k]) for k in "
    "sys.argv[2].split()), argv=sys.argv[3:], process=os.environ['PIPELINE_PROCESS']), "
    "open(sys.argv[1], 'w'))"
)


def _hostile_task() -> str:
    env = ", ".join(f"{k} = {json.dumps(v)}" for k, v in HOSTILE.items())
    args = [v for v in HOSTILE.values() if "{" not in v]
    command = ["{python}", "-c", SAYS, "{stage}/said.json", " ".join(HOSTILE), *args]
    return (
        f"[[process]]\nname = {json.dumps(HOSTILE_NAME)}\n"
        f"command = {json.dumps(command)}\nenv = {{ {env} }}\n"
    )


def test_nothing_from_a_task_file_becomes_shell_text_in_the_batch_script(tmp_path, capsys):
    dlid = "251207203"
    w = _task(_ws(tmp_path / "ws"), _hostile_task(), "hostile")
    make_delivery(w, dlid, **{"events": 50, "event_bytes": 400, "chunks": 1, "runs": 1})
    rc, _, err = cli(w, "run", dlid, capsys=capsys)
    assert rc == 0, err
    said = json.loads((w.stage / "said.json").read_text())
    literal = {k: v.replace("{{", "{").replace("}}", "}") for k, v in HOSTILE.items()}
    assert said["env"] == literal
    assert said["argv"] == [v for v in HOSTILE.values() if "{" not in v]
    assert said["process"] == HOSTILE_NAME
    assert not list(tmp_path.rglob("PWN*")) and not list(w.root.parent.rglob("PWN*"))
    (pi,) = _all_instances(w, dlid)
    assert pi.launcher == "slurm" and pi.job_id and pi.status == "SUCCESS"


def test_an_env_key_that_is_no_variable_name_never_reaches_sbatch(tmp_path, capsys):
    w = _task(
        _ws(tmp_path / "ws"),
        '[[process]]\nname = "p"\ncommand = ["true"]\nenv = { "X=1; touch PWNED #" = "v" }\n',
        "badkey",
    )
    rc, _, err = cli(w, "run", "251207204", capsys=capsys)
    assert rc == 2 and "env key 'X=1; touch PWNED #' is not a variable name" in err
    assert not list(tmp_path.rglob("PWN*"))


def test_a_workspace_under_a_percent_directory_runs_its_jobs(tmp_path, capsys):
    dlid = "251207205"
    root = tmp_path / "a%jb%%c" / "ws"
    w = _task(_ws(root), FAIL.replace("build", "echo"), "percent")
    make_delivery(w, dlid, **{"events": 50, "event_bytes": 400, "chunks": 1, "runs": 1})
    rc, _, err = cli(w, "run", dlid, capsys=capsys)
    assert rc == 1, err  # the job's own failure, seen where it logs: under a%jb%%c
    (pi,) = _all_instances(w, dlid)
    assert pi.log_path and "/a%jb%%c/ws/" in pi.log_path
    assert pi.exit_code == 2 and pi.note.endswith("epix.h5: truncated HDF5 file")
    log = Path(pi.log_path).read_text(encoding="utf-8")
    assert "truncated HDF5 file" in log and f"slurm job {pi.job_id}" in log
    assert _scontrol(str(pi.job_id))["WorkDir"] == str(w.root)
    # nothing written where Slurm would have expanded %j / %%
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a%jb%%c"]
