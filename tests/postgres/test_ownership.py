"""Ownership across hosts: owners the PostgreSQL server can see die, takeover of
their streams, delivery claims and lock files without an operator, temporaries that carry
their host, and the console's change probe through LISTEN/NOTIFY.

"Another host" is a real second process whose ``socket.gethostname`` answers ``hostB``
(the two-host test, test_two_hosts.py, uses UTS namespaces instead; this needs no root).
It holds its presence on the real server (tests/postgres/plugin.py) and is killed with
SIGKILL, as a crashed host's process would vanish.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import api
from engine.core import owner as owner_mod
from engine.core.atomic import atomic_write_bytes, sweep_stale_temps, temp_name, temp_writer
from engine.core.dburl import parse_state_url
from engine.core.owner import Owner, owner_dead, presence_keys
from engine.core.workspace import init_workspace
from engine.pipeline import locks
from engine.store import StateDB
from engine.store.records import Downlink
from tests.conftest import engine_env, run_engine

REPO = Path(__file__).resolve().parents[2]
OTHER = "hostB"


@pytest.fixture
def judge_slot() -> Iterator[None]:
    """Whatever a test installs as the process's remote judge is undone after it."""
    before = owner_mod.remote_judge()
    yield
    owner_mod.set_remote_judge(before)


def _db(url: str) -> StateDB:
    return StateDB(parse_state_url(url, None))


def _downlink(db: StateDB, dlid: str) -> None:
    now = time.time()
    db.register_downlink(Downlink(dlid, "level0", f"/data/{dlid}", 1, False, None, now, now))


class OtherHost:
    """A process that believes it runs on ``hostB``: it takes what ``action`` says on the
    state server at ``url`` (holding its presence), prints its owner and waits to be killed."""

    def __init__(self, url: str, action: str, host: str = OTHER) -> None:
        code = textwrap.dedent(f"""
            import json, socket, sys, time
            socket.gethostname = lambda: {host!r}
            from pathlib import Path
            from engine.core.dburl import parse_state_url
            from engine.core.owner import Owner
            from engine.pipeline import locks
            from engine.store import StateDB
            db = StateDB(parse_state_url({url!r}, None))
            db.hold_presence()
            action = {action!r}
            kind, _, arg = action.partition(":")
            if kind == "stream":
                st, why = db.claim_stream(arg, "halfpipe")
                assert st is not None, why
            elif kind == "delivery":
                assert db.claim_delivery(arg, "level0", None, "/x/" + arg)
            elif kind == "lock":
                locks.acquire(Path(arg), "251201001", "makeEvt")
            o = Owner.me()
            print(json.dumps([o.pid, o.host, o.start]), flush=True)
            time.sleep(120)
        """)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.proc.kill()
            raise AssertionError(f"the other host's process failed: {err[-2000:]}")
        pid, h, start = json.loads(line)
        self.owner = Owner(pid, h, start)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


