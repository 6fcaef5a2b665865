"""A nearly full disk: on a real small tmpfs, the daemon pauses launching
under the reserve without writing its state database over and over, and a state write that
fails for lack of space costs one log line and a retry, never the daemon."""

from __future__ import annotations

import os
import time

import pytest

from engine.core.workspace import init_workspace

from .conftest import (
    FAST,
    db_footprint,
    fill_disk,
    integrity_ok,
    log_events,
    make_delivery,
    quick,
    set_config,
    start_daemon,
    stop_daemon,
    stream_status,
    wait_for,
)


def _held(log) -> list[dict]:
    return [e for e in log_events(log) if e["event"] == "held" and "paused" in e.get("why", "")]


def _paused_daemon(tmp_path, root):
    """A workspace on the small disk with one delivery in, one ready to arrive, the disk
    filled to under 1 MB free (under the 3 MB reserve) and the daemon running."""
    ws = init_workspace(root / "ws")
    ws = set_config(ws, "[disk]\nreserve_bytes = 3000000\n")
    ws = quick(ws, quiet=0.5, extra="error_backoff_max_s = 2.0\n")
    make_delivery(ws, "251125061", **FAST)
    later = make_delivery(ws, "251125062", as_="dir", target=root / "later" / "251125062", **FAST)
    filler = fill_disk(root / "filler1", leave=600_000)
    log = tmp_path / "daemon.log"  # the log is on another disk
    d = start_daemon(ws, log)
    wait_for(lambda: log.exists() and _held(log), 30, what="makeEvt held: launching paused")
    return ws, d, log, later, filler


def test_paused_daemon_does_not_rewrite_its_state(tmp_path, mount_tmpfs):
    """The held note carried the exact free-byte figure: below 1 MB free every re-step
    rewrote it, which ate space, which changed the figure, until the disk was full."""
    ws, d, log, _later, filler = _paused_daemon(tmp_path, mount_tmpfs("fs", "size=8m"))
    try:
        time.sleep(1.0)
        on_file = ws.state_url is None  # SQLite: the file on this disk
        before, n_before = db_footprint(ws) if on_file else 0, len(_held(log))
        time.sleep(3.0)  # six re-steps of the held stream
        assert len(_held(log)) == n_before == 1  # one note, written once
        assert (db_footprint(ws) if on_file else 0) == before
        assert d.poll() is None
        filler.unlink()  # the pause ends by itself
        wait_for(lambda: stream_status(ws) == {"251125061": "SUCCESS"}, 60, what="SUCCESS")
    finally:
        assert stop_daemon(d) == 0
    assert on_file is False or integrity_ok(ws)


@pytest.mark.sqlite_only(
    "the state write fails because the SQLite file shares the full disk; "
    "a PostgreSQL server keeps its data on its own disk"
)
def test_state_write_failing_on_a_full_disk_does_not_kill_the_daemon(tmp_path, mount_tmpfs):
    """The disk full to the last byte, a delivery arrives: its claim cannot be written
    (sqlite3 "database or disk is full"). One error line naming it, retries with back-off,
    and once there is space it is registered and staged."""
    root = mount_tmpfs("fs", "size=8m")
    ws, d, log, later, filler = _paused_daemon(tmp_path, root)
    fillers = [filler]
    try:
        fillers.append(fill_disk(root / "filler2", leave=0))
        os.rename(later, ws.incoming_level0 / "251125062")
        wait_for(
            lambda: any(e["event"] == "error" for e in log_events(log)), 30, what="the error line"
        )
        time.sleep(2.0)  # a few retries, all failing
        assert d.poll() is None
        for f in fillers:
            f.unlink()  # space again: both streams run
        wait_for(
            lambda: stream_status(ws) == {"251125061": "SUCCESS", "251125062": "SUCCESS"},
            90,
            what="both streams SUCCESS",
        )
    finally:
        assert stop_daemon(d) == 0
    errors = [e for e in log_events(log) if e["event"] == "error"]
    assert errors and all(e.get("delivery") == "level0:251125062" for e in errors), errors
    assert any("full" in e["error"] for e in errors)
    assert len({e["error"] for e in errors}) == len(errors)  # a repeated error is not re-logged
    assert integrity_ok(ws)


