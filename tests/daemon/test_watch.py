"""The watch daemon with real inotify events from real writers (rsync, cp+mv, slow writes),
polling mode, SIGTERM, --once with bad deliveries, and two daemons on one workspace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest

from engine.daemon import choose_polling, fstype
from engine.pipeline import locks
from engine.store import StateDB
from tests.pipeline.conftest import (
    FAST,
    cli,
    cli_proc,
    log_events,
    make_delivery,
    set_config,
    start_daemon,
    stream_status,
    wait_for,
)
from tests.pipeline.conftest import quick as _quick
from tests.pipeline.conftest import stop_daemon as _stop


def test_daemon_sees_rsync_cp_mv_slow_and_fcopy(ws, tmp_path):
    ws = _quick(ws)
    log = tmp_path / "daemon.log"
    d = start_daemon(ws, log)
    try:
        wait_for(lambda: log.exists() and "watching" in log.read_text(), 30, what="daemon start")
        expected = []
        # 1. rsync of a level0 directory (manifest sorts first; rsync writes hidden temp names)
        if shutil.which("rsync"):
            src = tmp_path / "src1" / "251125001"
            make_delivery(ws, "251125001", as_="dir", target=src, **FAST)
            subprocess.run(["rsync", "-a", str(src), str(ws.incoming_level0) + "/"], check=True)
            expected.append("251125001")
        # 2. cp to a staging place on the same filesystem, then mv into the inbox
        src = tmp_path / "src2" / "251125002"
        make_delivery(ws, "251125002", as_="dir", target=src, **FAST)
        staging = ws.root / "staging"
        staging.mkdir()
        subprocess.run(["cp", "-r", str(src), str(staging)], check=True)
        subprocess.run(["mv", str(staging / "251125002"), str(ws.incoming_level0)], check=True)
        expected.append("251125002")
        # 3. slowly: the manifest first, then a source file growing for ~2 s
        src = tmp_path / "src3" / "251125003"
        make_delivery(ws, "251125003", as_="dir", target=src, **FAST)
        dest = ws.incoming_level0 / "251125003"
        dest.mkdir()
        (dest / "MANIFEST.md5").write_bytes((src / "MANIFEST.md5").read_bytes())
        for f in sorted(src.iterdir()):
            if f.name == "MANIFEST.md5":
                continue
            data = f.read_bytes()
            with open(dest / f.name, "wb") as fh:
                step = max(1, len(data) // 8)
                for a in range(0, len(data), step):
                    fh.write(data[a : a + step])
                    fh.flush()
                    time.sleep(0.25 if f.suffix == ".h5" else 0)
        expected.append("251125003")
        # 4. an fcopy package (tar, then its manifest)
        make_delivery(ws, "251125004", as_="fcopy", **FAST)
        expected.append("251125004")
        wait_for(
            lambda: all(stream_status(ws).get(x) == "SUCCESS" for x in expected),
            120,
            what=f"streams of {expected}",
        )
    finally:
        rc = _stop(d)
    assert rc == 0
    events = log_events(log)
    assert events[0]["event"] == "watching" and events[0]["polling"] is False
    reg = [e["dlid"] for e in events if e["event"] == "registered"]
    assert sorted(reg) == sorted(expected)  # each exactly once
    assert not [e for e in events if e["event"] == "rejected"]
    assert events[-1]["event"] == "stopped"
    assert locks.list_locks(ws.lock) == []


def test_polling_mode_and_choice(ws, tmp_path):
    ws = _quick(ws)
    assert choose_polling(ws, True)[0] and not choose_polling(ws, False)[0]
    assert choose_polling(set_config(ws, '[watch]\npolling = "true"\n'), False)[0]
    assert fstype(ws.root) != ""
    log = tmp_path / "daemon.log"
    d = start_daemon(ws, log, "--polling", "--interval", "0.2")
    try:
        wait_for(lambda: log.exists() and "watching" in log.read_text(), 30)
        make_delivery(ws, "251125005", as_="fcopy", **FAST)
        wait_for(lambda: stream_status(ws).get("251125005") == "SUCCESS", 60)
    finally:
        assert _stop(d) == 0
    ev = log_events(log)
    assert ev[0]["polling"] is True and ev[0]["interval_s"] == 0.2


def test_sigterm_mid_stream_then_resume(ws, tmp_path):
    ws = _quick(ws)
    log = tmp_path / "daemon.log"
    make_delivery(ws, "251125006", **FAST)
    d = start_daemon(ws, log)
    try:
        wait_for(
            lambda: (
                log.exists()
                and '"process":"makeEvt"' in log.read_text()
                and '"started"' in log.read_text()
            ),
            60,
            what="makeEvt started",
        )
    finally:
        rc = _stop(d)
    assert rc == 0
    ev = log_events(log)
    assert any(e["event"] == "terminated" for e in ev) or any(
        e["event"] == "stream_success" for e in ev
    )
    st = stream_status(ws)["251125006"]
    assert st in ("TERMINATED", "SUCCESS")
    with StateDB(ws.state) as db:
        assert all(
            p.status not in ("RUNNING", "QUEUED", "SUBMITTED")
            for p in db.instances(db.latest_stream("251125006").id)
        )
    rc, _, _ = cli(ws, "watch", "--once")
    assert rc == 0 and stream_status(ws)["251125006"] == "SUCCESS"
    assert locks.list_locks(ws.lock) == []


def test_watch_once_reports_bad_deliveries(ws, capsys):
    ws = _quick(ws, quiet=0.5)
    d = make_delivery(ws, "251125007", **FAST)
    f = d / "cspad.h5"
    f.write_bytes(f.read_bytes()[:-1] + b"\x01")
    old = time.time() - 60
    os.utime(f, (old, old))
    os.utime(d / "MANIFEST.md5", (old, old))
    (ws.incoming_fcopy / "251125008.tar").write_bytes(b"garbage" * 50)
    from engine.intake import manifest

    manifest.write(ws.incoming_fcopy, ["251125008.tar"], ws.incoming_fcopy / "251125008.md5")
    make_delivery(ws, "251125009", **FAST)
    rc, out, err = cli(ws, "watch", "--once", capsys=capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert any("cspad.h5" in ln and "checksum mismatch" in ln for ln in lines)
    assert any("251125008.tar" in ln and "unreadable tar" in ln for ln in lines)
    assert (ws.rejected / "251125007.reason").is_file() and (
        ws.rejected / "251125008.tar.reason"
    ).is_file()
    assert stream_status(ws) == {"251125009": "SUCCESS"}
    rc, out, _ = cli(ws, "downlinks", "--json", capsys=capsys)
    data = json.loads(out)
    assert {r["name"] for r in data["rejected"]} == {"level0:251125007", "fcopy:251125008"}


def test_two_daemons_one_workspace(ws, tmp_path):
    ws = _quick(ws, scan_interval=1.0)
    logs = [tmp_path / "d1.log", tmp_path / "d2.log"]
    ds = [start_daemon(ws, lg) for lg in logs]
    dlids = [f"2511250{k:02d}" for k in range(10, 16)]
    try:
        for lg in logs:
            wait_for(lambda lg=lg: lg.exists() and "watching" in lg.read_text(), 30)
        for k, dl in enumerate(dlids):
            make_delivery(ws, dl, as_="fcopy" if k % 2 else "level0", **FAST)
        wait_for(
            lambda: all(stream_status(ws).get(x) == "SUCCESS" for x in dlids),
            180,
            what="all streams",
        )
    finally:
        for d in ds:
            assert _stop(d) == 0
    events = [e for lg in logs for e in log_events(lg)]
    for dl in dlids:
        assert [e["event"] for e in events if e.get("dlid") == dl].count("registered") == 1
        assert [e["event"] for e in events if e.get("dlid") == dl].count("stream_claimed") == 1
    with StateDB(ws.state) as db:
        for dl in dlids:
            st = db.latest_stream(dl)
            assert st.execution == 1
            assert all(p.execution == 1 for p in db.instances(st.id, latest_only=False))
    assert locks.list_locks(ws.lock) == []


@pytest.mark.slow
def test_200_deliveries_at_once_each_processed_once(ws, tmp_path):
    task = tmp_path / "light.toml"
    task.write_text(
        '[task]\nname = "halfpipe"\n[[process]]\nname = "launchChunks"\n'
        'scriptlet = "launch_chunks"\n[[process]]\nname = "makeEvt"\n'
        'after = ["launchChunks"]\nforeach = "chunks"\ncommand = ["true"]\n'
    )
    ws = _quick(ws, scan_interval=2.0, extra="")
    ws = set_config(ws, f'[pipeline]\ntask = "{task}"\nmax_jobs = 8\nmax_streams = 32\n')
    staging = ws.root / "staging"
    staging.mkdir()
    dlids = [f"251126{k:03d}" for k in range(1, 201)]
    for dl in dlids:
        make_delivery(
            ws,
            dl,
            as_="dir",
            target=staging / dl,
            events=2,
            event_bytes=4,
            chunks=1,
            runs=1,
            sources=1,
        )
    log = tmp_path / "daemon.log"
    d = start_daemon(ws, log)
    try:
        wait_for(lambda: log.exists() and "watching" in log.read_text(), 30)
        for dl in dlids:  # dropped at once: 200 renames into the inbox
            os.rename(staging / dl, ws.incoming_level0 / dl)
        wait_for(
            lambda: sum(1 for s in stream_status(ws).values() if s == "SUCCESS") == 200,
            150,
            every=0.5,
            what="200 streams",
        )
    finally:
        assert _stop(d) == 0
    ev = log_events(log)
    reg = [e["dlid"] for e in ev if e["event"] == "registered"]
    assert sorted(reg) == dlids
    lat = sorted(e["latency_s"] for e in ev if e["event"] == "registered")
    assert lat[len(lat) // 2] < 5.0
    with StateDB(ws.state) as db:
        assert len(db.downlinks()) == 200 and len(db.streams(latest_only=False)) == 200
        assert db.q("SELECT count(*) FROM process_instances WHERE execution > 1")[0][0] == 0


def test_reconciliation_scan_catches_what_events_missed(ws, tmp_path):
    # polling so slow it never fires: only the periodic reconciliation scan can find it
    ws = _quick(ws, scan_interval=0.5)
    log = tmp_path / "daemon.log"
    d = start_daemon(ws, log, "--polling", "--interval", "3600")
    try:
        wait_for(lambda: log.exists() and "watching" in log.read_text(), 30)
        make_delivery(ws, "251125031", **FAST)
        wait_for(lambda: stream_status(ws).get("251125031") == "SUCCESS", 60)
    finally:
        assert _stop(d) == 0


FLAKY = "import os, sys; p = sys.argv[1]; ok = os.path.exists(p); sys.exit(0 if ok else 3)"


def _daemon_with_failed_stream(ws, tmp_path, dlid: str, task_text: str):
    """A daemon running ``task_text`` (a task whose job fails), a delivery for ``dlid``, and
    its stream FAILED. Returns (ws, daemon)."""
    task = tmp_path / "task.toml"
    task.write_text('[task]\nname = "halfpipe"\n' + task_text)
    ws = set_config(_quick(ws), f'[pipeline]\ntask = "{task}"\n')
    make_delivery(ws, dlid, **FAST)
    d = start_daemon(ws, tmp_path / "daemon.log")
    try:
        wait_for(lambda: stream_status(ws).get(dlid) == "FAILED", 60)
    except BaseException:
        _stop(d)
        raise
    return ws, d


def _job(marker, retries: int, extra: str = "") -> str:
    """A process "job" that fails until ``marker`` exists."""
    return (
        f'[[process]]\nname = "job"\n{extra}'
        f'command = ["{{python}}", "-c", "{FLAKY}", "{marker}"]\n'
        f'retries = {retries}\n'
    )


def test_rollback_is_picked_up_by_the_running_daemon(ws, tmp_path, capsys):
    marker = tmp_path / "fixed"
    ws, d = _daemon_with_failed_stream(ws, tmp_path, "251125032", _job(marker, 1))
    try:
        marker.touch()  # the operator fixed the cause
        rc, out, _ = cli(ws, "rollback", "251125032", capsys=capsys)
        assert rc == 0 and "job" in out
        wait_for(lambda: stream_status(ws).get("251125032") == "SUCCESS", 60)
    finally:
        assert _stop(d) == 0
    with StateDB(ws.state) as db:
        pis = db.instances(db.latest_stream("251125032").id, latest_only=False)
        assert [(p.execution, p.status) for p in pis] == [
            (1, "FAILED"),
            (2, "FAILED"),
            (3, "SUCCESS"),
        ]


def test_stream_lock_of_a_live_daemon_passes_to_the_runner_that_claims_the_stream(
    ws, tmp_path, capsys
):
    """The daemon failed the stream and is still alive. A FAILED stream's runner releases
    ``halfpipe-<DLID>`` (HalfPipe left it until cleanup); one held by a live daemon anyway
    (written by an older skydeck, or its release failed) is what this test plants. The
    operator rolls back and runs the stream from the console (another process) before the
    daemon picks it up: the stream claim in the state db makes that runner the stream's only
    owner, so it takes the lock over instead of waiting for a live process that will never
    release it."""
    from engine.core.owner import Owner, process_start

    marker = tmp_path / "fixed"
    task = (
        _job(marker, 0, extra='stream_lock = "halfpipe-{dlid}"\n')
        + '[[process]]\nname = "cleanup"\nafter = ["job"]\n'
        'removes_stream_lock = "halfpipe-{dlid}"\ncommand = ["true"]\n'
    )
    ws, d = _daemon_with_failed_stream(ws, tmp_path, "251125034", task)
    try:
        assert locks.list_locks(ws.lock) == []  # released when the stream FAILED
        daemon = Owner(d.pid, Owner.me().host, process_start(d.pid) or 0.0)
        locks.take_over(ws.lock / "halfpipe-251125034", "251125034", "job", daemon)
        (lock,) = locks.list_locks(ws.lock)
        assert lock.name == "halfpipe-251125034" and lock.pid == d.pid and not lock.stale
        (ws.path("flags") / "halted").touch()  # the daemon starts nothing now
        marker.touch()
        rc, _, _ = cli(ws, "rollback", "251125034", capsys=capsys)
        assert rc == 0
        run = cli_proc(ws, "run", "251125034", timeout=60)
        assert run.returncode == 0, run.stderr
        assert '"lock_taken_over"' in run.stdout
        assert stream_status(ws)["251125034"] == "SUCCESS"
        assert locks.list_locks(ws.lock) == []
        assert d.poll() is None  # the daemon was alive all along
    finally:
        assert _stop(d) == 0


def test_global_halted_flag_stops_new_streams(ws, capsys):
    ws = _quick(ws)
    (ws.path("flags") / "halted").touch()
    make_delivery(ws, "251125033", **FAST)
    rc, out, _ = cli(ws, "watch", "--once", capsys=capsys)
    assert rc == 0 and '"registered"' in out  # deliveries are still registered ...
    assert stream_status(ws) == {}  # ... but no stream starts
    (ws.path("flags") / "halted").unlink()
    (ws.downlinks / "251125033").mkdir(parents=True)
    (ws.downlinks / "251125033" / "haltCleanup").touch()  # per downlink: keep intermediates
    rc, _, _ = cli(ws, "watch", "--once", capsys=capsys)
    assert rc == 0 and stream_status(ws) == {"251125033": "SUCCESS"}
    assert list(ws.downlinks.glob("251125033/251125033-*.h5"))  # chunk output kept
    assert locks.list_locks(ws.lock) == []  # stream lock removed anyway
