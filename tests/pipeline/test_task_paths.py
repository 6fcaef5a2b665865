"""Every path a task file names stays in its area, checked when the task file is loaded: a
lock path such as ``../state.db`` (which once removed the state database) is one line on
stderr naming the file and the key, exit 2, and nothing is touched; so are outputs outside
the output areas, env keys that are no variable names, process names that are no file
names. What a job reports (``Pipeline.output``) is held to the same areas when it ends.
"""

from __future__ import annotations

import json

import pytest

from engine.core.workspace import Workspace

from .conftest import cli_proc, make_delivery, set_config

GOOD = '[[process]]\nname = "p"\ncommand = ["true"]\n'
BAD = [
    ('lock = "../state.db"', "lock = '../state.db' leaves the lock area"),
    ('stream_lock = "../../etc/{dlid}"', "stream_lock = '../../etc/{dlid}' leaves the lock area"),
    ('removes_stream_lock = ".."', "removes_stream_lock = '..' leaves the lock area"),
    ('lock = "{level0}"', "lock = '{level0}' leaves the lock area"),
    ('lock = "/tmp/x"', "lock = '/tmp/x' leaves the lock area"),
    ('lock = "sub/x"', "lock = 'sub/x' leaves the lock area"),
    ('outputs = ["{workspace}/state.db"]', "outputs = '{workspace}/state.db' leaves the output"),
    ('outputs = ["/etc/passwd"]', "outputs = '/etc/passwd' leaves the output areas"),
    ('outputs = ["{outdir}/../../state.db"]', "leaves the output areas"),
    ('env = { "A;touch x" = "1" }', "env key 'A;touch x' is not a variable name"),
    ('env = { "1A" = "1" }', "env key '1A' is not a variable name"),
    ('env = { "A B" = "1" }', "env key 'A B' is not a variable name"),
    ('halt = "../../state.db"', "halt = '../../state.db' is no flag name"),
]


def _task(w: Workspace, body: str) -> Workspace:
    path = w.root / "t.toml"
    path.write_text(f'[task]\nname = "t"\n\n{body}', encoding="utf-8")
    return set_config(w, f'[pipeline]\ntask = "{path}"\n')


@pytest.mark.parametrize(("line", "said"), BAD, ids=[b[0] for b in BAD])
def test_a_path_out_of_its_area_is_refused_at_load(ws, line, said):
    dlid = "251207401"
    w = _task(ws, GOOD + line + "\n")
    make_delivery(w, dlid, events=50, chunks=1, runs=1)
    before = {p: p.stat().st_mtime_ns for p in w.root.iterdir() if p.is_file()}
    res = cli_proc(w, "run", dlid)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert str(w.root / "t.toml") in lines[0] and "process 'p'" in lines[0]
    assert said in lines[0], lines[0]
    # nothing touched: no stream, the state db where it was
    assert all(p.exists() for p in before)
    res = cli_proc(w, "streams", "--json")
    assert res.returncode == 0 and json.loads(res.stdout) == []


@pytest.mark.parametrize("name", ["../p", "a/b", ".hidden", "x\ny"])
def test_a_process_name_that_is_no_file_name_is_refused(ws, name):
    w = _task(ws, f"[[process]]\nname = {json.dumps(name)}\ncommand = [\"true\"]\n")
    res = cli_proc(w, "run", "251207402")
    assert res.returncode == 2
    assert "a process name is a file name" in res.stderr and "t.toml" in res.stderr


def test_the_default_task_and_a_safe_lock_pass(ws):
    w = _task(ws, GOOD + 'lock = "{dlid}-{process}"\nstream_lock = "halfpipe-{dlid}"\n')
    make_delivery(w, "251207404", events=50, chunks=1, runs=1)
    res = cli_proc(w, "run", "251207404")
    assert res.returncode == 0, res.stderr


def test_a_job_reporting_an_output_outside_the_areas_fails_and_records_nothing(ws):
    dlid = "251207403"
    code = (
        "import os; open(os.environ['PIPELINE_SUMMARY'], 'a')"
        ".write('Pipeline.output: ' + os.environ['SKYDECK_WORKSPACE'] + '/state.db\\n')"
    )
    w = _task(ws, f'[[process]]\nname = "p"\ncommand = ["{{python}}", "-c", {json.dumps(code)}]\n')
    make_delivery(w, dlid, events=50, chunks=1, runs=1)
    res = cli_proc(w, "run", dlid)
    assert res.returncode == 1, res.stderr
    res = cli_proc(w, "streams", "--json")
    (pi,) = json.loads(res.stdout)[0]["instances"]
    assert pi["status"] == "FAILED"
    assert pi["note"].startswith("bad job report: Pipeline.output ")
    assert "state.db" in pi["note"] and "is outside" in pi["note"]
    res = cli_proc(w, "stage", "--json")
    assert "state.db" not in res.stdout