@pytest.mark.sqlite_only(
    "the state write fails because the SQLite file shares the full disk; "
    "a PostgreSQL server keeps its data on its own disk"
)
def test_job_exit_recorded_once_space_is_back(tmp_path, mount_tmpfs):
    """The disk fills while a job runs: recording its exit fails ("database or disk is
    full"). The stream backs off with one error line, the exit stays queued, and once there
    is space it is recorded: the stream succeeds with that one execution (the job is neither
    lost nor run twice) and the database is intact."""
    root = mount_tmpfs("fs", "size=8m")
    task = root / "slow.toml"
    task.write_text(
        '[task]\nname = "halfpipe"\n[[process]]\nname = "launchChunks"\n'
        'scriptlet = "launch_chunks"\n[[process]]\nname = "job"\n'
        'after = ["launchChunks"]\nforeach = "chunks"\ncommand = ["sleep", "2"]\n'
    )
    ws = init_workspace(root / "ws")
    ws = set_config(ws, f'[pipeline]\ntask = "{task}"\n')
    ws = set_config(ws, "[disk]\nreserve_bytes = 0\n")
    ws = quick(ws, quiet=0.5, extra="error_backoff_max_s = 1.0\n")
    log = tmp_path / "daemon.log"
    d = start_daemon(ws, log)
    try:
        wait_for(lambda: log.exists() and "watching" in log.read_text(), 30, what="daemon start")
        make_delivery(ws, "251125067", **FAST)
        wait_for(lambda: '"started"' in log.read_text(), 30, what="the job started")
        filler = fill_disk(root / "filler", leave=0)
        wait_for(
            lambda: any(e["event"] == "error" for e in log_events(log)),
            30,
            what="recording the exit failed",
        )
        time.sleep(1.5)
        assert d.poll() is None and stream_status(ws) == {"251125067": "RUNNING"}
        filler.unlink()
        wait_for(lambda: stream_status(ws) == {"251125067": "SUCCESS"}, 30, what="SUCCESS")
    finally:
        assert stop_daemon(d) == 0
    ev = log_events(log)
    errors = [e for e in ev if e["event"] == "error"]
    assert errors and all(e.get("dlid") == "251125067" and "full" in e["error"] for e in errors)
    assert [e["process"] for e in ev if e["event"] == "started"] == ["job"]  # ran once
    from engine.store import StateDB

    with StateDB(ws.state) as db:
        pis = db.instances(db.latest_stream("251125067").id, latest_only=False)
    assert [(p.process, p.execution, p.status) for p in pis] == [
        ("launchChunks", 1, "SUCCESS"),
        ("job", 1, "SUCCESS"),
    ]
    assert integrity_ok(ws)


def test_launch_chunks_on_a_full_disk_waits_for_space(tmp_path, mount_tmpfs):
    """launchChunks copies the RetDefs into downlinks/<DLID>: on a full disk (only that area
    here, the state elsewhere, as a PostgreSQL state always is) the copy fails with ENOSPC.
    That is no fault of the downlink: the instance waits (READY, "waiting for disk space",
    one held line), the stream does not fail, and once there is space it succeeds."""
    small = mount_tmpfs("small", "size=8m")
    ws = init_workspace(tmp_path / "ws")
    ws = set_config(ws, "[disk]\nreserve_bytes = 0\n")
    ws = set_config(ws, f'[paths]\ndownlinks = "{small / "downlinks"}"\n')
    ws = quick(ws, quiet=0.5)
    filler = fill_disk(small / "filler", leave=0)
    log = tmp_path / "daemon.log"
    d = start_daemon(ws, log)
    try:
        wait_for(lambda: log.exists() and "watching" in log.read_text(), 30, what="daemon start")
        make_delivery(ws, "251125068", **FAST)
        wait_for(
            lambda: any(
                e["event"] == "held" and "waiting for disk space" in e["why"]
                for e in log_events(log)
            ),
            60,
            what="launchChunks waiting",
        )
        time.sleep(1.0)  # a few more steps: still waiting
        assert stream_status(ws) == {"251125068": "RUNNING"} and d.poll() is None
        filler.unlink()
        wait_for(lambda: stream_status(ws) == {"251125068": "SUCCESS"}, 60, what="SUCCESS")
    finally:
        assert stop_daemon(d) == 0
    ev = log_events(log)
    assert not [e for e in ev if e["event"] in ("failed", "stream_failed")], ev
    assert len([e for e in ev if e["event"] == "held" and "disk space" in e["why"]]) == 1
