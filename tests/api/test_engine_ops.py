"""engine.api: the views and operations the console calls (headless, real workspaces)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from engine import api
from engine.core.errors import BadInput
from engine.core.workspace import ASSETS
from engine.intake import deliveries
from engine.store import StateDB
from tests.console.conftest import fill_fixed, mock

# engine.api reads the state database: on SQLite and on PostgreSQL (tests/postgres/plugin.py)
pytestmark = pytest.mark.usefixtures("state_backend")


def test_downlink_rows_states_counts_and_stuck(ws):
    fill_fixed(ws)
    mock(ws, "251126004", events=60)  # still in incoming/
    (ws.incoming_level0 / "bogus").mkdir()  # not a downlink id: never a row
    with StateDB(ws.state) as db:
        rows = api.downlink_rows(ws, db)
        assert set(rows) == {"251123001", "251124002", "251125003", "251126004"}
        assert rows["251123001"].state == "staged" and rows["251123001"].runs == 2
        assert (
            rows["251125003"].state,
            rows["251125003"].chunks_done,
            rows["251125003"].chunks_total,
        ) == ("failed", 1, 2)
        assert rows["251126004"].state == "arrived" and rows["251126004"].date == "2025-11-26"
        assert rows["251124002"].note == ""  # RUNNING, no owner recorded
        # a runner that died: its stream is RUNNING with a dead owner -> STUCK
        dead = subprocess.Popen(["true"])
        dead.wait()
        db.conn.execute(
            "UPDATE streams SET owner_pid=?, owner_host=?, owner_start=0 WHERE dlid='251124002'",
            (dead.pid, __import__("socket").gethostname()),
        )
        note = api.downlink_rows(ws, db)["251124002"].note
        assert note.startswith("STUCK") and str(dead.pid) in note


def test_downlink_rows_rejected_and_bytes(ws):
    d = mock(ws, "251125001", events=60)
    lines = (d / "MANIFEST.md5").read_text().splitlines()
    lines[0] = "0" * 32 + lines[0][32:]  # a settled checksum mismatch
    (d / "MANIFEST.md5").write_text("\n".join(lines) + "\n")
    mock(ws, "251125002", events=60)
    with StateDB(ws.state) as db:
        deliveries.process_all(ws, db, quiet_s=0.0)
        rows = api.downlink_rows(ws, db)
        assert rows["251125001"].state == "rejected" and rows["251125001"].note
        assert rows["251125002"].state == "arrived" and rows["251125002"].bytes == 0
        f = next(ws.incoming_level0.glob("251125002/*.h5"))
        db.claim_stream("251125002", "halfpipe")  # files are recorded by a stream's jobs
        db.record_file(f, "test", None, "251125002", None)
        assert api.downlink_rows(ws, db)["251125002"].bytes == f.stat().st_size


def test_change_probe_reports_only_what_changed(ws):
    probe = api.ChangeProbe(ws)
    try:
        assert probe.poll() == set(api.ChangeProbe.TOPICS)
        assert probe.poll() == set()
        (ws.lock / "cleanup").write_text("{}")
        assert probe.poll() == {"locks"}
        with StateDB(ws.state) as other:
            other.log_event("test")
        assert probe.poll() == {"db"}
        mock(ws, "251125001", events=60)
        assert "incoming" in probe.poll()
        api.set_halt(ws, "haltStage")
        assert probe.poll() == {"flags"}
        (ws.events / "scene").mkdir()
        assert probe.poll() == {"events"}
        (ws.events / "scene" / "ev").mkdir()
        assert probe.poll() == {"events"}
        probe.forget()
        assert probe.poll() == set(api.ChangeProbe.TOPICS)
    finally:
        probe.close()


def test_halt_flags(ws):
    assert api.halts(ws, "251125001") == {}
    api.set_halt(ws, "haltPropagate")
    api.set_halt(ws, "haltPropagate", "251125001")
    assert api.halts(ws, "251125001") == {"haltPropagate": ["global", "251125001"]}
    from engine.pipeline.halts import halt_flag

    assert halt_flag(ws, "251125001", "haltPropagate") is not None  # what the runner checks
    assert api.clear_halt(ws, "haltPropagate") and not api.clear_halt(ws, "haltPropagate")
    assert api.halts(ws, "251125001") == {"haltPropagate": ["251125001"]}
    with pytest.raises(BadInput):
        api.set_halt(ws, "haltEverything")
    with pytest.raises(BadInput):
        api.set_halt(ws, "haltStage", "../etc")


def test_list_events_newest_first_and_typical_durations(ws):
    for i, name in enumerate(("old", "new")):
        d = ws.events / "scene" / name
        d.mkdir(parents=True)
        (d / "meta.json").write_text("{}")
        t = time.time() - 100 + i * 50
        import os

        os.utime(d / "meta.json", (t, t))
    (ws.events / "scene" / "partial").mkdir()  # no meta.json: not an event
    assert [e.tag for e in api.list_events(ws)] == ["new", "old"]
    fill_fixed(ws)
    with StateDB(ws.state) as db:
        typical = api.typical_durations(db)
    assert typical["mergeEvt"] == pytest.approx(39.333, abs=0.01)
    assert typical["makeEvt"] == pytest.approx(12.8, abs=0.01)


def test_jsonprogress_reports_progress_lines_and_exit(ws, tmp_path):
    out = tmp_path / "ev"
    res = subprocess.run(
        api.engine_argv(ws, "x")[:2]
        + [
            "engine.cli.jsonprogress",
            "propagate",
            str(ASSETS / "scenes" / "tboolean-box-detect.toml"),
            "-o",
            str(out),
            "--photons",
            "20000",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    prog = [x for x in lines if "progress" in x]
    assert prog and prog[-1]["progress"] == prog[-1]["total"] == 20000
    assert [x["progress"] for x in prog] == sorted(x["progress"] for x in prog)
    assert lines[-1] == {"exit": 0} and (out / "meta.json").is_file()


def test_incremental_rows_match_a_fresh_read_through_changes(ws):
    """DownlinkRows re-reads only moving streams; after each engine change it must agree
    with a fresh read (the invariant it relies on is kept by the runner and rollback)."""
    from engine.api import rollback
    from engine.store import Downlink

    fill_fixed(ws)
    reader = api.DownlinkRows(ws)
    with StateDB(ws.state) as db:

        def check() -> None:
            assert reader.read(db) == api.downlink_rows(ws, db)

        check()
        st = db.latest_stream("251124002")  # the running stream finishes
        p = db.create_instance(st.id, "cleanup", "", 0)
        db.update_instance(p.id, status="SUCCESS")
        db.release_stream(st.id, "SUCCESS", None)
        check()
        rollback(ws, "251125003")  # the failed one goes back to WAITING
        check()
        st3 = db.latest_stream("251125003")
        db.claim_stream("251125003", "halfpipe")  # ... runs and fails again
        db.release_stream(st3.id, "FAILED", "again")  # (between two reads: caught by `ended`)
        check()
        db.register_downlink(Downlink("251126004", "level0", "/x", 1, False, None, 1.0, 2.0))
        check()
        assert reader.read(db)["251125003"].note == "again"


def test_pending_delivery_shows_why(ws):
    d = mock(ws, "251125001", events=60)
    with open(d / "MANIFEST.md5", "a") as fh:  # a file that has not arrived yet
        fh.write("0" * 32 + "  late.h5\n")
    with StateDB(ws.state) as db:
        deliveries.process_all(ws, db, quiet_s=0.0)
        row = api.downlink_rows(ws, db)["251125001"]
    assert row.state == "arrived" and row.note.startswith("pending: ") and "late.h5" in row.note


def test_rollback_plan_names_the_blocker_and_the_group_that_works(ws):
    """The console's check before a rollback: a dry run that changes nothing."""
    from tests.console.test_app import latest, register, run_stream

    mock(ws, "251125001", events=120)
    register(ws)
    assert run_stream(ws, "251125001") == 0
    before = latest(ws, "251125001")
    run = next(k for p, k in before if p == "mergeEvt")
    bad = api.rollback_plan(ws, "251125001", [f"mergeEvt:{run}"])
    assert bad.blocker and "gone" in bad.blocker and "makeEvt" in bad.blocker
    assert api.rollback_plan(ws, "251125001", ["makeEvt:00001"]).blocker  # 00002's is gone too
    ok = api.rollback_plan(ws, "251125001", ["makeEvt"])
    assert ok.blocker is None and "makeEvt[00001] e1" in ok.retired
    assert api.rollback_plan(ws, "251125001", ["cleanup"]).blocker is None
    assert "no failed instance" in (api.rollback_plan(ws, "251125001", None).blocker or "")
    assert latest(ws, "251125001") == before  # nothing changed
