"""What happens to one lock, one delivery or one stream stays there.

A running `skydeck-engine watch` (a real process on a real workspace) meets a hostile lock
file, a directory at a stream's lock path, a file that vanishes while it is being verified
and a stream whose step raises; each time the daemon stays alive, says what is wrong in one
line naming the delivery, stream or lock, and keeps staging the other deliveries.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from engine.store import StateDB
from tests.pipeline.conftest import (
    FAST,
    cli,
    log_events,
    make_delivery,
    quick,
    remove_while_hashing,
    start_daemon,
    stop_daemon,
    stream_status,
    wait_for,
    with_big_file_first,
)


def _started(log: Path) -> None:
    wait_for(lambda: log.exists() and "watching" in log.read_text(), 30, what="daemon start")


def _success(ws, *dlids: str, timeout: float = 90) -> None:
    wait_for(
        lambda: all(stream_status(ws).get(d) == "SUCCESS" for d in dlids),
        timeout,
        what=f"streams {dlids} SUCCESS",
    )


@contextlib.contextmanager
def _serving(ws, tmp_path, broken: str, healthy: str) -> Iterator[tuple[subprocess.Popen, Path]]:
    """A daemon given two deliveries: the healthy one stages while the broken one waits;
    the daemon must be alive and stop cleanly (exit 0) at the end."""
    log = tmp_path / "daemon.log"
    d = start_daemon(ws, log)
    try:
        _started(log)
        make_delivery(ws, broken, **FAST)
        make_delivery(ws, healthy, **FAST)
        _success(ws, healthy)
        yield d, log
        assert d.poll() is None
    finally:
        assert stop_daemon(d) == 0


def test_hostile_lock_files_never_stop_the_daemon(ws, tmp_path, capsys):
    """A pid of 20 digits (OverflowError in psutil), binary junk and a FIFO in lock/ crashed
    `locks`, the running daemon at its next reconciliation, and every restart after it."""
    ws = quick(ws, scan_interval=0.3)
    host = socket.gethostname()
    log = tmp_path / "daemon.log"
    d = start_daemon(ws, log)
    try:
        _started(log)
        (ws.lock / "halfpipe-251125051").write_text(
            json.dumps({"pid": 99999999999999999999, "host": host})
        )
        (ws.lock / "0000dead").write_bytes(b"\x00\xff" * 100)
        os.mkfifo(ws.lock / "0000f1f0")
        wait_for(lambda: '"blocking_lock"' in log.read_text(), 20, what="reconciliation")
        make_delivery(ws, "251125052", **FAST)
        _success(ws, "251125052")
        assert d.poll() is None
    finally:
        assert stop_daemon(d) == 0
    # a restart with the same locks in place serves too (no crash loop)
    d = start_daemon(ws, log)
    try:
        make_delivery(ws, "251125053", **FAST)
        _success(ws, "251125053")
        assert d.poll() is None
    finally:
        assert stop_daemon(d) == 0
    rc, out, _ = cli(ws, "locks", capsys=capsys)
    assert rc == 0 and "out of range" in out and "FIFO" in out and "0000dead" in out


def test_directory_at_a_stream_lock_path_blocks_that_stream_with_its_reason(ws, tmp_path, capsys):
    """A directory at lock/halfpipe-<DLID> blocked its stream forever while `locks` said
    "no locks". It is listed, the stream says why it waits, the others run; once the operator
    removes it the stream goes on."""
    ws = quick(ws, scan_interval=0.5)
    (ws.lock / "halfpipe-251125054").mkdir()
    rc, out, _ = cli(ws, "locks", capsys=capsys)
    assert "halfpipe-251125054" in out and "not a regular file (a directory)" in out
    with _serving(ws, tmp_path, "251125054", "251125055") as (d, log):

        def held_note() -> str | None:
            with StateDB(ws.state) as db:
                st = db.latest_stream("251125054")
                notes = [p.note or "" for p in db.instances(st.id)] if st else []
            return next((n for n in notes if "not a regular file" in n), None)

        note = wait_for(held_note, 30, what="the blocked stream's note")
        assert "halfpipe-251125054" in note and "directory" in note
        assert stream_status(ws)["251125054"] == "RUNNING" and d.poll() is None
        ev = log_events(log)
        assert any(e["event"] == "held" and "not a regular file" in e["why"] for e in ev)
        assert any(e["event"] == "blocking_lock" and e["lock"] == "halfpipe-251125054" for e in ev)
        rc, _, _ = cli(ws, "unlock", "halfpipe-251125054", "--force", "--yes", capsys=capsys)
        assert rc == 0
        _success(ws, "251125054")


def test_file_vanishing_mid_verify_affects_that_delivery_only(ws, tmp_path):
    """A manifest lists a large file, then a small one; the small one is deleted while the
    daemon hashes the large one. FileNotFoundError reached the main loop and TERMINATED
    every stream; now that delivery waits (and stages once the file is back)."""
    ws = quick(ws, quiet=0.5)
    staging = tmp_path / "staging" / "251125056"
    make_delivery(ws, "251125056", as_="dir", target=staging, **FAST)
    victim = with_big_file_first(staging)
    log = tmp_path / "daemon.log"
    d = start_daemon(ws, log)
    try:
        _started(log)
        dest = ws.incoming_level0 / "251125056"
        saved = tmp_path / "saved"
        shutil.copy2(staging / victim, saved)
        gone = threading.Event()

        def remove_victim_mid_hash() -> None:
            remove_while_hashing(d.pid, dest / "a_big.bin", dest / victim)
            gone.set()

        t = threading.Thread(target=remove_victim_mid_hash)
        t.start()
        os.rename(staging, dest)
        make_delivery(ws, "251125057", **FAST)
        t.join(40)
        assert gone.is_set()
        _success(ws, "251125057")  # the other delivery stages
        assert d.poll() is None  # and the daemon is alive
        assert "251125056" not in stream_status(ws)
        shutil.copy2(saved, dest / victim)  # the file comes back
        _success(ws, "251125056")
    finally:
        assert stop_daemon(d) == 0
    ev = log_events(log)
    errors = [e for e in ev if e["event"] == "error"]
    assert all(e.get("delivery") == "level0:251125056" for e in errors)  # named, one delivery


def test_exception_stepping_one_stream_affects_that_stream_only(ws, tmp_path):
    """A file where a stream's log directory goes makes its step raise (FileExistsError):
    that stream backs off with one error line, the other stream succeeds, and the stream
    recovers once the obstacle is gone."""
    ws = quick(ws)
    (ws.logs / "251125058").parent.mkdir(parents=True, exist_ok=True)
    (ws.logs / "251125058").write_text("not a directory")
    with _serving(ws, tmp_path, "251125058", "251125059") as (d, log):
        wait_for(lambda: '"error"' in log.read_text(), 20, what="the error line")
        assert d.poll() is None and stream_status(ws)["251125058"] == "RUNNING"
        (ws.logs / "251125058").unlink()
        _success(ws, "251125058")
    ev = log_events(log)
    errors = [e for e in ev if e["event"] == "error"]
    assert errors and all(
        e["dlid"] == "251125058" and "FileExistsError" in e["error"] for e in errors
    )
    assert len(errors) == 1  # the same error is not repeated
    assert any(e["event"] == "recovered" and e["dlid"] == "251125058" for e in ev)


def test_watch_once_with_a_stream_still_failing_exits_1_naming_it(ws, capsys):
    """`watch --once` used to exit 0 when a contained fault was still open at its end, so a
    script read success; it now names each open fault on stderr and exits 1."""
    ws = quick(ws)
    (ws.logs / "251125060").parent.mkdir(parents=True, exist_ok=True)
    (ws.logs / "251125060").write_text("not a directory")
    make_delivery(ws, "251125060", **FAST)
    rc, _, err = cli(ws, "watch", "--once", capsys=capsys)
    assert rc == 1, err
    line = next(ln for ln in err.splitlines() if "stream:251125060" in ln)
    assert "FileExistsError" in line


def test_lock_directory_that_cannot_be_listed_never_stops_intake(ws, capsys):
    """A lock directory that cannot be listed (here a link loop) was an OSError out of
    list_locks: a traceback in `locks` and, in the daemon, every reconciliation aborted before
    it reached a delivery. Now it is one blocking row, and deliveries still register."""
    shutil.rmtree(ws.lock)
    os.symlink(ws.lock, ws.lock)  # ELOOP on every access
    rc, out, _ = cli(ws, "locks", capsys=capsys)
    assert rc == 0 and "cannot list the lock directory" in out and "blocks:" in out
    make_delivery(ws, "251125061", **FAST)
    rc, out, _ = cli(ws, "downlinks", capsys=capsys)
    rc, _, err = cli(ws, "watch", "--once", capsys=capsys)
    with StateDB(ws.state) as db:
        assert db.downlink("251125061") is not None, err