def _wait_dead(o: Owner, timeout: float = 10.0) -> tuple[bool, str]:
    """Until the installed judge calls the owner and its host gone (the server ends the
    killed process's session a moment after its socket closes)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        verdict = owner_dead(o.pid, o.host, o.start)
        if verdict[0] and owner_dead(o.pid, o.host, None)[0]:
            return verdict
        time.sleep(0.05)
    return owner_dead(o.pid, o.host, o.start)


# ---------------------------------------------------------------------------- the judge


def test_keys_tell_identities_apart() -> None:
    a = presence_keys(100, "hostA", 1700000000.25)
    assert a == presence_keys(100, "hostA", 1700000000.25)
    assert a[0] != presence_keys(100, "hostB", 1700000000.25)[0]
    assert a[0] != presence_keys(100, "hostA", 1700000099.25)[0]  # a reused pid
    assert presence_keys(100, "hostA", None)[0] is None
    assert presence_keys(100, "hostA", None)[1:] == a[1:]
    assert all(-(2**63) <= k < 2**63 for k in a if k is not None)
    assert -(2**31) <= a[1] < 2**31


def test_without_a_server_another_host_is_never_dead(judge_slot: None) -> None:
    owner_mod.set_remote_judge(None)
    dead, why = owner_dead(os.getpid(), OTHER, 1.0)
    assert not dead and "only an operator" in why


def test_the_server_sees_another_hosts_owner_die(pg_url: str, judge_slot: None) -> None:
    with _db(pg_url) as db:
        p = db.hold_presence()
        assert p is not None and owner_mod.remote_judge() is not None
        me = Owner.me()
        assert db.remote_judge is not None
        assert db.remote_judge(me.pid, me.host, me.start) == (
            False,
            p.judge(me.pid, me.host, me.start)[1],
        )
        b = OtherHost(pg_url, "none:")
        try:
            dead, why = owner_dead(b.owner.pid, OTHER, b.owner.start)
            assert not dead and "alive" in why
            # host and pid only (a temporary may be a job's, which holds no presence): the
            # host decides, for any pid on it
            for pid in (b.owner.pid, b.owner.pid + 1):
                dead, why = owner_dead(pid, OTHER, None)
                assert not dead and "cannot be judged" in why
            # the same pid on hostB with another start: a reused pid, not that process
            assert owner_dead(b.owner.pid, OTHER, b.owner.start + 50)[0]
        finally:
            b.kill()
        dead, why = _wait_dead(b.owner)
        assert dead and "no session on the state server" in why
        dead, why = _wait_dead(Owner(b.owner.pid + 1, OTHER, 0.0))  # start 0: host and pid
        assert dead and f"no process on host {OTHER}" in owner_dead(b.owner.pid + 1, OTHER, None)[1]


def test_the_claim_code_judges_through_its_own_connection(pg_url: str, judge_slot: None) -> None:
    """No installed judge (a process that owns nothing yet): claims still see the server."""
    owner_mod.set_remote_judge(None)
    with _db(pg_url) as db:
        b = OtherHost(pg_url, "none:")
        try:
            assert db.remote_judge is not None
            told = db.remote_judge(b.owner.pid, OTHER, b.owner.start)
            assert told is not None and told[0] is False
        finally:
            b.kill()


# ---------------------------------------------------------------------------- takeover


def test_a_dead_hosts_stream_is_taken_over_with_an_event(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, judge_slot: None
) -> None:
    dlid = "251201001"
    monkeypatch.setenv("SKYDECK_STATE_URL", pg_url)
    ws = init_workspace(tmp_path / "ws")
    with StateDB(ws.state) as db:
        _downlink(db, dlid)
        b = OtherHost(pg_url, f"stream:{dlid}")
        try:
            st, why = db.claim_stream(dlid, "halfpipe")
            assert st is None and "hostB" in why and "alive" in why  # a live owner keeps it
        finally:
            b.kill()
        _wait_dead(b.owner)
        st, why = db.claim_stream(dlid, "halfpipe")
        taken = db.drain_takeovers()
        assert st is not None and why == ""
        me = Owner.me()
        assert (st.owner_pid, st.owner_host) == (me.pid, me.host)
        old = f"{OTHER}:{b.owner.pid}"
        note = f"taken over from {old} by {me}"
        assert st.note and st.note.startswith(note)
        assert len(taken) == 1 and taken[0]["old_owner"] == old and taken[0]["new_owner"] == str(me)
        assert taken[0]["dlid"] == dlid and taken[0]["what"] == "stream"
        assert db.drain_takeovers() == []
        events = db.q("SELECT kind, dlid, detail FROM events WHERE kind = 'takeover'")
        assert len(events) == 1 and events[0][1] == dlid
        detail = json.loads(events[0][2])
        assert detail["what"] == "stream" and detail["old_owner"] == old
        assert detail["new_owner"] == str(me) and "no session" in detail["why"]
        # shown through engine.api: the streams listing and the console's downlink row
        views = api.stream_views(ws, dlid)
        assert len(views) == 1 and (views[0].stream.note or "").startswith(note)
        rows = api.DownlinkRows(ws).read(db)
        assert rows[dlid].note.startswith(note)


def test_a_dead_hosts_delivery_claim_is_taken_over(pg_url: str, judge_slot: None) -> None:
    with _db(pg_url) as db:
        b = OtherHost(pg_url, "delivery:251201002")
        try:
            assert not db.claim_delivery("251201002", "level0", None, "/x/251201002")
        finally:
            b.kill()
        _wait_dead(b.owner)
        assert db.claim_delivery("251201002", "level0", None, "/x/251201002")
        taken = db.drain_takeovers()
        assert [(t["what"], t["delivery"], t["old_owner"]) for t in taken] == [
            ("delivery", "251201002", f"{OTHER}:{b.owner.pid}")
        ]
        kinds = [
            json.loads(r[0])["what"]
            for r in db.q("SELECT detail FROM events WHERE kind = 'takeover'")
        ]
        assert kinds == ["delivery"]


def test_a_dead_hosts_lock_is_reclaimed(pg_url: str, tmp_path: Path, judge_slot: None) -> None:
    lock = tmp_path / "lock" / "halfpipe-251201001"
    with _db(pg_url) as db:
        db.hold_presence()
        b = OtherHost(pg_url, f"lock:{lock}")
        try:
            info = locks.read(lock)
            assert info.host == OTHER and not info.stale and "alive" in info.reason
            with pytest.raises(locks.Busy):
                locks.acquire(lock, "251201001", "makeEvt")
        finally:
            b.kill()
        _wait_dead(b.owner)
        info = locks.read(lock)
        assert info.stale and "no session" in info.reason
        log: list[str] = []
        got = locks.acquire(lock, "251201001", "makeEvt", log=log)
        assert got.host == socket.gethostname() and got.pid == os.getpid()
        assert len(log) == 1 and log[0].startswith(f"took over lock {lock.name} from {OTHER}:")
        assert locks.release(lock)


def test_sqlite_keeps_the_one_host_rule(tmp_path: Path, judge_slot: None) -> None:
    """No server: another host's stream and lock stay until an operator clears them."""
    owner_mod.set_remote_judge(None)
    dlid = "251201003"
    with StateDB(tmp_path / "state.db") as db:
        assert db.hold_presence() is None and db.remote_judge is None
        _downlink(db, dlid)
        db.conn.execute(
            "INSERT INTO streams (task, dlid, execution, status, owner_pid, "
            "owner_host, owner_start, created) VALUES ('halfpipe', ?, 1, 'RUNNING', "
            "4242, ?, 1.0, 1.0)",
            (dlid, OTHER),
        )
        st, why = db.claim_stream(dlid, "halfpipe")
        assert st is None and "only an operator" in why
    lock = tmp_path / "halfpipe-251201003"
    lock.write_text(json.dumps({"pid": 4242, "host": OTHER, "start": 1.0}))
    assert not locks.read(lock).stale


