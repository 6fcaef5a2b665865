"""The PostgreSQL backend keeps the store's contracts (engine/store/postgres.py): qmark SQL
rewritten without touching literals, rows by name and position, one writer at a time,
exactly-once claims across processes, the change probe, the schema created once and a
newer one refused, and connection failures as one line without the password."""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.dburl import parse_state_url
from engine.core.errors import EXIT_UNAVAILABLE, BadInput, StateUnavailable
from engine.store import SCHEMA_VERSION, Downlink, StateDB

psycopg = pytest.importorskip("psycopg")
from engine.store.postgres import to_pyformat  # noqa: E402  (needs psycopg)


@pytest.mark.parametrize(
    ("qmark", "pyformat"),
    [
        (
            "SELECT * FROM t WHERE a = ? AND b IN (?,?)",
            "SELECT * FROM t WHERE a = %s AND b IN (%s,%s)",
        ),
        (
            "SELECT '?', \"q?\" FROM t WHERE a LIKE 'x%' AND b = ?",
            "SELECT '?', \"q?\" FROM t WHERE a LIKE 'x%%' AND b = %s",
        ),
        ("SELECT 'it''s ?' , ?", "SELECT 'it''s ?' , %s"),
        ("x TEXT -- chunk %05d, isn't it?\n, y = ?", "x TEXT -- chunk %%05d, isn't it?\n, y = %s"),
        ("SELECT 5 % 2", "SELECT 5 %% 2"),
    ],
)
def test_qmark_sql_becomes_pyformat_outside_literals(qmark: str, pyformat: str) -> None:
    assert to_pyformat(qmark) == pyformat


@given(st.text(max_size=200))
def test_pyformat_rewrite_is_total_and_keeps_the_placeholder_count(sql: str) -> None:
    out = to_pyformat(sql)
    assert isinstance(out, str)
    # every % in the output is part of %% or a %s we made
    assert out.replace("%%", "").replace("%s", "").count("%") == 0


def _url(pg_url: str) -> Any:
    return parse_state_url(pg_url, "test")


def test_a_fresh_database_gets_the_schema_once(pg_url: str) -> None:
    with StateDB(_url(pg_url)) as db:
        assert db.opened_version is None  # created here
        assert db.backend.name == "postgresql"
    with StateDB(_url(pg_url)) as db:
        assert db.opened_version == SCHEMA_VERSION
        row = db.conn.execute("SELECT key, value FROM meta WHERE key = ?", ("schema",)).fetchone()
        assert row["value"] == row[1] == str(SCHEMA_VERSION)
        assert dict(row) == {"key": "schema", "value": str(SCHEMA_VERSION)}


def test_a_newer_schema_is_refused_with_one_line(pg_url: str) -> None:
    StateDB(_url(pg_url)).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(BadInput) as err:
        StateDB(_url(pg_url))
    assert "schema version 99 is newer than this skydeck" in str(err.value)
    assert "\n" not in str(err.value)


def test_registration_order_and_types_round_trip(pg_url: str) -> None:
    with StateDB(_url(pg_url)) as db:
        for i, dlid in enumerate(("251201003", "251201001", "251201002")):
            assert db.register_downlink(
                Downlink(dlid, "level0", "/x", 2, i == 1, None, 1.5 + i, 2.5 + i)
            )
        assert not db.register_downlink(
            Downlink("251201001", "level0", "/y", 1, False, None, 0.0, 0.0)
        )  # exactly once
        facts = db.downlink_facts(0, 0, 0.0)
        assert [f.dlid for f in sorted(facts, key=lambda f: f.seq)] == [
            "251201003",
            "251201001",
            "251201002",
        ]
        assert [f.dlid for f in db.downlink_facts(2, 0, 0.0)] == ["251201002"]
        dl = db.downlink("251201001")
        assert dl is not None and dl.gensteps is True and dl.delivered == 2.5


def _claimer(url: str, dlid: str, q: Any, go: Any, done: Any) -> None:
    with StateDB(parse_state_url(url, "test")) as db:
        go.wait()  # all connected: they claim together
        st, _why = db.claim_stream(dlid, "halfpipe")
        q.put(st.id if st is not None else None)
        done.wait()  # the winner stays alive until all tried (a dead owner is taken over)


def test_eight_processes_claim_one_stream_exactly_once(pg_url: str) -> None:
    with StateDB(_url(pg_url)) as db:
        db.register_downlink(Downlink("251201001", "level0", "/x", 1, False, None, 0.0, 0.0))
    ctx = mp.get_context("spawn")
    q, go, done = ctx.Queue(), ctx.Barrier(8), ctx.Event()
    procs = [
        ctx.Process(target=_claimer, args=(pg_url, "251201001", q, go, done)) for _ in range(8)
    ]
    for p in procs:
        p.start()
    try:
        got = [q.get(timeout=60) for _ in procs]
    finally:
        done.set()
        for p in procs:
            p.join(timeout=60)
    winners = [g for g in got if g is not None]
    assert len(winners) == 1, got
    with StateDB(_url(pg_url)) as db:
        assert db.q("SELECT COUNT(*) FROM streams")[0][0] == 1


def test_the_change_probe_sees_another_connections_commit(pg_url: str) -> None:
    with StateDB(_url(pg_url)) as reader, StateDB(_url(pg_url)) as writer:
        v0 = reader.data_version()
        assert reader.data_version() == v0  # nothing changed
        writer.register_downlink(Downlink("251201001", "level0", "/x", 1, False, None, 0.0, 0.0))
        deadline = time.monotonic() + 5
        while reader.data_version() == v0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reader.data_version() != v0
        v1 = reader.data_version()
        time.sleep(0.05)
        assert reader.data_version() == v1  # and then quiet again


def test_a_failed_write_leaves_nothing_and_the_connection_usable(pg_url: str) -> None:
    with StateDB(_url(pg_url)) as db:
        with pytest.raises(psycopg.Error), db.tx() as c:
            c.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("a", "1"))
            c.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("a", "2"))  # duplicate
        assert db.q("SELECT COUNT(*) FROM meta WHERE key = 'a'")[0][0] == 0
        with db.tx() as c:
            c.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("a", "3"))
        assert db.q("SELECT value FROM meta WHERE key = 'a'")[0][0] == "3"


def test_an_unreachable_server_is_one_line_without_the_password(tmp_path: Any) -> None:
    """No server there: a wait, then StateUnavailable (exit 75, try again later), not bad
    input; one line, the password masked."""
    url = parse_state_url(f"postgresql://skydeck:s3cr3t-pw@/x?host={tmp_path}&port=1", "test")
    t0 = time.monotonic()
    with pytest.raises(StateUnavailable) as err:
        StateDB(replace(url, wait_s=0.5), timeout=2)
    assert 0.4 < time.monotonic() - t0 < 10  # retried with back-off for wait_s, no longer
    text = str(err.value)
    assert "state database unreachable" in text and "\n" not in text
    assert "s3cr3t-pw" not in text and "***" in text
    assert err.value.exit_code == EXIT_UNAVAILABLE == 75
