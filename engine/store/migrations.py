"""Schema migrations: bring an older state database to ``SCHEMA_VERSION``, refuse a newer one.

Why: a workspace outlives the skydeck that created it; a new column must reach a database
that already exists, and a database written by a newer skydeck must not be misread by an
older one. The version lives in the ``meta`` table (key ``schema``).

How, on every open (``ensure_schema``):

- the version is read without a transaction: the current one (the common case) costs one
  query and takes no lock;
- a newer version is refused (``BadInput`` naming the file: exit 2 through the CLI);
- no ``meta`` table: a fresh database, created at the current version directly;
- an older version: under the write lock, the version is read again (a concurrent opener may
  have upgraded it already), a backup copy is made next to the file
  (``state.db.v1.bak``), then every step above that version runs, in order, and the new
  version is written, all in ONE transaction: a failing step leaves the database as it was.

Steps are SQL, written once for every backend (``ALTER TABLE ... ADD COLUMN`` is portable);
``STEPS[-1].version`` is ``SCHEMA_VERSION``. To change the schema: change ``schema.py``
(what a fresh database gets), append a step that makes an existing one equal to it, raise
``SCHEMA_VERSION``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.core.errors import BadInput, SkydeckError
from engine.store.backend import Backend
from engine.store.schema import SCHEMA_KEY, SCHEMA_VERSION, create_statements


@dataclass(frozen=True)
class Step:
    """What turns a database at ``version - 1`` into one at ``version``."""

    version: int
    why: str
    sql: tuple[str, ...]


STEPS: tuple[Step, ...] = (
    Step(
        2,
        "process instances record their launcher and the batch system's job id (Slurm)",
        (
            "ALTER TABLE process_instances ADD COLUMN job_id TEXT",
            "ALTER TABLE process_instances ADD COLUMN launcher TEXT NOT NULL DEFAULT 'local'",
        ),
    ),
    Step(
        3,
        "downlinks carry their registration order (SQLite's rowid has no portable twin)",
        (
            "ALTER TABLE downlinks ADD COLUMN seq BIGINT",
            # UPDATE ... FROM: SQLite 3.33+ and PostgreSQL
            "UPDATE downlinks SET seq = r.n FROM (SELECT dlid, ROW_NUMBER() OVER "
            "(ORDER BY registered, dlid) AS n FROM downlinks) r WHERE r.dlid = downlinks.dlid",
            "CREATE INDEX IF NOT EXISTS downlinks_seq ON downlinks(seq)",
        ),
    ),
    Step(
        4,
        "what was accepted is recorded by content (manifest digest, package MD5) with "
        "stat keys as a cache; a delivery's identity no longer rests on its times",
        (
            "ALTER TABLE deliveries ADD COLUMN manifest_sha256 TEXT",
            "ALTER TABLE deliveries ADD COLUMN manifest_key TEXT",
            "ALTER TABLE deliveries ADD COLUMN package_md5 TEXT",
            "ALTER TABLE deliveries ADD COLUMN package_key TEXT",
            "ALTER TABLE downlinks ADD COLUMN manifest_sha256 TEXT",
        ),
    ),
    Step(
        5,
        "queue time and run time kept apart: an instance records when it was handed to its "
        "launcher (submitted) besides when its job began to run (started); before, started "
        "was the submission, so that is what an older row's submitted gets",
        (
            "ALTER TABLE process_instances ADD COLUMN submitted DOUBLE PRECISION",
            "UPDATE process_instances SET submitted = started",
        ),
    ),
)

# Columns that a database labelled version 1 may lack: before versions were read, skydeck
# added them with ALTER TABLE on open. Added before the steps run, in the same transaction.
V1_LATE_COLUMNS = (("downlinks", "manifest_id", "TEXT"),)


def read_version(backend: Backend, conn: Any) -> int | None:
    """The schema version recorded in the database; None for a database with no tables."""
    if not backend.has_table(conn, "meta"):
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (SCHEMA_KEY,)).fetchone()
    if row is None:
        return None
    try:
        return int(row[0])
    except (TypeError, ValueError):
        raise BadInput(
            f"schema version {str(row[0])[:40]!r} is not a number", backend.where
        ) from None


def _refuse_newer(backend: Backend, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise BadInput(
            f"schema version {version} is newer than this skydeck "
            f"({SCHEMA_VERSION}); upgrade skydeck",
            backend.where,
        )


def ensure_schema(backend: Backend, conn: Any, steps: tuple[Step, ...] | None = None) -> int | None:
    """Make the database current (see the module docstring) with ``steps`` (default:
    ``STEPS``). Returns the version it had when opened, None when it was created here."""
    version = read_version(backend, conn)
    if version == SCHEMA_VERSION:
        return version
    if version is not None:
        _refuse_newer(backend, version)
    what = "create the schema" if version is None else f"upgrade the schema from version {version}"
    try:
        backend.begin_write(conn)
    except backend.Error as err:  # e.g. a read-only file or directory
        raise SkydeckError(f"cannot {what}: {err}", backend.where) from err
    try:
        version = read_version(backend, conn)  # again, under the lock
        if version is None:
            for sql in create_statements(backend.ID_COLUMN):
                conn.execute(sql)
            for sql in backend.EXTRA_DDL:
                conn.execute(sql)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
                (SCHEMA_KEY, str(SCHEMA_VERSION)),
            )
        elif version < SCHEMA_VERSION:
            backup = backend.backup_name(version)
            try:
                backend.backup(conn, version)
            except (OSError, backend.Error) as err:
                raise SkydeckError(
                    f"cannot copy the database to {backup} before upgrading "
                    f"its schema from version {version}, it is unchanged: {err}",
                    backend.where,
                ) from err
            try:
                _upgrade(backend, conn, version, STEPS if steps is None else steps)
            except backend.Error as err:
                raise SkydeckError(
                    f"upgrading the schema from version {version} to "
                    f"{SCHEMA_VERSION} failed, the database is unchanged "
                    f"(a copy: {backup}): {err}",
                    backend.where,
                ) from err
        else:
            _refuse_newer(backend, version)
        conn.execute("COMMIT")
    except BaseException:
        if backend.in_transaction(conn):
            conn.execute("ROLLBACK")
        raise
    return version


def _upgrade(backend: Backend, conn: Any, version: int, steps: tuple[Step, ...]) -> None:
    if version == 1:
        for table, column, decl in V1_LATE_COLUMNS:
            if column not in backend.columns(conn, table):
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    for step in steps:
        if step.version > version:
            for sql in step.sql:
                conn.execute(sql)
            version = step.version
    if version != SCHEMA_VERSION:
        raise RuntimeError(f"migrations end at version {version}, not {SCHEMA_VERSION}")
    conn.execute("UPDATE meta SET value = ? WHERE key = ?", (str(version), SCHEMA_KEY))
