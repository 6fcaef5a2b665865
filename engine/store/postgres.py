"""The PostgreSQL backend: the state database on a server that several hosts share.

Why: at a site the daemon, the runners and the operators' consoles run on different hosts
over a shared file system, and SQLite must not sit on a network file system. PostgreSQL is
the shared state there (as Pipeline-II's database was for HalfPipe's job-control daemons).
The store's SQL is written once (``db.py``, ``queries.py``, ``schema.py``, ``migrations.py``);
this class is the second implementation of ``engine.store.backend.Backend`` and, with
``sqlite.py``, the only module that imports a database driver (psycopg 3, the ``postgresql``
extra). Why psycopg and not SQLAlchemy Core: the queries already are one portable layer
behind one small interface; a second query layer on top would add an abstraction and a
dependency and change nothing the tests can see (docs/design.md, "State on PostgreSQL").

How the SQLite semantics are kept:

- qmark SQL (``?``) is rewritten once per statement text to psycopg's ``%s`` (``%`` escaped;
  quoted strings and ``--`` comments left alone), cached;
- the write lock: a write transaction takes one transaction-level advisory lock first
  (``pg_advisory_xact_lock``), so write transactions are serialized exactly as SQLite's
  ``BEGIN IMMEDIATE`` serializes them, and a claim's read-check-write stays exactly-once.
  READ COMMITTED: every statement after the lock sees every commit before it;
- the change probe (``data_version``): each table has a statement trigger that NOTIFYs
  ``skydeck_state``; a connection that asks LISTENs on first use and counts notifications;
  when none is waiting it makes one ``SELECT 1`` round trip and looks again (the server
  sends pending notifications before it answers), so a commit that returned before the
  probe is always seen (the console polls this every few hundred ms);
- rows: a tuple that also answers by column name and to ``dict()``, like ``sqlite3.Row``;
  Python booleans are sent as integers (the schema's flags are INTEGER, as in SQLite);
- before a migration, a copy of every table goes into a schema ``skydeck_backup_v<N>`` in
  the same database (DDL is transactional: a failed migration leaves none of it).

Credentials never leave this module in clear: ``where`` (what error lines name) is the URL
without its password (``engine.core.dburl``), and libpq's own ways (``~/.pgpass``,
``PGPASSWORD``, a service file, ``sslmode=...`` in the URL) work as with psql.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Dumper
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import RowMaker, tuple_row

from engine.core.dburl import StateURL
from engine.core.errors import BadInput
from engine.store.schema import TABLES

CHANNEL = "skydeck_state"
# the key of the advisory lock every write transaction takes (a constant: "skydeck write")
WRITE_LOCK_KEY = int.from_bytes(hashlib.sha256(b"skydeck write lock").digest()[:8], "big",
                                signed=True)
# libpq keepalives: a peer host that dies without closing its connection is noticed by the
# client within idle + interval * count = 30 s (docs/design.md, "State on PostgreSQL")
KEEPALIVES = {"keepalives": "1", "keepalives_idle": "15", "keepalives_interval": "5",
              "keepalives_count": "3"}


@functools.lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """qmark SQL as psycopg's pyformat: ``?`` -> ``%s``, ``%`` -> ``%%``, except inside
    quoted strings, quoted identifiers and ``--`` comments (where only ``%`` is doubled,
    since psycopg scans the whole text)."""
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # '' inside a string
                        j += 2
                        continue
                    break
                j += 1
            out.append(sql[i:j + 1].replace("%", "%%"))
            i = j + 1
        elif c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(sql[i:j].replace("%", "%%"))
            i = j
        elif c == "?":
            out.append("%s")
            i += 1
        elif c == "%":
            out.append("%%")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Row(tuple):  # type: ignore[type-arg]
    """A result row by position or by column name, and ``dict(row)``: as ``sqlite3.Row``."""

    _names: tuple[str, ...] = ()
    _index: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> tuple[str, ...]:
        return self._names


@functools.lru_cache(maxsize=256)
def _row_class(names: tuple[str, ...]) -> type[Row]:
    """One Row class per column list (a statement's result shape), made once."""
    return type("Row", (Row,), {"_names": names, "_index": {k: i for i, k in enumerate(names)}})


def _named_row(cursor: Any) -> RowMaker[Row]:
    desc = cursor.description
    if desc is None:
        return tuple_row(cursor)  # type: ignore[return-value]
    return _row_class(tuple(d.name for d in desc))  # type: ignore[return-value]


class _BoolAsInt(Dumper):
    """Python bool -> integer 0/1: the schema's flags are INTEGER columns (as in SQLite)."""

    oid = psycopg.postgres.types["int4"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


class Cursor:
    """A psycopg cursor that takes qmark SQL (what the store writes)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        self.raw.execute(to_pyformat(sql), tuple(args))
        return self

    def fetchone(self) -> Any:
        return self.raw.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self.raw.fetchall())

    def __iter__(self) -> Iterator[Any]:
        return iter(self.raw)

    @property
    def rowcount(self) -> int:
        return int(self.raw.rowcount)


class Connection:
    """One psycopg connection in autocommit mode, speaking the store's qmark SQL."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self.listening = False
        self.changes = 0

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        return Cursor(self.raw.cursor()).execute(sql, args)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Cursor:
        """One statement for many parameter rows (psycopg pipelines them), as sqlite3's."""
        cur = self.raw.cursor()
        cur.executemany(to_pyformat(sql), [tuple(r) for r in rows])
        return Cursor(cur)

    def cursor(self) -> Cursor:
        return Cursor(self.raw.cursor())

    def close(self) -> None:
        self.raw.close()


def _notify_ddl() -> list[str]:
    fn = (f"CREATE OR REPLACE FUNCTION skydeck_notify() RETURNS trigger LANGUAGE plpgsql AS "
          f"$$ BEGIN PERFORM pg_notify('{CHANNEL}', ''); RETURN NULL; END $$")
    out = [fn]
    for t in TABLES:
        out.append(f"DROP TRIGGER IF EXISTS {t}_notify ON {t}")
        out.append(f"CREATE TRIGGER {t}_notify AFTER INSERT OR UPDATE OR DELETE ON {t} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION skydeck_notify()")
    return out


class PostgreSQL:
    """The state database on a PostgreSQL server (``[state] url``)."""

    name = "postgresql"
    Error: type[Exception] = psycopg.Error
    ID_COLUMN = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    MAX_PARAMS = 10000  # the protocol allows 65535 bound parameters per statement
    EXTRA_DDL: tuple[str, ...] = tuple(_notify_ddl())

    def __init__(self, url: StateURL, timeout: float = 30.0) -> None:
        self.url = url
        self.where = url.redacted
        self.timeout = timeout

    def connect(self) -> Connection:
        params: dict[str, Any] = {**KEEPALIVES, "application_name": "skydeck",
                                  "connect_timeout": str(max(1, int(self.timeout)))}
        try:  # what the URL sets itself wins over these defaults
            given = conninfo_to_dict(self.url.conninfo)
        except psycopg.ProgrammingError as err:
            raise BadInput(f"malformed state URL: {self.url.scrub(err)}", self.where) from None
        params = {k: v for k, v in params.items() if k not in given}
        try:
            raw = psycopg.connect(self.url.conninfo, autocommit=True,
                                  row_factory=_named_row, **params)
        except psycopg.OperationalError as err:
            raise BadInput(f"cannot connect to the state database: {self.url.scrub(err)}",
                           self.where) from None
        raw.adapters.register_dumper(bool, _BoolAsInt)
        # a lock wait longer than the timeout is an error, not a hang (SQLite: busy_timeout)
        raw.execute(f"SET lock_timeout = {int(self.timeout * 1000)}")
        return Connection(raw)

    def begin_write(self, conn: Any) -> None:
        conn.raw.execute("BEGIN")
        try:
            conn.raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
        except BaseException:
            conn.raw.execute("ROLLBACK")
            raise

    def in_transaction(self, conn: Any) -> bool:
        return bool(conn.raw.info.transaction_status != pq.TransactionStatus.IDLE)

    def tuple_cursor(self, conn: Any) -> Any:
        return Cursor(conn.raw.cursor(row_factory=tuple_row))

    def insert(self, conn: Any, sql: str, args: Sequence[Any]) -> int:
        return int(conn.execute(sql + " RETURNING id", args).fetchone()[0])

    def data_version(self, conn: Any) -> int:
        if not conn.listening:
            conn.raw.execute(f"LISTEN {CHANNEL}")
            conn.listening = True
        seen = sum(1 for _ in conn.raw.notifies(timeout=0))
        if not seen:
            # A commit that returned before this call has signalled this connection's server
            # process, but under load that process may not have sent the notification yet.
            # It sends pending ones before answering any command, so one round trip makes
            # the probe exact, as SQLite's data_version is (psycopg keeps what arrives).
            conn.raw.execute("SELECT 1")
            seen = sum(1 for _ in conn.raw.notifies(timeout=0))
        conn.changes += seen
        return int(conn.changes)

    def has_table(self, conn: Any, table: str) -> bool:
        return conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = "
                            "current_schema() AND table_name = ?", (table,)).fetchone() is not None

    def columns(self, conn: Any, table: str) -> set[str]:
        return {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = ?", (table,))}

    def backup_name(self, version: int) -> str:
        return f"schema skydeck_backup_v{int(version)}"

    def backup(self, conn: Any, version: int) -> None:
        """Copy every table into schema ``skydeck_backup_v<version>``, in the caller's
        transaction (which holds the write lock): the copy is exactly what the migration
        then changes, and it is kept only if the migration commits."""
        schema = f"skydeck_backup_v{int(version)}"
        conn.raw.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.raw.execute(f"CREATE SCHEMA {schema}")
        for t in TABLES:
            conn.raw.execute(f"CREATE TABLE {schema}.{t} AS TABLE {t}")

    # ------------------------------------------------------------ db copy (engine/store/copy.py)

    def tables(self, conn: Any) -> set[str]:
        """Every table of the current schema (``db copy`` refuses a database that holds
        someone else's tables)."""
        return {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = "
            "current_schema() AND table_type = 'BASE TABLE'")}

    def copy_rows(self, conn: Any, table: str, columns: Sequence[str],
                  rows: Iterator[Sequence[Any]]) -> int:
        """Write ``rows`` into ``table`` with one ``COPY ... FROM STDIN`` (in the caller's
        transaction); returns how many were sent."""
        n = 0
        cols = ", ".join(columns)
        with conn.raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
                n += 1
        return n

    def set_identity(self, conn: Any, table: str, next_id: int) -> int:
        """Make ``table``'s identity column hand out ``next_id`` or more next (never an id
        already in the table); returns the next id it will hand out."""
        row = conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"GREATEST(COALESCE(MAX(id), 0) + 1, ?), false) FROM {table}",
            (int(next_id),)).fetchone()
        return int(row[0])
