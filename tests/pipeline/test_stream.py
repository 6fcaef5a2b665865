"""The stream runner: the real halfpipe task end to end, retries, rollback, halts, locks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest

from engine.builder.verify import verify_built
from engine.core.errors import BadInput
from engine.core.owner import Owner
from engine.intake import manifest
from engine.mock.delivery import principal_table
from engine.pipeline import locks
from engine.pipeline.launchers.local import LocalLauncher
from engine.pipeline.runner import StreamRunner
from engine.pipeline.task import load_task, parse_task
from engine.store import Downlink, StateDB

from .conftest import cli, make_delivery, set_config, spec


def _views(ws, capsys, dlid=None):
    rc, out, _ = cli(ws, "streams", "--json", *([dlid] if dlid else []), capsys=capsys)
    assert rc == 0
    return json.loads(out)


def test_halfpipe_stream_end_to_end(ws, capsys):
    ws = set_config(ws, "[halfpipe]\nmaxEvents = 200\n")
    make_delivery(ws, "251125001", as_="fcopy", events=600, event_bytes=400, runs=2, chunks=2)
    rc, out, err = cli(ws, "run", "251125001", capsys=capsys)
    assert rc == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["event"] == "stream_success"
    v = _views(ws, capsys)[0]
    assert v["stream"]["status"] == "SUCCESS"
    by = {(p["process"], p["key"]): p for p in v["instances"]}
    assert by[("propagate", "")]["status"] == "SKIPPED"  # the delivery has no gensteps
    assert {p["status"] for p in v["instances"]} <= {"SUCCESS", "SKIPPED"}
    assert all(Path(p["log_path"]).is_file() for p in v["instances"] if p["log_path"])
    runs = sorted(k for (proc, k) in by if proc == "mergeEvt")
    assert len(runs) == 2
    # staged files: every event exactly once, in time order, at most maxEvents per file
    ts_all = []
    staged = sorted(ws.stage.glob("251125001/r*/r*-e*.h5"))
    for f in staged:
        rep = verify_built(f)
        assert rep.ok, rep.problems
        with h5py.File(f, "r") as h:
            assert 0 < len(h["timestamp"]) <= 200
            ts_all.append(h["timestamp"][:])
            assert f.parent.name == f"r{int(h['run'][0]):010d}"
        token = ws.stage / "chunktokens" / f.parent.name / f.stem
        assert token.is_file()
    ts = np.concatenate(ts_all)
    want, _, _ = principal_table(spec("251125001", events=600, event_bytes=400))
    assert np.array_equal(np.sort(ts), want) and len(np.unique(ts)) == 600
    # the state db knows every staged file with its checksum; no lock is left
    with StateDB(ws.state) as db:
        recs = {r.path: r for r in db.files("251125001", producer="mergeEvt")}
        for f in staged:
            assert recs[str(f)].md5 == manifest.md5_file(f)
            assert str(ws.stage / "chunktokens" / f.parent.name / f.stem) in recs  # tokens too
        assert not db.files("251125001", producer="makeEvt")  # cleanup removed intermediates
    assert not list(ws.downlinks.glob("251125001/251125001-*.h5"))
    assert locks.list_locks(ws.lock) == []
    # usage is reported per downlink
    rc, out, _ = cli(ws, "stage", "--json", capsys=capsys)
    assert json.loads(out)["downlinks"]["251125001"]["stage"]["files"] == len(staged)


def _task(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "task.toml"
    p.write_text('[task]\nname = "halfpipe"\n' + text)
    return p


def _register(ws, dlid="251125001", gensteps=False) -> None:
    with StateDB(ws.state) as db:
        db.register_downlink(
            Downlink(
                dlid,
                "level0",
                str(ws.incoming_level0 / dlid),
                1,
                gensteps,
                None,
                time.time(),
                time.time(),
            )
        )


FLAKY = (
    "import os, sys; p = sys.argv[1]; n = int(open(p).read()) if os.path.exists(p) else 0; "
    "open(p, 'w').write(str(n + 1)); sys.exit(0 if n + 1 >= int(sys.argv[2]) else 3)"
)


def test_retry_once_then_success_and_failure_then_rollback(ws, tmp_path, capsys):
    counter = tmp_path / "count"
    task = _task(
        tmp_path,
        f"""
