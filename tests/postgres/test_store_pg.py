"""The state database's schema contracts on PostgreSQL through the CLI, as tests/store
checks them for the SQLite file: ``init --state`` creates the schema at the current version
(and no SQLite file), and a database at a newer version is refused by every command with
the same one line as a SQLite file (the URL redacted) and left as it is, without a backup
schema; and the change probe sees every commit that returned before it. (The backend's
own contracts, in process: tests/postgres/test_backend.py on main.)
"""

from __future__ import annotations

from engine.core.dburl import parse_state_url
from engine.store import SCHEMA_VERSION, StateDB
from tests.conftest import run_engine


def _db(url: str) -> StateDB:
    return StateDB(parse_state_url(url, None))


def test_init_state_creates_the_schema_at_the_current_version(tmp_path, pg_url, monkeypatch):
    monkeypatch.delenv("SKYDECK_STATE_URL", raising=False)
    r = run_engine("-w", tmp_path / "ws", "init", "--state", pg_url)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "ws" / "state.db").exists()  # no SQLite file beside it
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
        assert r.stderr == (
            f"skydeck-engine: {redacted}: schema version 99 is newer than "
            f"this skydeck ({SCHEMA_VERSION}); upgrade skydeck\n"
        )
    from engine.store.connection import open_backend

    backend = open_backend(parse_state_url(pg_url, None))
    conn = backend.connect()
    try:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0] == "99"
        assert not any(
            t.startswith("skydeck_backup")
            for (t,) in conn.execute(
                "SELECT schema_name FROM information_schema.schemata"
            ).fetchall()
        )
    finally:
        conn.close()


def test_the_change_probe_sees_every_commit_that_returned_before_it(pg_url):
    """No race with the notification's delivery: a commit that returned is seen by the very
    next probe, every time (the console's refresh depends on it), and nothing is seen when
    nothing was committed."""
    with _db(pg_url) as reader, _db(pg_url) as writer:
        version = reader.data_version()
        for k in range(200):
            writer.log_event("probe", None, k=k)
            now = reader.data_version()
            assert now != version, k
            version = now
            assert reader.data_version() == version, k


def test_a_version_4_database_gets_the_submission_time_of_schema_5(tmp_path, pg_url, monkeypatch):
    """Schema 5 on PostgreSQL: the step's one SQL text adds ``submitted`` and fills it with
    what ``started`` meant before (the submission), in the upgrade's transaction."""
    monkeypatch.delenv("SKYDECK_STATE_URL", raising=False)
    assert run_engine("-w", tmp_path / "ws", "init", "--state", pg_url).returncode == 0
    with _db(pg_url) as db, db.tx() as c:
        c.execute(
            "INSERT INTO downlinks (dlid, kind, level0, chunks, delivered, registered) "
            "VALUES ('251207001', 'level0', '/l0', 1, 1.0, 1.0)"
        )
        c.execute(
            "INSERT INTO streams (task, dlid, execution, status, created) "
            "VALUES ('halfpipe', '251207001', 1, 'SUCCESS', 1.0)"
        )
        sid = c.execute("SELECT id FROM streams").fetchone()[0]
        c.execute(
            "INSERT INTO process_instances (stream_id, process, execution, status, created, "
            "started, ended) VALUES (?, 'makeEvt', 1, 'SUCCESS', 1.0, 2.5, 9.0)",
            (sid,),
        )
        c.execute("ALTER TABLE process_instances DROP COLUMN submitted")
        c.execute("UPDATE meta SET value = '4' WHERE key = 'schema'")
    with _db(pg_url) as db:
        assert db.opened_version == 4
        (pi,) = db.instances(sid)
        assert (pi.submitted, pi.started, pi.ended) == (2.5, 2.5, 9.0)
        assert pi.queue_s(100.0) == 0.0 and pi.run_s(100.0) == 6.5
    with _db(pg_url) as db:
        assert db.opened_version == SCHEMA_VERSION == 5