# ---------------------------------------------------------------------------- temporaries


def test_temporaries_carry_the_host_and_the_pid(tmp_path: Path) -> None:
    target = tmp_path / "out.h5"
    tmp = temp_name(target)
    assert tmp.name == f".out.h5.tmp-{socket.gethostname()}-{os.getpid()}"
    assert temp_writer(tmp.name[len(".out.h5.tmp-") :]) == (socket.gethostname(), os.getpid())
    assert temp_writer("123") == (None, 123)  # an old workspace's name: this host's
    assert temp_writer("host-b.example-77") == ("host-b.example", 77)
    for bad in ("", "-1", "abc", "host-", "1-2-x", "h-12345678901"):
        assert temp_writer(bad) is None


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_sweep_keeps_another_hosts_temporary(tmp_path: Path, judge_slot: None) -> None:
    owner_mod.set_remote_judge(None)
    target = tmp_path / "out.h5"
    dead = _dead_pid()
    theirs = temp_name(target, pid=dead, host=OTHER)
    old_dead = target.with_name(f".out.h5.tmp-{dead}")  # an old name, this host's
    mine_dead = temp_name(target, pid=dead)
    live_here = temp_name(target, pid=os.getppid())
    for p in (theirs, old_dead, mine_dead, live_here):
        p.write_bytes(b"partial")
    removed = sweep_stale_temps(target)
    assert set(removed) == {old_dead, mine_dead}
    assert theirs.exists() and live_here.exists()
    atomic_write_bytes(target, b"whole")  # sweeps again, writes
    assert target.read_bytes() == b"whole" and theirs.exists()


def test_a_dead_hosts_temporary_goes_with_the_server(
    pg_url: str, tmp_path: Path, judge_slot: None
) -> None:
    target = tmp_path / "out.h5"
    with _db(pg_url) as db:
        db.hold_presence()
        b = OtherHost(pg_url, "none:")
        theirs = temp_name(target, pid=b.owner.pid, host=OTHER)
        theirs.write_bytes(b"partial")
        lock_tmp = tmp_path / f".halfpipe-251201001.tmp-{OTHER}-{b.owner.pid}"
        lock_tmp.write_bytes(b"{}")
        jobs = temp_name(target, pid=_dead_pid(), host=OTHER)  # a job's: no presence of its own
        jobs.write_bytes(b"partial")
        try:
            assert sweep_stale_temps(target) == [] and theirs.exists() and jobs.exists()
            assert locks.sweep_temps(tmp_path) == [] and lock_tmp.exists()
        finally:
            b.kill()
        _wait_dead(b.owner)
        assert set(sweep_stale_temps(target)) == {theirs, jobs} and not theirs.exists()
        assert locks.sweep_temps(tmp_path) == [lock_tmp] and not lock_tmp.exists()


