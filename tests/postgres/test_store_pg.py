"""The state database's own contracts on PostgreSQL (tests/store covers the SQLite file:
its v1 fixtures, WAL, the file backup): a fresh database created at the current version by
``init --state``, a newer one refused with one line and left alone, the change probe fed by
NOTIFY, exactly-once claims across processes, and the identity ids after a copy.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from engine.core.dburl import parse_state_url
from engine.store import SCHEMA_VERSION, Downlink, StateDB
from tests.conftest import run_engine


def _db(url: str) -> StateDB:
    return StateDB(parse_state_url(url, None))


def test_init_state_creates_the_schema_at_the_current_version(tmp_path, pg_url, monkeypatch):
    monkeypatch.delenv("SKYDECK_STATE_URL", raising=False)
    r = run_engine("-w", tmp_path / "ws", "init", "--state", pg_url)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "ws" / "state.db").exists()          # no SQLite file beside it
    with _db(pg_url) as db:
        assert db.opened_version == SCHEMA_VERSION
        assert db.q("SELECT value FROM meta WHERE key = 'schema'")[0][0] == str(SCHEMA_VERSION)


def test_a_newer_database_is_refused_with_one_line_and_left_alone(tmp_path, pg_url, monkeypatch):
    monkeypatch.delenv("SKYDECK_STATE_URL", raising=False)
    assert run_engine("-w", tmp_path / "ws", "init", "--state", pg_url).returncode == 0
    with _db(pg_url) as db, db.tx() as c:
        c.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    redacted = parse_state_url(pg_url, None).redacted
    for args in (["downlinks"], ["streams", "--json"], ["run", "251120001"]):
        r = run_engine("-w", tmp_path / "ws", *args)
        assert r.returncode == 2 and r.stdout == "", r
        assert r.stderr == (f"skydeck-engine: {redacted}: schema version 99 is newer than "
                            f"this skydeck ({SCHEMA_VERSION}); upgrade skydeck\n")
    from engine.store.db import open_backend
    backend = open_backend(parse_state_url(pg_url, None))
    conn = backend.connect()
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == "99"
        assert not any(t.startswith("skydeck_backup") for (t,) in conn.execute(
            "SELECT schema_name FROM information_schema.schemata").fetchall())
    finally:
        conn.close()


def test_the_change_probe_sees_another_connections_commit(pg_url):
    with _db(pg_url) as reader, _db(pg_url) as writer:
        v0 = reader.data_version()
        assert reader.data_version() == v0                      # nothing happened
        writer.log_event("test")
        deadline = time.time() + 5
        while reader.data_version() == v0 and time.time() < deadline:
            time.sleep(0.01)
        assert reader.data_version() != v0


def _claimer(url: str, q) -> None:  # a child process
    with _db(url) as db:
        q.put([d for d in ("251125001", "251125002", "251125003")
               if db.claim_stream(d, "halfpipe")[0] is not None])
        time.sleep(0.5)                                         # a live owner for the others


def test_stream_claims_are_exactly_once_across_processes(pg_url):
    with _db(pg_url) as db:
        for d in ("251125001", "251125002", "251125003"):
            db.register_downlink(Downlink(d, "level0", "/x", 1, False, None, time.time(),
                                          time.time()))
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(pg_url, q)) for _ in range(6)]
    for p in procs:
        p.start()
    won = sorted(d for _ in procs for d in q.get(timeout=120))
    for p in procs:
        p.join(60)
    assert won == ["251125001", "251125002", "251125003"]


def test_registration_order_is_kept(pg_url, tmp_path: Path):
    with _db(pg_url) as db:
        for d in ("251125003", "251125001", "251125002"):
            assert db.register_downlink(Downlink(d, "level0", "/x", 1, False, None, 0.0, 0.0))
        assert not db.register_downlink(Downlink("251125001", "level0", "/y", 1, False, None,
                                                 0.0, 0.0))          # exactly once
        assert [r[0] for r in db.q("SELECT dlid FROM downlinks ORDER BY seq")] == [
            "251125003", "251125001", "251125002"]
