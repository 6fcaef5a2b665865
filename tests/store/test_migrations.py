"""Schema versions and migrations of the state database, on real databases.

The main fixture is a workspace written by the code of main before the store had
migrations (schema 1; ``data/README.md`` says how it was made): it must open through the
normal API and CLI, keep its downlinks, streams and files, leave a backup of the old file,
and be at the current schema afterwards. A newer database is refused with one line and
exit 2; a migration step that fails leaves the database as it was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from engine.cli.main import main as cli_main
from engine.core.errors import SkydeckError
from engine.core.workspace import Workspace, init_workspace
from engine.store import SCHEMA_VERSION, STEPS, StateDB, backup_path, init_state, migrations
from engine.store.migrations import Step, ensure_schema
from engine.store.sqlite import SQLite

REPO = Path(__file__).resolve().parents[2]
V1_TAR = Path(__file__).parent / "data" / "workspace-v1.tar.gz"


def _unpack(dest: Path) -> Path:
    dest.mkdir(parents=True)
    with tarfile.open(V1_TAR) as tar:
        tar.extractall(dest, filter="data")
    return dest


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    """The schema-1 workspace, unpacked (nothing has opened it with this code yet)."""
    return _unpack(tmp_path / "ws")


def _engine(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "engine", "-w", str(ws), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _dump(db: Path) -> list[str]:
    """Every table's schema and rows as SQL text (what "unchanged" means for a database)."""
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _version(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0])
    finally:
        conn.close()


def _columns(db: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(db)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in sorted(tables)}
    finally:
        conn.close()


def _times(pi: dict) -> dict:
    """`streams --json`'s run and queue time of a v1 instance (started was its submission)."""
    started, ended = pi["started"], pi["ended"]
    if started is None:
        return {"run_s": None, "queue_s": None}
    run = round(max(0.0, ended - started), 3) if ended is not None else None
    return {"run_s": run, "queue_s": 0.0}


def test_the_fixture_is_what_main_wrote(v1: Path) -> None:
    expected = json.loads((v1 / "expected-v1.json").read_text())
    assert expected["schema"] == _version(v1 / "state.db") == 1
    assert "job_id" not in _columns(v1 / "state.db")["process_instances"]


def test_a_v1_workspace_upgrades_and_keeps_its_data(v1: Path, tmp_path: Path) -> None:
    expected = json.loads((v1 / "expected-v1.json").read_text())
    db_path = Workspace.open(v1).state_db
    before = _dump(db_path)

    downlinks = _engine(v1, "downlinks", "--json")  # the first opener upgrades
    assert downlinks.returncode == 0, downlinks.stderr
    # every downlink as it was, plus schema 4's content digest of its level-0 manifest: not
    # recorded then (a scan adopts it while the manifest is the file that registered it),
    # and its stream's note (what the listing shows since)
    notes = {s["stream"]["dlid"]: s["stream"]["note"] for s in expected["streams"]}
    assert json.loads(downlinks.stdout) == expected["downlinks"] | {
        "downlinks": [
            d | {"manifest_sha256": None, "note": notes.get(d["dlid"])}
            for d in expected["downlinks"]["downlinks"]
        ]
    }
    assert [d["dlid"] for d in expected["downlinks"]["downlinks"]] == ["251120001", "251120002"]

    streams = _engine(v1, "streams", "--all", "--json")
    assert streams.returncode == 0, streams.stderr
    got = json.loads(streams.stdout)
    assert [(v["stream"]["dlid"], v["stream"]["status"]) for v in got] == [
        ("251120001", "SUCCESS"),
        ("251120002", "WAITING"),
    ]
    assert len(got) == len(expected["streams"])
    for new, old in zip(got, expected["streams"], strict=True):
        assert new["stream"] == old["stream"]
        # every instance as it was (the retired cleanup of 251120002 too), plus the two
        # columns of schema 2 at their values for a job run by the local launcher, and
        # schema 5's submission time: what started meant before (queue time 0)
        assert new["instances"] == [
            pi | {"job_id": None, "launcher": "local", "submitted": pi["started"]} | _times(pi)
            for pi in old["instances"]
        ]

    with StateDB(db_path) as db:
        assert [dataclasses.asdict(f) for f in db.files()] == expected["files"]
        assert db.opened_version == SCHEMA_VERSION  # already upgraded by `downlinks`
        retired = db.instances(2, latest_only=False)
        assert [(p.process, p.is_latest, p.launcher, p.job_id) for p in retired][-1] == (
            "cleanup",
            False,
            "local",
            None,
        )
        # the console's read model over the upgraded database
        facts = {f.dlid: f for f in db.downlink_facts(0, 0, 0.0)}
        assert facts["251120001"].status == "SUCCESS" and facts["251120001"].chunks_done == 2
        assert facts["251120002"].status == "WAITING"
        assert facts["251120001"].bytes == sum(
            f["size"] for f in expected["files"] if f["dlid"] == "251120001"
        )

    assert _version(db_path) == SCHEMA_VERSION == 5
    bak = backup_path(db_path, 1)
    assert bak == v1 / "state.db.v1.bak" and bak.is_file()
    assert _dump(bak) == before  # the backup is the v1 database
    assert _version(bak) == 1
    assert not Path(f"{bak}-wal").exists()  # one self-contained file

    # upgraded like a fresh database is created: same tables, same columns, same order
    fresh = tmp_path / "fresh" / "state.db"
    init_state(fresh)
    assert _columns(db_path) == _columns(fresh)
    assert not backup_path(fresh, 1).exists()