@given(st.text(max_size=40))
def test_any_temporary_suffix_gives_a_writer_or_none(suffix: str) -> None:
    got = temp_writer(suffix)
    assert got is None or (
        isinstance(got[1], int)
        and 0 <= got[1] < 10**10
        and (got[0] is None or (isinstance(got[0], str) and got[0]))
    )


# ---------------------------------------------------------------------------- the console's probe


def _register_elsewhere(url: str, dlids: list[str], running: bool = False) -> None:
    """Another process registers downlinks (what a daemon on another host does); with
    ``running`` each gets a stream RUNNING on hostB with three instances."""
    code = textwrap.dedent(f"""
        import time
        from engine.core.dburl import parse_state_url
        from engine.store import StateDB
        from engine.store.records import Downlink
        with StateDB(parse_state_url({url!r}, None)) as db:
            for d in {dlids!r}:
                now = time.time()
                db.register_downlink(Downlink(d, "level0", "/data/" + d, 1, False, None, now, now))
                if not {running!r}:
                    continue
                with db.tx() as c:
                    sid = db.backend.insert(c, "INSERT INTO streams (task, dlid, execution, "
                        "status, owner_pid, owner_host, owner_start, created, started) VALUES "
                        "('halfpipe', ?, 1, 'RUNNING', 4242, 'hostB', 1.0, ?, ?)", (d, now, now))
                    for proc in ("makeEvt", "mergeIndices", "mergeEvt"):
                        c.execute("INSERT INTO process_instances (stream_id, process, key, "
                                  "execution, status, host, pid, created) VALUES "
                                  "(?, ?, '', 1, 'RUNNING', 'hostB', 4243, ?)", (sid, proc, now))
    """)
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


def test_the_console_refreshes_on_another_process_write_only(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, judge_slot: None
) -> None:
    """engine.api's Monitor on PostgreSQL: nothing changed, nothing read (LISTEN/NOTIFY says
    so without a query); a commit by another process is seen at the next poll; and a full
    read costs the same number of statements for 5 downlinks as for 60, streams RUNNING on
    another host and their instances included (no per-row query). A console owns nothing,
    so it holds no presence and installs no judge."""
    owner_mod.set_remote_judge(None)
    monkeypatch.setenv("SKYDECK_STATE_URL", pg_url)
    ws = init_workspace(tmp_path / "ws")
    _register_elsewhere(pg_url, [f"2512010{i:02d}" for i in range(5)], running=True)
    from engine.store import postgres

    calls = 0
    real = postgres.Cursor.execute

    def counting(self: postgres.Cursor, sql: str, args: object = ()) -> postgres.Cursor:
        nonlocal calls
        calls += 1
        return real(self, sql, args)  # type: ignore[arg-type]

    monkeypatch.setattr(postgres.Cursor, "execute", counting)
    with api.Monitor(ws) as mon:
        first = mon.poll(None)
        assert first.rows is not None and len(first.rows) == 5
        calls = 0
        idle = mon.poll(None)
        assert idle.rows is None and not idle.stream_read
        assert calls == 0  # the probe asked the server nothing: no notification was waiting
        _register_elsewhere(pg_url, ["251201099"])
        deadline = time.time() + 10
        seen = mon.poll(None)
        while seen.rows is None and time.time() < deadline:
            time.sleep(0.05)
            seen = mon.poll(None)
        assert seen.rows is not None and "251201099" in seen.rows
        mon.forget()
        calls = 0
        mon.poll("251201099")
        small = calls
        _register_elsewhere(pg_url, [f"2512011{i:02d}" for i in range(54)], running=True)
        mon.forget()
        calls = 0
        full = mon.poll("251201099")
        assert full.rows is not None and len(full.rows) == 60
        assert calls == small, (small, calls)


# ---------------------------------------------------------------------------- a lost presence


