"""`skydeck-engine db copy --to URL`: a workspace that ran real mock downlinks end to end on
SQLite, moved into an empty PostgreSQL database (engine/store/copy.py, engine/cli/db.py).

What must hold: the listings read the same on both; the daemon continues on PostgreSQL with
new ids after the copied ones; a target that is not empty, a live daemon or a live runner
is refused with one line and nothing written; a copy that does not verify keeps nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.core.heartbeat import write_heartbeat
from engine.core.owner import Owner
from engine.core.workspace import Workspace, init_workspace
from engine.store import StateDB
from engine.store import copy as store_copy
from tests.conftest import engine_env, run_engine
from tests.pipeline.conftest import FAST, cli, cli_proc, make_delivery, set_config


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A SQLite workspace (whatever the environment says) that staged two downlinks."""
    monkeypatch.delenv("SKYDECK_STATE_URL", raising=False)
    w = set_config(init_workspace(tmp_path / "ws"), "[disk]\nreserve_bytes = 0\n")
    make_delivery(w, "251125001", **FAST)
    make_delivery(w, "251125002", as_="fcopy", **FAST)
    res = cli_proc(w, "watch", "--once")
    assert res.returncode == 0, res.stderr
    return w


def _listings(w: Workspace, **env: str) -> tuple[object, object]:
    out = []
    for cmd in ("downlinks", "streams"):
        res = run_engine("-w", w.root, cmd, "--json", env=engine_env(**env))
        assert res.returncode == 0, res.stderr
        out.append(json.loads(res.stdout))
    return out[0], out[1]


def _rows(url: str, table: str) -> int:
    from engine.core.dburl import parse_state_url

    with StateDB(parse_state_url(url, None)) as db:
        return int(db.q(f"SELECT COUNT(*) FROM {table}")[0][0])


def test_copy_then_listings_identical_and_the_daemon_continues(ws, pg_url, capsys):
    before = _listings(ws)
    with StateDB(ws.state_db) as db:
        counts = {t: int(db.q(f"SELECT COUNT(*) FROM {t}")[0][0]) for t in store_copy.TABLES}
        max_pi = int(db.q("SELECT MAX(id) FROM process_instances")[0][0])
    rc, out, err = cli(ws, "db", "copy", "--to", pg_url, "--json", capsys=capsys)
    assert rc == 0, err
    report = json.loads(out)
    assert report["tables"] == counts and counts["process_instances"] > 0
    assert report["next_ids"]["process_instances"] == max_pi + 1
    assert _listings(ws, SKYDECK_STATE_URL=pg_url) == before  # same read model
    assert _listings(ws) == before  # SQLite unchanged

    # the daemon continues on PostgreSQL: a third downlink, ids after the copied ones
    make_delivery(ws, "251125003", **FAST)
    res = run_engine("-w", ws.root, "watch", "--once", env=engine_env(SKYDECK_STATE_URL=pg_url))
    assert res.returncode == 0, res.stderr
    from engine.core.dburl import parse_state_url

    with StateDB(parse_state_url(pg_url, None)) as db:
        assert {s.dlid: s.status for s in db.streams()} == {
            "251125001": "SUCCESS",
            "251125002": "SUCCESS",
            "251125003": "SUCCESS",
        }
        new = db.instances(db.latest_stream("251125003").id)
        assert new and min(p.id for p in new) > max_pi
        assert [d.dlid for d in db.downlinks()] == ["251125001", "251125002", "251125003"]
        seqs = [r[0] for r in db.q("SELECT seq FROM downlinks ORDER BY seq")]
        assert seqs == [1, 2, 3]


def test_copy_prints_counts_and_what_to_do_next(ws, pg_url, capsys):
    rc, out, err = cli(ws, "db", "copy", "--to", pg_url, capsys=capsys)
    assert rc == 0 and err == ""
    assert "counts verified" in out and "set [state] url" in out
    assert any(line.split() == ["downlinks", "2"] for line in out.splitlines())


def test_target_not_empty_is_refused_and_left_alone(ws, pg_url, capsys):
    assert cli(ws, "db", "copy", "--to", pg_url, capsys=capsys)[0] == 0
    rc, out, err = cli(ws, "db", "copy", "--to", pg_url, capsys=capsys)
    assert rc == 2 and out == "" and len(err.splitlines()) == 1
    assert "not empty" in err and "2 downlinks" in err
    assert _rows(pg_url, "downlinks") == 2


