"""Locks: JSON owner, stale verdicts (dead pid, reused pid, other host), reclaim, unlock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from engine import locks
from engine.errors import Busy
from engine.state import Owner

from .conftest import cli


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write(path, **kw) -> None:
    data = {"pid": os.getpid(), "host": socket.gethostname(), "start": Owner.me().start,
            "stream": "251125001", "process": "mergeEvt", "created": time.time()} | kw
    path.write_text(json.dumps(data))


def test_acquire_holds_json_and_release(ws):
    p = ws.lock / "halfpipe-251125001"
    info = locks.acquire(p, "251125001", "makeEvt")
    data = json.loads(p.read_text())
    assert {"pid", "host", "start", "stream", "process", "created"} <= set(data)
    assert data["pid"] == os.getpid() and info.kind == "stream" and not info.stale
    # the same owner may take it again (every makeEvt creates the stream lock)
    locks.acquire(p, "251125001", "makeEvt")
    assert locks.release(p) and not p.exists()


def test_live_lock_is_busy(ws):
    p = ws.lock / "0e1a2b3c"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        locks.acquire(p, "251125001", "mergeEvt", owner=Owner(child.pid, socket.gethostname(),
                                                               __import__("psutil").Process(child.pid).create_time()))
        with pytest.raises(Busy):
            locks.acquire(p, "251125002", "mergeEvt")
        info = locks.read(p)
        assert info.kind == "run merge" and not info.stale and "alive" in info.reason
    finally:
        child.kill()
        child.wait()
    # the owner is gone now: stale, and acquire reclaims it
    info = locks.read(p)
    assert info.stale and "not running" in info.reason
    log: list[str] = []
    locks.acquire(p, "251125002", "mergeEvt", log=log)
    assert json.loads(p.read_text())["pid"] == os.getpid() and "reclaimed" in log[0]


def test_stale_verdicts(ws):
    dead = ws.lock / "halfpipe-251125003"
    _write(dead, pid=_dead_pid())
    reused = ws.lock / "0000beef"
    _write(reused, start=Owner.me().start - 1000)
    foreign = ws.lock / "cleanup"
    _write(foreign, host="some-other-host", pid=1)
    v = {i.name: i for i in locks.list_locks(ws.lock)}
    assert v["halfpipe-251125003"].stale and "not running" in v["halfpipe-251125003"].reason
    assert v["0000beef"].stale and "reused" in v["0000beef"].reason
    assert not v["cleanup"].stale and "another host" in v["cleanup"].reason
    assert v["cleanup"].kind == "cleanup"


def test_cli_locks_and_unlock(ws, capsys):
    _write(ws.lock / "halfpipe-251125004", pid=_dead_pid())
    _write(ws.lock / "cleanup", host="elsewhere", pid=1)
    rc, out, _ = cli(ws, "locks", "--json", capsys=capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    assert rc == 0 and rows["halfpipe-251125004"]["stale"] and not rows["cleanup"]["stale"]
    assert rows["cleanup"]["owner"] == "elsewhere:1" and rows["cleanup"]["age_s"] >= 0
    rc, out, _ = cli(ws, "locks", capsys=capsys)
    assert "STALE" in out and "another host" in out
    # a stale lock is removed on request
    rc, out, _ = cli(ws, "unlock", "halfpipe-251125004", capsys=capsys)
    assert rc == 0 and not (ws.lock / "halfpipe-251125004").exists()
    # a foreign-host lock is refused (exit 3, one line naming the lock) ...
    rc, _, err = cli(ws, "unlock", "cleanup", capsys=capsys)
    assert rc == 3 and "cleanup" in err and "not provably stale" in err and err.count("\n") == 1
    assert (ws.lock / "cleanup").exists()
    # ... also with --force when there is no confirmation
    rc, _, err = cli(ws, "unlock", "cleanup", "--force", capsys=capsys)
    assert rc == 2 and "--yes" in err and (ws.lock / "cleanup").exists()
    rc, _, _ = cli(ws, "unlock", "cleanup", "--force", "--yes", capsys=capsys)
    assert rc == 0 and not (ws.lock / "cleanup").exists()
    rc, _, err = cli(ws, "unlock", "nosuch", capsys=capsys)
    assert rc == 2 and "no such lock" in err
    rc, _, err = cli(ws, "unlock", "../skydeck.toml", capsys=capsys)
    assert rc == 2 and "not a lock" in err


def test_malformed_lock_is_stale_after_grace(ws):
    p = ws.lock / "deadbeef"
    p.write_text("garbage")
    assert not locks.read(p).stale
    old = time.time() - 10
    os.utime(p, (old, old))
    info = locks.read(p)
    assert info.stale and "malformed" in info.reason