def test_a_daemon_that_lost_its_presence_gives_up_what_was_taken_over(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, judge_slot: None
) -> None:
    """The server ended the daemon's presence connection (a restart, a network cut): the
    daemon takes its presence again, and a stream another owner took meanwhile is given up,
    nothing written; a stream still its own stays."""
    import psycopg

    from engine.daemon import Daemon

    monkeypatch.setenv("SKYDECK_STATE_URL", pg_url)
    ws = init_workspace(tmp_path / "ws")
    with StateDB(ws.state) as db:
        _downlink(db, "251201010")
        _downlink(db, "251201011")
    seen: list[dict] = []
    d = Daemon(ws, emit=seen.append)
    try:
        presence = d.streams.presence
        assert presence is not None and presence.check()
        d.streams.pick_up()
        assert sorted(r.dlid for r in d.streams.runners.values()) == ["251201010", "251201011"]
        d.streams.check_presence()
        assert not [e for e in seen if e["event"] in ("presence_lost", "stream_lost")]
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (presence.conn.raw.info.backend_pid,))
        taken = next(sid for sid, r in d.streams.runners.items() if r.dlid == "251201010")
        d.db.conn.execute(
            "UPDATE streams SET owner_pid = 4242, owner_host = 'hostB' WHERE id = ?", (taken,)
        )
        d.streams.check_presence()
        assert presence.check()  # taken again: it stands since
        kinds = [e["event"] for e in seen]
        assert kinds.count("presence_lost") == 1 and kinds.count("stream_lost") == 1
        lost = next(e for e in seen if e["event"] == "stream_lost")
        assert lost["dlid"] == "251201010" and lost["owner"] == "hostB:4242"
        assert [r.dlid for r in d.streams.runners.values()] == ["251201011"]
        st = d.db.stream(taken)
        assert (st.owner_pid, st.owner_host, st.status) == (4242, "hostB", "RUNNING")
        me = Owner.me()
        assert d.db.remote_judge is not None
        assert d.db.remote_judge(me.pid, me.host, me.start) == (
            False,
            f"{me.host}:{me.pid} holds its session on the state server (alive)",
        )
    finally:
        d.close()


def test_the_console_judges_another_hosts_lock_through_the_server(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, judge_slot: None
) -> None:
    """A console owns nothing and installs no judge; its lock panel still asks the server
    through its own connection: hostB's lock is live while hostB lives, stale after."""
    owner_mod.set_remote_judge(None)
    monkeypatch.setenv("SKYDECK_STATE_URL", pg_url)
    ws = init_workspace(tmp_path / "ws")
    lock = ws.lock / "halfpipe-251201001"
    b = OtherHost(pg_url, f"lock:{lock}")
    with api.Monitor(ws, lock_recheck_s=0.0) as mon:
        try:
            shown = mon.poll(None).locks
            assert shown is not None and [(i.host, i.stale) for i in shown] == [(OTHER, False)]
        finally:
            b.kill()
        deadline = time.time() + 10
        while time.time() < deadline:
            shown = mon.poll(None).locks
            if shown and shown[0].stale:
                break
            time.sleep(0.05)
        assert shown is not None and shown[0].stale and "no session" in shown[0].reason
    assert not locks.read(lock).stale  # without a judge (SQLite's rule): never stale


def test_locks_and_unlock_judge_another_hosts_owner_through_the_server(
    pg_url: str, tmp_path: Path, judge_slot: None
) -> None:
    """`skydeck-engine locks` and `unlock` (processes, as an operator runs them): hostB's
    lock is live and refused without --force while hostB lives; once it died the listing
    says stale and a plain unlock removes it."""
    env = engine_env(SKYDECK_STATE_URL=pg_url)
    ws = init_workspace(tmp_path / "ws")
    lock = ws.lock / "halfpipe-251201001"
    b = OtherHost(pg_url, f"lock:{lock}")
    try:
        (shown,) = json.loads(
            run_engine("-w", ws.root, "locks", "--json", env=env, check=True).stdout
        )
        assert shown["host"] == OTHER and not shown["stale"]
        refused = run_engine("-w", ws.root, "unlock", lock.name, env=env)
        assert refused.returncode == 3 and lock.exists(), refused.stderr
    finally:
        b.kill()
    _wait_dead(b.owner)
    (shown,) = json.loads(run_engine("-w", ws.root, "locks", "--json", env=env, check=True).stdout)
    assert shown["stale"] and "no session" in shown["reason"]
    done = run_engine("-w", ws.root, "unlock", lock.name, env=env)
    assert done.returncode == 0, done.stderr
    assert not lock.exists()
