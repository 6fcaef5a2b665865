"""Locks: JSON owner, stale verdicts (dead pid, reused pid, other host), reclaim, unlock."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import Busy
from engine.core.owner import Owner
from engine.pipeline import locks
from tests.props import total

from .conftest import cli, cli_proc


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write(path, **kw) -> None:
    data = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": Owner.me().start,
        "stream": "251125001",
        "process": "mergeEvt",
        "created": time.time(),
    } | kw
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
        locks.acquire(
            p,
            "251125001",
            "mergeEvt",
            owner=Owner(
                child.pid,
                socket.gethostname(),
                __import__("psutil").Process(child.pid).create_time(),
            ),
        )
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


def test_cli_locks_and_unlock(ws, capsys, state_backend):
    """A dead local owner's lock is stale. Another host's: on SQLite never (an operator
    decides, with --force and --yes); on PostgreSQL the server judges it, and a host none
    of whose processes holds a session there is gone, so a plain unlock removes it."""
    _write(ws.lock / "halfpipe-251125004", pid=_dead_pid())
    _write(ws.lock / "cleanup", host="elsewhere", pid=1)
    rc, out, _ = cli(ws, "locks", "--json", capsys=capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    server_judges = state_backend == "postgresql"
    assert rc == 0 and rows["halfpipe-251125004"]["stale"]
    assert rows["cleanup"]["stale"] == server_judges
    assert rows["cleanup"]["owner"] == "elsewhere:1" and rows["cleanup"]["age_s"] >= 0
    rc, out, _ = cli(ws, "locks", capsys=capsys)
    assert "STALE" in out and ("no session" if server_judges else "another host") in out
    # a stale lock is removed on request
    rc, out, _ = cli(ws, "unlock", "halfpipe-251125004", capsys=capsys)
    assert rc == 0 and not (ws.lock / "halfpipe-251125004").exists()
    if server_judges:
        rc, _, _ = cli(ws, "unlock", "cleanup", capsys=capsys)
        assert rc == 0 and not (ws.lock / "cleanup").exists()
        return
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


# ---------------------------------------------------------------- hostile lock content


def _hostile(lock_dir) -> dict[str, str]:
    """Every kind of thing that may lie at a lock path, by name -> what it is."""
    host = socket.gethostname()
    lock_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "halfpipe-251125041": json.dumps({"pid": 99999999999999999999, "host": host}),
        "00000001": json.dumps({"pid": -5, "host": host}),
        "00000002": json.dumps({"pid": 1, "host": host, "start": float("nan")}),
        "00000003": json.dumps([1, 2, 3]),
        "00000004": json.dumps({"pid": True, "host": host}),
        "00000005": json.dumps(
            {"pid": 1, "host": host, "start": None, "created": "yesterday", "stream": {"x": 1}}
        ),
        "00000006": "[" * 100_000,
    }
    for name, text in files.items():
        (lock_dir / name).write_text(text)
    (lock_dir / "00000007").write_bytes(bytes(range(256)) * 10)
    (lock_dir / "00000008").write_bytes(b"{" + b" " * (1 << 20) + b"}")
    (lock_dir / "cleanup").mkdir()
    os.mkfifo(lock_dir / "0000f1f0")
    os.symlink("/etc/passwd", lock_dir / "0000beef")
    return {
        **dict.fromkeys(files, "file"),
        "00000007": "file",
        "00000008": "file",
        "cleanup": "directory",
        "0000f1f0": "FIFO",
        "0000beef": "symbolic link",
    }


def test_any_lock_content_gets_a_row_never_an_exception(ws, capsys):
    kinds = _hostile(ws.lock)
    rows = {i.name: i for i in locks.list_locks(ws.lock)}
    assert set(rows) == set(kinds)  # everything listed, nothing raised
    for name, what in kinds.items():
        info = rows[name]
        if what == "file":
            assert "malformed" in info.reason or "alive" in info.reason, (name, info.reason)
        else:  # never reclaimed automatically
            assert f"not a regular file (a {what})" in info.reason and not info.stale
    assert "out of range" in rows["halfpipe-251125041"].reason
    # the valid owner with bad labels keeps its owner (pid 1 is alive): labels are dropped
    assert rows["00000005"].pid == 1 and rows["00000005"].stream is None
    rc, out, _ = cli(ws, "locks", capsys=capsys)
    assert rc == 0 and all(n in out for n in kinds) and "no locks" not in out
    rc, out, _ = cli(ws, "locks", "--json", capsys=capsys)
    assert rc == 0 and len(json.loads(out)) == len(kinds)


def test_locks_cli_does_not_block_on_a_fifo(ws):
    os.mkfifo(ws.lock / "0000f1f0")
    r = cli_proc(ws, "locks", timeout=30)  # a blocking open() would hang until timeout
    assert r.returncode == 0 and "FIFO" in r.stdout


def test_unlock_force_removes_a_directory_or_fifo_at_a_lock_path(ws, capsys):
    (ws.lock / "cleanup").mkdir()
    os.mkfifo(ws.lock / "0000f1f0")
    rc, _, err = cli(ws, "unlock", "cleanup", capsys=capsys)
    assert rc == 3 and "not a regular file" in err  # not provably stale
    for name in ("cleanup", "0000f1f0"):
        rc, out, _ = cli(ws, "unlock", name, "--force", "--yes", capsys=capsys)
        assert rc == 0 and "removed" in out and not os.path.lexists(ws.lock / name)
    (ws.lock / "cleanup").mkdir()
    (ws.lock / "cleanup" / "x").write_text("")
    rc, _, err = cli(ws, "unlock", "cleanup", "--force", "--yes", capsys=capsys)
    assert rc == 2 and "remove it by hand" in err and err.count("\n") == 1


def test_acquire_at_a_directory_is_busy_with_the_reason(ws):
    p = ws.lock / "halfpipe-251125042"
    p.mkdir()
    old = time.time() - 100  # old: a malformed *file* would be stale now
    os.utime(p, (old, old))
    with pytest.raises(Busy, match="not a regular file"):
        locks.acquire(p, "251125042", "makeEvt")
    assert p.is_dir()


# Hypothesis: any bytes, any JSON value -> a LockContent or BadInput; read() -> a LockInfo.
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)
_owner_like = st.fixed_dictionaries(
    {
        "pid": st.integers() | st.floats() | st.text(max_size=5) | st.none(),
        "host": st.just(socket.gethostname()) | st.text(max_size=5) | st.integers(),
    },
    optional={"start": _json, "created": _json, "stream": _json, "process": _json},
)


@given(st.binary(max_size=300))
def test_parse_content_is_total_on_bytes(data):
    total(locks.parse_content, data)


@given(_json | _owner_like)
def test_parse_content_is_total_on_json(value):
    v = total(locks.parse_content, json.dumps(value).encode())
    if isinstance(v, locks.LockContent):
        assert 1 <= v.pid <= locks.PID_MAX and v.host and v.start >= 0


@given(data=st.binary(max_size=300) | (_json | _owner_like).map(lambda v: json.dumps(v).encode()))
def test_read_any_lock_file_gives_a_verdict(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("lk")
    p = d / "halfpipe-251125043"
    p.write_bytes(data)
    info = locks.read(p)
    assert isinstance(info, locks.LockInfo) and info.reason and "\n" not in info.reason
    json.dumps(info.to_json())  # the console and --json can show it


def test_only_what_no_grace_period_frees_blocks(ws):
    """`blocks` is the verdict's own field (the daemon reports it, `locks` labels it), not a
    match on the reason's wording: a directory blocks; a malformed lock in its grace period
    is merely in doubt, and becomes stale."""
    (ws.lock / "halfpipe-251125070").mkdir()
    (ws.lock / "halfpipe-251125071").write_bytes(b"{")
    rows = {i.name: i for i in locks.list_locks(ws.lock)}
    assert rows["halfpipe-251125070"].blocks and not rows["halfpipe-251125070"].stale
    assert not rows["halfpipe-251125071"].blocks


def test_lock_created_out_of_range_is_dropped_and_odd_names_keep_one_row(ws, capsys):
    """`created: -1e308` printed a 300-digit age; a lock name holding a line break broke the
    table into two rows."""
    host = socket.gethostname()
    _write(ws.lock / "halfpipe-251125072", pid=1, host=host, created=-1e308)
    _write(ws.lock / "odd\nname", pid=1, host=host, created=1e300)
    rows = {i.name: i for i in locks.list_locks(ws.lock)}
    assert all(r.created is None and r.age_s < 1e6 for r in rows.values())
    rc, out, _ = cli(ws, "locks", capsys=capsys)
    assert rc == 0 and len(out.splitlines()) == 3 and "odd\\nname " in out, out