[[process]]
name = "flaky"
command = ["{{python}}", "-c", "{FLAKY}", "{counter}", "4"]
retries = 1
[[process]]
name = "after"
after = ["flaky"]
command = ["true"]
""",
    )
    ws = set_config(ws, f'[pipeline]\ntask = "{task}"\n')
    _register(ws)
    rc, _, err = cli(ws, "run", "251125001", capsys=capsys)
    assert rc == 1 and "FAILED" in err and err.count("\n") == 1
    v = _views(ws, capsys)[0]
    assert v["stream"]["status"] == "FAILED"
    flaky = [p for p in v["instances"] if p["process"] == "flaky"][0]
    assert flaky["execution"] == 2 and flaky["auto_retry"] == 1 and flaky["exit_code"] == 3
    assert counter.read_text() == "2"
    # rollback: a new execution (3), and it runs "after" too; one more failure, then success
    rc, out, _ = cli(ws, "rollback", "251125001", capsys=capsys)
    assert rc == 0 and "flaky" in out
    rc, _, _ = cli(ws, "run", "251125001", capsys=capsys)
    assert rc == 0 and counter.read_text() == "4"
    v = _views(ws, capsys)[0]
    assert v["stream"]["status"] == "SUCCESS"
    flaky = [p for p in v["instances"] if p["process"] == "flaky"][0]
    assert flaky["execution"] == 4 and flaky["status"] == "SUCCESS"
    allv = json.loads(cli(ws, "streams", "--all", "--json", capsys=capsys)[1])[0]
    assert [p["execution"] for p in allv["instances"] if p["process"] == "flaky"] == [1, 2, 3, 4]
    # rollback of a named process re-runs it and what depends on it
    rc, out, _ = cli(ws, "rollback", "251125001", "flaky", capsys=capsys)
    assert "flaky" in out and "after" in out
    rc, _, err = cli(ws, "rollback", "251125001", "nosuch", capsys=capsys)
    assert rc == 2 and "no process 'nosuch'" in err
    # a key no instance has was exit 0, retiring everything downstream and nothing named
    cli(ws, "run", "251125001", capsys=capsys)
    before = _views(ws, capsys)[0]["instances"]
    for bad in ("flaky:00009", "flaky:../../x"):
        rc, _, err = cli(ws, "rollback", "251125001", bad, capsys=capsys)
        assert rc == 2 and "has no instance flaky:" in err and err.count("\n") == 1, err
    assert _views(ws, capsys)[0]["instances"] == before  # nothing retired


def _step_until(runner: StreamRunner, launcher: LocalLauncher, cond, timeout=30.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        for res in launcher.poll():
            runner.on_exit(res)
        status = runner.step()
        if cond(status):
            return status
        time.sleep(0.02)
    raise AssertionError("condition not reached")


SETRUNS = (
    "import os; open(os.environ['PIPELINE_SUMMARY'], 'a').write('Pipeline.runs: 100 200' + chr(10))"
)


def test_halt_flag_holds_and_run_lock_waits_then_reclaims(ws, tmp_path):
    task = _task(
        tmp_path,
        f"""