def test_target_with_foreign_tables_is_refused(ws, pg_url, capsys):
    from engine.core.dburl import parse_state_url
    from engine.store.connection import open_backend

    backend = open_backend(parse_state_url(pg_url, None))
    conn = backend.connect()
    conn.execute("CREATE TABLE payroll (id INTEGER)")
    conn.close()
    rc, _, err = cli(ws, "db", "copy", "--to", pg_url, capsys=capsys)
    assert rc == 2 and "not skydeck's (payroll)" in err and len(err.splitlines()) == 1


def test_schema_made_by_init_state_counts_as_empty(ws, pg_url, capsys):
    from engine.core.dburl import parse_state_url

    StateDB(parse_state_url(pg_url, None)).close()  # what `init --state URL` leaves
    rc, _, err = cli(ws, "db", "copy", "--to", pg_url, capsys=capsys)
    assert rc == 0, err
    assert _rows(pg_url, "meta") == 1


def test_live_daemon_heartbeat_refuses(ws, pg_url, capsys):
    write_heartbeat(ws, Owner.me(), 10.0)  # this process: alive
    rc, out, err = cli(ws, "db", "copy", "--to", pg_url, capsys=capsys)
    assert rc == 3 and out == "" and "a daemon is live" in err, err
    assert not _has_schema(pg_url)  # refused before anything was written


def _has_schema(url: str) -> bool:
    from engine.core.dburl import parse_state_url
    from engine.store.connection import open_backend

    backend = open_backend(parse_state_url(url, None))
    conn = backend.connect()
    try:
        return bool(backend.has_table(conn, "meta"))
    finally:
        conn.close()


def test_live_stream_owner_refuses_and_nothing_is_written(ws, pg_url, capsys):
    make_delivery(ws, "251125003", **FAST)
    assert cli_proc(ws, "watch", "--once").returncode == 0
    with StateDB(ws.state_db) as db, db.tx() as c:  # a runner (this process) holds it
        me = Owner.me()
        c.execute(
            "UPDATE streams SET status='RUNNING', owner_pid=?, owner_host=?, owner_start=? "
            "WHERE dlid='251125003'",
            (me.pid, me.host, me.start),
        )
    rc, out, err = cli(ws, "db", "copy", "--to", pg_url, capsys=capsys)
    assert rc == 3 and "stream 251125003 is held by a live process" in err, err
    assert not _has_schema(pg_url)


def test_state_already_in_postgresql_is_refused(ws, pg_url, capsys, monkeypatch):
    monkeypatch.setenv("SKYDECK_STATE_URL", pg_url)
    rc, _, err = cli(ws, "db", "copy", "--to", pg_url, capsys=capsys)
    assert rc == 2 and "already in PostgreSQL" in err


def test_a_copy_that_does_not_verify_keeps_nothing(ws, pg_url, capsys, monkeypatch):
    """A row lost on the way (the writer dropping the last one): the counts differ, the
    transaction rolls back, exit 1; the target is empty and a second copy works."""
    from engine.store.postgres import PostgreSQL

    real = PostgreSQL.copy_rows

    def lossy(self, conn, table, columns, rows):  # type: ignore[no-untyped-def]
        kept = list(rows)
        return real(self, conn, table, columns, iter(kept[:-1] if table == "files" else kept))

    monkeypatch.setattr(PostgreSQL, "copy_rows", lossy)
    rc, out, err = cli(ws, "db", "copy", "--to", pg_url, capsys=capsys)
    assert rc == 1 and out == "" and "table files" in err and "nothing was kept" in err
    assert all(_rows(pg_url, t) == 0 for t in ("downlinks", "streams", "files", "events"))
    monkeypatch.undo()
    monkeypatch.delenv("SKYDECK_STATE_URL", raising=False)
    assert cli(ws, "db", "copy", "--to", pg_url, capsys=capsys)[0] == 0


def test_bad_target_urls_are_one_line(ws, pg_url, capsys):
    for url, why in (
        ("mysql://x/y", "must start with postgresql://"),
        (pg_url.replace("skydeck_t_", "nosuch_"), "cannot connect"),
    ):
        rc, out, err = cli(ws, "db", "copy", "--to", url, capsys=capsys)
        assert rc == 2 and out == "" and len(err.splitlines()) == 1 and why in err, err


def test_no_sqlite_state_is_refused(tmp_path, pg_url, capsys, monkeypatch):
    monkeypatch.delenv("SKYDECK_STATE_URL", raising=False)
    w = init_workspace(tmp_path / "ws")
    w.state_db.unlink(missing_ok=True)  # init_workspace lays out directories only
    rc, _, err = cli(w, "db", "copy", "--to", pg_url, capsys=capsys)
    assert rc == 2 and "no SQLite state database" in err
