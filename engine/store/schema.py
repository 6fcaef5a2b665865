"""The schema of the state database at its current version, and that version.

Why a module of its own: a fresh database is created from here directly at
``SCHEMA_VERSION``; an older one is brought here by the steps in ``migrations.py``. Both must
arrive at the same tables, so the DDL below is the truth and every migration step ends with
its version written to ``meta`` (key ``schema``).

Portable DDL, written once for every backend: ``DOUBLE PRECISION`` for times (PostgreSQL's
``REAL`` is 4 bytes; SQLite stores both as 8-byte floats), ``BIGINT`` for byte counts, and
``$ID`` where an auto-increment primary key goes (each backend's ``ID_COLUMN``). Databases
created before version 2 declared ``REAL`` and ``INTEGER``; SQLite gives those the same
storage, so a migrated database and a fresh one hold the same values.
"""

from __future__ import annotations

import re

SCHEMA_VERSION = 5
SCHEMA_KEY = "schema"  # meta key holding the version

_TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS deliveries (
    name        TEXT PRIMARY KEY,        -- fcopy:<file stem> or level0:<dir name>
    kind        TEXT NOT NULL,           -- fcopy | level0
    dlid        TEXT,                    -- NULL when the name is no valid downlink id
    status      TEXT NOT NULL,           -- CLAIMED | PENDING | ACCEPTED | REJECTED
    reason      TEXT,
    path        TEXT NOT NULL,           -- where it lies now (rejected/ after a rejection)
    owner_pid   INTEGER, owner_host TEXT, owner_start DOUBLE PRECISION,
    seen        DOUBLE PRECISION NOT NULL,
    done        DOUBLE PRECISION,
    -- what was accepted, by content (engine/intake/identity.py); NULL until accepted
    manifest_sha256 TEXT,                -- its manifest's entries, canonical SHA-256
    manifest_key    TEXT,                -- stat key of that manifest (a cache; NULL: unsettled)
    package_md5     TEXT,                -- fcopy: the tar's MD5 as the manifest states it, verified
    package_key     TEXT                 -- fcopy: stat key of that tar (a cache; NULL: unsettled)
)""",
    """CREATE TABLE IF NOT EXISTS downlinks (
    dlid        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    level0      TEXT NOT NULL,           -- directory holding the sources and RetDefs
    chunks      INTEGER NOT NULL,
    gensteps    INTEGER NOT NULL DEFAULT 0,
    scene       TEXT,
    delivered   DOUBLE PRECISION NOT NULL,  -- delivery complete (manifest seen and verified)
    registered  DOUBLE PRECISION NOT NULL,
    manifest_id TEXT,                    -- stat key of its MANIFEST.md5 (a cache; NULL: unsettled)
    seq         BIGINT,                  -- registration order (1, 2, ...): "new since"
    manifest_sha256 TEXT                 -- its MANIFEST.md5's entries as registered (SHA-256)
)""",
    "CREATE INDEX IF NOT EXISTS downlinks_seq ON downlinks(seq)",
    """CREATE TABLE IF NOT EXISTS streams (
    id          $ID,
    task        TEXT NOT NULL,
    dlid        TEXT NOT NULL REFERENCES downlinks(dlid),
    execution   INTEGER NOT NULL,
    is_latest   INTEGER NOT NULL DEFAULT 1,
    status      TEXT NOT NULL,
    vars        TEXT NOT NULL DEFAULT '{}',
    note        TEXT,
    owner_pid   INTEGER, owner_host TEXT, owner_start DOUBLE PRECISION,
    created     DOUBLE PRECISION NOT NULL, started DOUBLE PRECISION, ended DOUBLE PRECISION,
    UNIQUE (task, dlid, execution)
)""",
    """CREATE TABLE IF NOT EXISTS process_instances (
    id          $ID,
    stream_id   INTEGER NOT NULL REFERENCES streams(id),
    process     TEXT NOT NULL,
    key         TEXT NOT NULL DEFAULT '',   -- substream: chunk %05d, run start (decimal), ''
    execution   INTEGER NOT NULL,
    is_latest   INTEGER NOT NULL DEFAULT 1,
    status      TEXT NOT NULL,
    auto_retry  INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL DEFAULT 0,
    host TEXT, pid INTEGER, pid_start DOUBLE PRECISION,
    created DOUBLE PRECISION NOT NULL, started DOUBLE PRECISION, ended DOUBLE PRECISION,
    exit_code   INTEGER,
    log_path    TEXT,
    note        TEXT,
    job_id      TEXT,                       -- the batch system's job id; NULL for a local job
    launcher    TEXT NOT NULL DEFAULT 'local',
    -- handed to the launcher; ``started`` is when the job began to run (a batch job waits
    -- in its queue between the two): queue time = started - submitted, run time = ended -
    -- started
    submitted   DOUBLE PRECISION
)""",
    "CREATE INDEX IF NOT EXISTS pi_stream ON process_instances(stream_id, is_latest)",
    """CREATE TABLE IF NOT EXISTS files (
    path        TEXT PRIMARY KEY,
    dlid        TEXT,
    producer    TEXT NOT NULL,           -- process name
    pi_id       INTEGER,                 -- producing process instance
    size        BIGINT NOT NULL,
    md5         TEXT,
    created     DOUBLE PRECISION NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS files_dlid ON files(dlid)",
    """CREATE TABLE IF NOT EXISTS events (
    id $ID, t DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL,
    dlid TEXT, detail TEXT NOT NULL DEFAULT '{}'
)""",
)


def create_statements(id_column: str) -> list[str]:
    """The DDL of a fresh database at ``SCHEMA_VERSION`` for a backend whose auto-increment
    primary key is declared as ``id_column``."""
    return [sql.replace("$ID", id_column) for sql in _TABLES]


# The tables above, in their order, which is foreign-key order (a row's parent table comes
# first): what the PostgreSQL backend puts triggers on and backs up, and the order `db copy`
# copies in; ID_TABLES are those keyed by an auto-increment ``$ID``.
_CREATED = [
    (m.group(1), sql)
    for sql in _TABLES
    if (m := re.match(r"CREATE TABLE IF NOT EXISTS (\w+)", sql))
]
TABLES = tuple(name for name, _ in _CREATED)
ID_TABLES = tuple(name for name, sql in _CREATED if "$ID" in sql)
