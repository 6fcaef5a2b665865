"""State database claims across processes; the usage scan against GNU du; CLI listings."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from engine.pipeline.usage import du, usage_report
from engine.store import Downlink, StateDB

from .conftest import cli, make_delivery


def _claimer(root: str, q, go, done) -> None:  # runs in a child process
    from engine.core.workspace import Workspace

    with StateDB(Workspace.open(Path(root)).state) as db:
        go.wait()  # all connected: they claim together
        got = [
            dl
            for dl in ("251125001", "251125002", "251125003")
            if db.claim_stream(dl, "halfpipe")[0] is not None
        ]
        q.put(got)
        done.wait()  # stay alive until all tried, so the others see live owners


def test_stream_claims_are_exclusive_and_taken_over_from_the_dead(ws):
    with StateDB(ws.state) as db:
        for d in ("251125001", "251125002", "251125003"):
            db.register_downlink(
                Downlink(d, "level0", "/x", 1, False, None, time.time(), time.time())
            )
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    go, done = ctx.Barrier(4), ctx.Event()
    procs = [ctx.Process(target=_claimer, args=(str(ws.root), q, go, done)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        claims = [q.get(timeout=60) for _ in procs]
    finally:
        done.set()
        for p in procs:
            p.join(timeout=60)
    flat = sorted(d for c in claims for d in c)
    assert flat == ["251125001", "251125002", "251125003"]  # each claimed exactly once
    with StateDB(ws.state) as db:  # the owners are dead now: a new process may take over
        st, why = db.claim_stream("251125001", "halfpipe")
        assert st is not None and st.owner_pid == os.getpid(), why
        assert db.q("SELECT count(*) FROM events WHERE kind='stream_resumed'")[0][0] == 1
        db.release_stream(st.id, "SUCCESS")
        assert db.claim_stream("251125001", "halfpipe")[0] is None


@pytest.mark.skipif(shutil.which("du") is None, reason="GNU du not installed")
def test_du_matches_gnu_du(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    for d in range(40):
        p = root / f"a{d % 4}" / f"b{d}"
        p.mkdir(parents=True)
        for f in range(30):
            (p / f"f{f}").write_bytes(b"x" * (f * 300))
    os.link(root / "a0" / "b0" / "f29", root / "a1" / "hard")  # counted once
    (root / "a2" / "sym").symlink_to("/etc")  # not followed
    ref = int(
        subprocess.run(
            ["du", "-s", "-B1", str(root)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )
    for workers in (1, 2):
        u = du(root, workers)
        assert u.bytes == ref and u.files == 40 * 30 + 1  # hard link once, symlink as a file
    import engine.pipeline.usage as ss

    monkeypatch.setattr(ss, "_PARALLEL_MIN_ENTRIES", 0)  # force the forked-workers path
    monkeypatch.setattr(ss, "_PARALLEL_MIN_DIRS", 1)
    u = du(root, 2)
    assert u.bytes == ref and u.files == 40 * 30 + 1 and u.dirs == 45


def test_usage_report_per_area_and_downlink(ws, capsys):
    make_delivery(ws, "251125001")
    (ws.stage / "251125001" / "r0000000001").mkdir(parents=True)
    (ws.stage / "251125001" / "r0000000001" / "x.h5").write_bytes(b"y" * 10000)
    rep = usage_report(ws)
    assert set(rep.areas) == {"incoming", "downlinks", "stage", "events", "logs"}
    assert rep.areas["incoming"].files == 5  # 2 sources, 2 RetDefs, manifest
    assert rep.downlinks["251125001"]["stage"].apparent == 10000
    assert rep.free > 0 and not rep.paused
    rc, out, _ = cli(ws, "stage", "--json", capsys=capsys)
    data = json.loads(out)
    assert rc == 0 and data["downlinks"]["251125001"]["incoming"]["files"] == 5
    rc, out, _ = cli(ws, "stage", capsys=capsys)
    assert "251125001" in out and "reserve" in out


def test_downlinks_cli(ws, capsys):
    make_delivery(ws, "251125001")
    make_delivery(ws, "251125002")
    os.rename(ws.incoming_level0 / "251125002", ws.incoming_level0 / "25112500x")
    from engine.intake import deliveries

    with StateDB(ws.state) as db:
        deliveries.process_all(ws, db, quiet_s=0)
    rc, out, _ = cli(ws, "downlinks", "--json", capsys=capsys)
    data = json.loads(out)
    assert [d["dlid"] for d in data["downlinks"]] == ["251125001"]
    assert data["rejected"][0]["name"] == "level0:25112500x"
    rc, out, _ = cli(ws, "downlinks", capsys=capsys)
    assert "251125001" in out and "REJECTED level0:25112500x" in out


def test_console_api_functions(ws):
    from engine import api

    make_delivery(ws, "251125001")
    out = api.scan_incoming(ws)
    assert [o.status for o in out] == ["accepted"]
    assert [d.dlid for d in api.downlinks(ws)] == ["251125001"]
    assert api.rejected(ws) == [] and api.locks(ws) == [] and api.stream_views(ws) == []
    rep = api.usage(ws)
    assert rep.downlinks["251125001"]["incoming"].files == 5
