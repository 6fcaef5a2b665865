"""Chaos: the daemon keeps serving while everything that can go wrong arrives at once.

One `skydeck-engine watch` process runs on a workspace on a real 16 MB tmpfs while the test
throws at it bad deliveries (wrong md5, names that are no downlink id, junk tars), bad lock
files (a 20-digit pid, binary junk, a directory, a FIFO), a file that vanishes while it is
being hashed, a delivery removed right after it arrived, and a nearly full and then a full
file system. Good deliveries still stage; the daemon is alive at the end; the state
database passes ``PRAGMA integrity_check`` and does not grow while launching is paused
(the hostile-input review: "how it must be tested").
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time

import pytest

from engine.core.workspace import init_workspace
from engine.intake import manifest
from tests.pipeline.conftest import (
    FAST,
    cli_proc,
    db_footprint,
    fill_disk,
    integrity_ok,
    log_events,
    make_delivery,
    quick,
    remove_while_hashing,
    set_config,
    start_daemon,
    stop_daemon,
    stream_status,
    wait_for,
    with_big_file_first,
)

pytestmark = pytest.mark.slow

RESERVE = 2_000_000


def _bad_deliveries(ws, scratch) -> None:
    """Wrong md5, names that are no downlink id, a junk tar: each is rejected and kept."""
    d = make_delivery(ws, "251125071", as_="dir", target=scratch / "251125071", **FAST)
    f = d / "cspad.h5"
    f.write_bytes(f.read_bytes()[:-1] + b"\x01")  # md5 no longer matches
    old = time.time() - 60
    for p in (f, d / manifest.MANIFEST_NAME):
        os.utime(p, (old, old))
    os.rename(d, ws.incoming_level0 / "251125071")
    n = make_delivery(ws, "251125072", as_="dir", target=scratch / "not-a-downlink", **FAST)
    os.rename(n, ws.incoming_level0 / "not-a-downlink")
    (ws.incoming_fcopy / "251125073.tar").write_bytes(os.urandom(5000))
    manifest.write(ws.incoming_fcopy, ["251125073.tar"], ws.incoming_fcopy / "251125073.md5")
    (ws.incoming_fcopy / "junk.tar").write_bytes(b"junk")
    manifest.write(ws.incoming_fcopy, ["junk.tar"], ws.incoming_fcopy / "junk.md5")


def _bad_locks(ws) -> None:
    host = socket.gethostname()
    (ws.lock / "0000aaaa").write_text(json.dumps({"pid": 99999999999999999999, "host": host}))
    (ws.lock / "0000bbbb").write_bytes(os.urandom(300))
    (ws.lock / "halfpipe-251125099").mkdir()  # a downlink that never comes
    os.mkfifo(ws.lock / "0000cccc")


def _footprints(ws, seconds: float, every: float = 0.25) -> list[int]:
    out = []
    end = time.time() + seconds
    while time.time() < end:
        out.append(db_footprint(ws))
        time.sleep(every)
    return out


def test_chaos(tmp_path, mount_tmpfs):
    root = mount_tmpfs("fs", "size=16m")
    ws = init_workspace(root / "ws")
    ws = set_config(ws, f"[disk]\nreserve_bytes = {RESERVE}\n")
    ws = set_config(ws, "[pipeline]\nmax_jobs = 4\n")
    ws = quick(ws, scan_interval=1.0, quiet=0.5, extra="error_backoff_max_s = 2.0\n")
    scratch = root / "scratch"  # same fs: arrivals are renames
    scratch.mkdir()
    log = tmp_path / "daemon.log"  # the log lives on another disk
    d = start_daemon(ws, log)
    good: list[str] = []
    try:
        wait_for(lambda: log.exists() and "watching" in log.read_text(), 30, what="daemon start")

        # 1. the good, the bad and the hostile, all at once
        make_delivery(ws, "251125061", **FAST)
        make_delivery(ws, "251125062", as_="fcopy", **FAST)
        good += ["251125061", "251125062"]
        _bad_deliveries(ws, scratch)
        _bad_locks(ws)
        # a file vanishing while the daemon hashes the delivery (it comes back later)
        v = make_delivery(ws, "251125063", as_="dir", target=scratch / "251125063", **FAST)
        victim = with_big_file_first(v)
        saved = tmp_path / "victim"
        shutil.copy2(v / victim, saved)
        dest = ws.incoming_level0 / "251125063"
        remover = threading.Thread(
            target=remove_while_hashing, args=(d.pid, dest / "a_big.bin", dest / victim)
        )
        remover.start()
        os.rename(v, dest)
        # a delivery taken away right after it arrived
        g = make_delivery(ws, "251125064", as_="dir", target=scratch / "251125064", **FAST)
        os.rename(g, ws.incoming_level0 / "251125064")
        time.sleep(0.05)
        shutil.rmtree(ws.incoming_level0 / "251125064", ignore_errors=True)
        remover.join(30)
        assert not (dest / victim).exists()
        wait_for(
            lambda: all(stream_status(ws).get(x) == "SUCCESS" for x in good),
            60,
            what=f"{good} SUCCESS",
        )
        shutil.copy2(saved, dest / victim)  # the vanished file is back
        good.append("251125063")
        wait_for(
            lambda: stream_status(ws).get("251125063") == "SUCCESS",
            60,
            what="the delivery whose file came back",
        )

        # 2. a nearly full file system: launching pauses, the state database does not grow
        fill_disk(root / "filler1", leave=RESERVE // 2)
        make_delivery(ws, "251125065", events=50, event_bytes=400, chunks=2, runs=1)
        good.append("251125065")
        wait_for(
            lambda: (
                sum(
                    1
                    for e in log_events(log)
                    if e["event"] == "held"
                    and e.get("dlid") == "251125065"
                    and "paused" in e["why"]
                )
                >= 2
            ),
            30,
            what="both makeEvt of 251125065 held",
        )
        if ws.state_url is None:  # SQLite: the file on this disk
            sizes = _footprints(ws, 3.0)
            assert max(sizes) - min(sizes) <= 8192, sizes  # bounded: nothing rewritten
        # 3. full to the last byte, and another delivery arrives (its claim cannot be written)
        late = make_delivery(ws, "251125066", as_="dir", target=scratch / "251125066", **FAST)
        fill_disk(root / "filler2", leave=0)
        os.rename(late, ws.incoming_level0 / "251125066")
        good.append("251125066")
        time.sleep(2.0)
        assert d.poll() is None
        for f in ("filler1", "filler2"):
            (root / f).unlink()
        wait_for(
            lambda: all(stream_status(ws).get(x) == "SUCCESS" for x in good),
            90,
            what=f"{good} SUCCESS",
        )
        assert d.poll() is None  # alive at the end
        listing = cli_proc(ws, "locks", "--json", timeout=30)
        assert listing.returncode == 0
        assert {"0000aaaa", "0000bbbb", "0000cccc", "halfpipe-251125099"} <= {
            r["name"] for r in json.loads(listing.stdout)
        }
    finally:
        assert stop_daemon(d) == 0
    ev = log_events(log)
    rejected = {e["delivery"] for e in ev if e["event"] == "rejected"}
    assert {
        "level0:251125071",
        "level0:not-a-downlink",
        "fcopy:251125073",
        "fcopy:junk",
    } <= rejected
    for dl in good:  # each staged exactly once
        assert [e.get("dlid") for e in ev if e["event"] == "registered"].count(dl) == 1
        assert list((ws.stage / dl).rglob("*.h5")), dl
    # every error names what it concerns: a delivery, a downlink, or (the metrics textfile
    # on the full disk, when its tick falls in that window) what the daemon was doing
    assert all(
        e.get("delivery") or e.get("dlid") or e.get("during") == "metrics"
        for e in ev
        if e["event"] == "error"
    ), [e for e in ev if e["event"] == "error"]
    assert ws.state_url is not None or integrity_ok(ws)  # PRAGMA integrity_check: SQLite