def test_an_upgraded_database_opens_without_another_upgrade(v1: Path) -> None:
    db_path = v1 / "state.db"
    with StateDB(db_path) as db:
        assert db.opened_version == 1
    bak = backup_path(db_path, 1)
    stamp = bak.stat().st_mtime_ns
    with StateDB(db_path) as db:
        assert db.opened_version == SCHEMA_VERSION
    assert bak.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in v1.glob("state.db*bak*")) == ["state.db.v1.bak"]


def test_concurrent_openers_upgrade_once(v1: Path) -> None:
    """Four processes open the v1 database at once: one upgrades under the write lock, the
    others wait and find it current; nobody fails, no step runs twice."""
    code = (
        "import sys; from engine.store import StateDB\n"
        "with StateDB(sys.argv[1]) as db: print(db.opened_version)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(v1 / "state.db")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e for _, e in outs]
    assert sorted(o.strip() for o, _ in outs).count("1") == 1  # exactly one saw version 1
    assert _version(v1 / "state.db") == SCHEMA_VERSION
    assert _columns(v1 / "state.db")["process_instances"][-3:] == [
        "job_id",
        "launcher",
        "submitted",
    ]


def test_a_newer_database_is_refused_with_one_line(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    init_state(ws.state_db)
    conn = sqlite3.connect(ws.state_db)
    with conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    conn.close()
    before = ws.state_db.read_bytes()
    for args in (["downlinks"], ["streams", "--json"], ["run", "251120001"]):
        r = _engine(ws.root, *args)
        assert r.returncode == 2, r
        assert r.stderr == (
            f"skydeck-engine: {ws.state_db}: schema version 99 is newer than "
            f"this skydeck ({SCHEMA_VERSION}); upgrade skydeck\n"
        )
        assert r.stdout == ""
    assert ws.state_db.read_bytes() == before
    assert _version(ws.state_db) == 99
    assert not list(ws.root.glob("state.db*.bak"))


def test_a_file_that_is_no_database_is_one_line(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    ws.state_db.write_bytes(b"not a database, just text that is long enough " * 40)
    r = _engine(ws.root, "downlinks")
    assert r.returncode == 2
    assert r.stderr.startswith(f"skydeck-engine: {ws.state_db}: not a skydeck state database")
    assert r.stderr.count("\n") == 1


def _failing_steps() -> tuple[Step, ...]:
    """The real step 2 followed by a statement that fails: the first one must not stay."""
    return (
        Step(
            2,
            "job_id, launcher, then a failure",
            (*STEPS[0].sql, "ALTER TABLE no_such_table ADD COLUMN x TEXT"),
        ),
    )


def test_a_failed_migration_leaves_the_database_unchanged(v1: Path) -> None:
    db_path = v1 / "state.db"
    before_bytes, before = db_path.read_bytes(), _dump(db_path)
    backend = SQLite(db_path)
    conn = backend.connect()
    try:
        with pytest.raises(SkydeckError) as err:
            ensure_schema(backend, conn, _failing_steps())
        # one line naming the file and both versions; the connection is usable again
        assert str(err.value).startswith(
            f"{db_path}: upgrading the schema from version 1 to "
            f"{SCHEMA_VERSION} failed, the database is unchanged"
        )
        assert "no such table: no_such_table" in str(err.value)
        assert not conn.in_transaction
    finally:
        conn.close()
    assert _dump(db_path) == before
    assert db_path.read_bytes() == before_bytes
    assert "job_id" not in _columns(db_path)["process_instances"]
    assert _version(db_path) == 1


def test_a_failed_migration_through_the_cli(v1: Path, monkeypatch, capsys) -> None:
    """The same failure as the operator meets it: one line, exit 1, nothing changed; with
    the real steps the next run upgrades."""
    before = _dump(v1 / "state.db")
    monkeypatch.setattr(migrations, "STEPS", _failing_steps())
    assert cli_main(["-w", str(v1), "downlinks"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the database is unchanged" in err
    assert _dump(v1 / "state.db") == before
    monkeypatch.undo()
    assert cli_main(["-w", str(v1), "downlinks"]) == 0
    assert "251120002" in capsys.readouterr().out
    assert _version(v1 / "state.db") == SCHEMA_VERSION


def test_a_fresh_database_is_created_at_the_current_version(tmp_path: Path) -> None:
    r = _engine(tmp_path / "ws", "init")
    assert r.returncode == 0, r.stderr
    db_path = tmp_path / "ws" / "state.db"
    assert _version(db_path) == SCHEMA_VERSION
    assert not list((tmp_path / "ws").glob("*.bak"))
    with StateDB(db_path) as db:
        assert db.opened_version == SCHEMA_VERSION


def test_steps_are_ordered_and_end_at_the_current_version() -> None:
    versions = [s.version for s in STEPS]
    assert versions == sorted(set(versions)) and versions[0] == 2
    assert versions[-1] == SCHEMA_VERSION


def test_a_database_labelled_1_without_the_late_column_is_repaired(v1: Path) -> None:
    """Databases from before manifest_id existed were labelled 1 too; the upgrade adds it."""
    db_path = v1 / "state.db"
    conn = sqlite3.connect(db_path)
    conn.execute("ALTER TABLE downlinks DROP COLUMN manifest_id")
    conn.commit()
    conn.close()
    with StateDB(db_path) as db:
        assert [d.manifest_id for d in db.downlinks()] == [None, None]
        assert [d.dlid for d in db.downlinks()] == ["251120001", "251120002"]
    assert "manifest_id" in _columns(db_path)["downlinks"]


def test_a_backup_that_cannot_be_written_stops_the_upgrade(v1: Path) -> None:
    """No copy, no upgrade: a directory where the backup goes makes the copy fail; one line,
    the database unchanged."""
    db_path = v1 / "state.db"
    before = _dump(db_path)
    backup_path(db_path, 1).mkdir()  # os.replace onto a directory fails
    r = _engine(v1, "downlinks")
    assert r.returncode == 1
    assert r.stderr.startswith(
        f"skydeck-engine: {db_path}: cannot copy the database to "
        "state.db.v1.bak before upgrading its schema from version 1"
    )
    assert r.stderr.count("\n") == 1
    assert _dump(db_path) == before
    assert not list(v1.glob(".state.db.v1.bak.tmp-*"))