[[process]]
name = "mergeIndices"
command = ["{{python}}", "-c", "{SETRUNS}"]
[[process]]
name = "mergeEvt"
after = ["mergeIndices"]
foreach = "runs"
command = ["true"]
lock = "{{runhex}}"
halt = "haltStage"
""",
    )
    ws = set_config(ws, f'[pipeline]\ntask = "{task}"\n')
    _register(ws)
    (ws.path("flags") / "haltStage").touch()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = ws.lock / f"{100:08x}"
        locks.acquire(
            lock,
            "251125000",
            "mergeEvt",
            Owner(holder.pid, socket.gethostname(), psutil.Process(holder.pid).create_time()),
        )
        with StateDB(ws.state) as db:
            st, _ = db.claim_stream("251125001", "halfpipe")
            launcher = LocalLauncher(2)
            runner = StreamRunner(ws, db, load_task(ws), st, launcher)

            def notes():
                return {
                    pi.key: (pi.status, pi.note)
                    for pi in db.instances(st.id)
                    if pi.process == "mergeEvt"
                }

            _step_until(
                runner,
                launcher,
                lambda s: (
                    len(notes()) == 2 and all(n and "halted" in n for _, n in notes().values())
                ),
            )
            (ws.path("flags") / "haltStage").unlink()
            _step_until(
                runner,
                launcher,
                lambda s: (
                    notes()["200"][0] == "SUCCESS"
                    and "waiting for lock" in (notes()["100"][1] or "")
                ),
            )
            holder.kill()
            holder.wait()
            assert _step_until(runner, launcher, lambda s: s is not None) == "SUCCESS"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert not lock.exists()


def test_bad_task_files_are_refused(tmp_path):
    for text, why in [
        ("", "defines no"),
        ('[[process]]\nname = "a"\ncommand = ["true"]\nafter = ["b"]\n', "not defined"),
        ('[[process]]\nname = "a"\n', "exactly one"),
        ('[[process]]\nname = "a"\ncommand = ["true"]\nbogus = 1\n', "unknown field"),
        ('[[process]]\nname = "a"\ncommand = ["{x"]\n', "bad placeholder"),
    ]:
        with pytest.raises(BadInput, match=why):
            parse_task(_task(tmp_path, text))


def test_run_cli_errors(ws, capsys):
    rc, _, err = cli(ws, "run", "251125009", capsys=capsys)
    assert rc == 2 and "251125009" in err and "not registered" in err
    rc, _, err = cli(ws, "run", "bogus", capsys=capsys)
    assert rc == 2 and "invalid downlink id" in err
    _register(ws)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        with StateDB(ws.state) as db, db.tx() as c:
            c.execute(
                "INSERT INTO streams (task, dlid, execution, status, owner_pid, owner_host, "
                "owner_start, created) VALUES ('halfpipe', '251125001', 1, 'RUNNING', ?, ?, ?, ?)",
                (
                    holder.pid,
                    socket.gethostname(),
                    psutil.Process(holder.pid).create_time(),
                    time.time(),
                ),
            )
        rc, _, err = cli(ws, "run", "251125001", capsys=capsys)
        assert rc == 3 and "held by" in err
    finally:
        holder.kill()
        holder.wait()


def test_launching_pauses_under_the_disk_reserve(ws, tmp_path):
    task = _task(tmp_path, '[[process]]\nname = "job"\ncommand = ["true"]\n')
    ws = set_config(ws, f'[pipeline]\ntask = "{task}"\n')
    ws = set_config(ws, "[disk]\nreserve_bytes = 1_000_000_000_000_000\n")  # 1 EB: never free
    _register(ws)
    with StateDB(ws.state) as db:
        st, _ = db.claim_stream("251125001", "halfpipe")
        launcher = LocalLauncher(1)
        runner = StreamRunner(ws, db, load_task(ws), st, launcher)
        _step_until(
            runner, launcher, lambda s: "launching paused" in (db.instances(st.id)[0].note or "")
        )
        assert db.instances(st.id)[0].status == "READY" and not launcher.active()
        ws.settings = ws.settings.replace("disk", reserve_bytes=0)  # space freed / reserve lowered
        assert _step_until(runner, launcher, lambda s: s is not None) == "SUCCESS"


@pytest.mark.mpi
def test_makeevt_under_mpiexec(ws, capsys):
    mpiexec = Path(sys.executable).with_name("mpiexec")
    if not mpiexec.exists():
        pytest.skip("no mpiexec in the venv (mpich wheel)")
    ws = set_config(ws, "[build]\nranks = 2\n")
    make_delivery(ws, "251125001", events=100, event_bytes=400, chunks=1, runs=1)
    rc, _, err = cli(ws, "run", "251125001", capsys=capsys)
    assert rc == 0, err
    head = (ws.logs / "251125001" / "makeEvt-00001-e1.log").read_text().splitlines()[0]
    assert str(mpiexec) in head and "-n 2" in head
    staged = sorted(ws.stage.glob("251125001/r*/*.h5"))
    assert staged and all(verify_built(f).ok for f in staged)


def test_delivery_with_gensteps_adds_propagate(ws, capsys):
    from engine.mock.delivery import MockSpec, deliver

    deliver(
        MockSpec(
            "251125001",
            sources=2,
            events=60,
            event_bytes=400,
            runs=1,
            chunks=1,
            scene="tboolean-box",
            gensteps_photons=5000,
        ),
        "level0",
        ws.incoming_level0,
    )
    rc, _, err = cli(ws, "run", "251125001", capsys=capsys)
    assert rc == 0, err
    v = _views(ws, capsys)[0]
    prop = [p for p in v["instances"] if p["process"] == "propagate"][0]
    assert prop["status"] == "SUCCESS"
    ev = ws.events / "tboolean-box" / "251125001"
    meta = json.loads((ev / "meta.json").read_text())
    assert (ev / "ht.npy").is_file() and meta["photons"] == 5000
    with StateDB(ws.state) as db:
        assert {Path(r.path).name for r in db.files("251125001", producer="propagate")} >= {
            "ht.npy",
            "meta.json",
        }


@pytest.mark.parametrize(
    "scene,kind,first", [("water-tank", "cerenkov", "CK"), ("scint-tank", "scintillation", "SI")]
)
def test_delivery_with_cerenkov_or_scintillation_gensteps(ws, capsys, scene, kind, first):
    """A delivery carrying the gensteps of charged tracks: its stream propagates them and
    stages the hits; the event's summary (the Hits panel's) names where the light came from."""
    from engine.mock.delivery import MockSpec, deliver
    from engine.propagate.hits import summarize

    deliver(
        MockSpec(
            "251125002",
            sources=2,
            events=60,
            event_bytes=400,
            runs=1,
            chunks=1,
            scene=scene,
            gensteps_photons=20_000,
            gensteps_kind=kind,
        ),
        "level0",
        ws.incoming_level0,
    )
    rc, _, err = cli(ws, "run", "251125002", capsys=capsys)
    assert rc == 0, err
    v = _views(ws, capsys)[0]
    assert [p for p in v["instances"] if p["process"] == "propagate"][0]["status"] == "SUCCESS"
    ev = ws.events / scene / "251125002"
    meta = json.loads((ev / "meta.json").read_text())
    assert meta["photons"] >= 20_000 and meta["hits"] == len(np.load(ev / "ht.npy")) > 0
    s = summarize(ev)
    assert s.sources[first][0] > 0 and s.sources[first][1] > 0
    with StateDB(ws.state) as db:
        assert {Path(r.path).name for r in db.files("251125002", producer="propagate")} >= {
            "ht.npy",
            "meta.json",
        }


def test_run_of_a_finished_stream(ws, tmp_path, capsys):
    task = _task(tmp_path, '[[process]]\nname = "job"\ncommand = ["false"]\n')
    ws = set_config(ws, f'[pipeline]\ntask = "{task}"\n')
    _register(ws)
    assert cli(ws, "run", "251125001", capsys=capsys)[0] == 1
    rc, _, err = cli(ws, "run", "251125001", capsys=capsys)
    where = ws.state_url.redacted if ws.state_url else "state.db"  # the state it read
    assert rc == 2 and "rollback" in err and where in err
    task.write_text(task.read_text().replace('"false"', '"true"'))
    cli(ws, "rollback", "251125001", capsys=capsys)
    assert cli(ws, "run", "251125001", capsys=capsys)[0] == 0
    assert cli(ws, "run", "251125001", capsys=capsys)[0] == 0  # already SUCCESS: nothing to do
