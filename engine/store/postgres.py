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

What SQLite never meets, a server that goes away (a restart, a failover, a DBA's
``pg_terminate_backend``, a network cut), is handled here, where it enters: every statement
runs through ``Connection.run``, which notices a lost session, makes a new one with back-off
for as long as the caller's ``Patience`` allows (engine/store/outage.py), re-runs a read,
and turns a cut transaction into one error, ``StateUnavailable`` (exit 75), that says
whether a COMMIT was in doubt; the store decides which transactions are safe to re-run
(engine/store/db.py). Connecting to a server that is down is ``StateUnavailable`` too, not
bad input; only a server that refuses the URL for good (no such role or database, a wrong
password) is ``BadInput`` (exit 2).

Credentials never leave this module in clear: ``where`` (what error lines name) is the URL
without its password (``engine.core.dburl``), and libpq's own ways (``~/.pgpass``,
``PGPASSWORD``, a service file, ``sslmode=...`` in the URL) work as with psql.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.adapt import Dumper
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import RowMaker, tuple_row

from engine.core.dburl import StateURL
from engine.core.errors import BadInput, NoPermission, StateUnavailable
from engine.store.outage import UNREACHABLE, Backoff, Patience
from engine.store.schema import TABLES

CHANNEL = "skydeck_state"
# the key of the advisory lock every write transaction takes (a constant: "skydeck write")
WRITE_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"skydeck write lock").digest()[:8], "big", signed=True
)
# libpq keepalives: a peer host that dies without closing its connection is noticed by the
# client within idle + interval * count = 30 s (docs/design.md, "State on PostgreSQL")
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "15",
    "keepalives_interval": "5",
    "keepalives_count": "3",
}


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
            out.append(sql[i : j + 1].replace("%", "%%"))
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


_REREAD = frozenset({"SELECT", "BEGIN", "LISTEN", "SET", "SHOW"})  # safe to run again
# what a server says at connect time when it is there but not (yet) taking connections: a
# wait, not a wrong URL (libpq reports connect failures without their SQLSTATE)
_TRANSIENT_FATAL = (
    "starting up",
    "shutting down",
    "recovery",
    "not yet accepting",
    "not accepting connections",
    "too many clients",
    "slots are reserved",
    "administrator command",
    "another server process",
)
# SQLSTATEs of a connection that is gone: class 08 (connection exception), admin/crash
# shutdown and "cannot connect now" (57P01-57P03; 57014, a cancelled statement, is not)
_LOST_STATES = ("57P01", "57P02", "57P03")
# insufficient_privilege: the role may not do this (a site's read-only or operator role)
_NO_PRIVILEGE = "42501"


def _refused_for_good(text: str) -> bool:
    """Whether a connect error is the server refusing this URL (no such role or database,
    a wrong password) or libpq refusing an option value: a restart cannot fix those. Any
    other error (no answer, a server starting or shutting down, a message this does not
    know) counts as the server being unreachable: a wait is the safe side."""
    if "FATAL:" in text:
        return not any(t in text for t in _TRANSIENT_FATAL)
    return re.search(r"\binvalid\b.*\b(value|option)\b", text) is not None


def _verb(sql: str) -> str:
    """The statement's first word, upper case ("SELECT", "COMMIT", ...)."""
    word = sql.lstrip().split(None, 1)
    return word[0].upper() if word else ""


def _lost(err: BaseException, raw: Any) -> bool:
    """Whether ``err`` means the connection ``raw`` is gone (not a bad statement)."""
    if not isinstance(err, psycopg.Error):
        return False
    if raw is not None and (raw.closed or raw.broken):
        return True
    state = getattr(err, "sqlstate", None) or ""
    return state.startswith("08") or state in _LOST_STATES


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


class Cursor:
    """A cursor that takes qmark SQL (what the store writes) and survives a reconnection:
    each ``execute`` runs on the connection's current session (``Connection.run``)."""

    def __init__(self, conn: Connection, row_factory: Any = None, patient: bool = True) -> None:
        self.conn = conn
        self.row_factory = row_factory
        self.patient = patient  # False: never wait out the patience (Connection.execute)
        self.raw: Any = None

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor:
        query, params = to_pyformat(sql), tuple(args)

        def op(raw: Any) -> Any:
            cur = (
                raw.cursor()
                if self.row_factory is None
                else raw.cursor(row_factory=self.row_factory)
            )
            cur.execute(query, params)
            return cur

        self.raw = self.conn.run(sql, op, self.patient)
        return self

    def fetchone(self) -> Any:
        return None if self.raw is None else self.raw.fetchone()

    def fetchall(self) -> list[Any]:
        return [] if self.raw is None else list(self.raw.fetchall())

    def __iter__(self) -> Iterator[Any]:
        return iter(()) if self.raw is None else iter(self.raw)

    @property
    def rowcount(self) -> int:
        return 0 if self.raw is None else int(self.raw.rowcount)


class Connection:
    """One PostgreSQL session in autocommit mode, speaking the store's qmark SQL, that is
    re-made when the server drops it (a restart, a failover, ``pg_terminate_backend``).

    Every statement goes through ``run``, which is where a lost connection is noticed:

    - outside a transaction, a statement that only reads (``_REREAD``) runs again on a new
      session, once the server answers; how long that may take is the backend's
      ``Patience`` (engine/store/outage.py), after which ``StateUnavailable`` is raised;
    - inside a transaction the transaction is *cut*: ``StateUnavailable(cut=True)`` now and
      for every further statement of it, its ROLLBACK is a no-op (it died with the session),
      its COMMIT raises; the store re-runs the whole transaction where that is safe
      (engine/store/db.py). A connection lost *during* COMMIT is ``in_doubt``: it may
      have committed;
    - each new session runs the ``on_connect`` hooks first (the presence takes its session
      locks again), forgets its LISTEN and counts one change, so a change probe that
      missed notifications while it was away reports a change (``session`` tells a reader
      that state it cached may be stale).
    """

    def __init__(self, backend: PostgreSQL, raw: psycopg.Connection[Any]) -> None:
        self.backend = backend
        self.raw = raw
        self.listening = False
        self.changes = 0
        self.session = 0  # sessions re-made so far
        self.cut = False  # a transaction died with its session
        self.lost_at: float | None = None  # monotonic: when the session was found gone
        self.lost_error: str | None = None
        self.backoff = Backoff()
        self.hooks: list[Callable[[Callable[[str, Sequence[Any]], Any]], None]] = []

    # ------------------------------------------------------------------ statements

    def execute(self, sql: str, args: Sequence[Any] = (), patient: bool = True) -> Cursor:
        """``patient=False``: a lost session is tried once more at most (a question that
        may go unanswered, such as the remote judge's, never waits out the patience)."""
        return Cursor(self, patient=patient).execute(sql, args)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Cursor:
        """One statement for many parameter rows (psycopg pipelines them), as sqlite3's."""
        query, params = to_pyformat(sql), [tuple(r) for r in rows]

        def op(raw: Any) -> Any:
            cur = raw.cursor()
            cur.executemany(query, params)
            return cur

        out = Cursor(self)
        out.raw = self.run(sql, op)
        return out

    def cursor(self) -> Cursor:
        return Cursor(self)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.raw.close()

    def on_connect(self, hook: Callable[[Callable[[str, Sequence[Any]], Any]], None]) -> None:
        """Run ``hook(execute)`` now and on every new session, before anything else runs
        on it; ``execute(sql, args)`` runs qmark SQL on that session."""
        self.hooks.append(hook)
        self.run("SELECT", lambda raw: hook(_bare(raw)))

    def _refused(self, err: psycopg.Error, verb: str) -> NoPermission:
        """A statement the server's grants refuse this role: one line naming the role and
        what it may not do (exit 77), not a driver traceback. The transaction it was in is
        rolled back by its caller: nothing of it is kept."""
        role = self.raw.info.user if not self.raw.closed else "?"
        what = "read" if verb in ("SELECT", "LISTEN") else "change"
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        return NoPermission(
            f"PostgreSQL role {role!r} may not {what} the state database ({first}); "
            "the roles a site grants are in the README, 'PostgreSQL roles'",
            self.backend.where,
        )

    def run(self, sql: str, op: Callable[[Any], Any], patient: bool = True) -> Any:
        """``op(raw)`` for the statement ``sql`` on the current session (see the class
        docstring for what happens when the session is gone)."""
        verb = _verb(sql)
        if self.cut:
            if verb == "ROLLBACK":
                self.cut = False
                return None
            if verb == "COMMIT":
                self.cut = False
            raise self._unavailable("the transaction was cut", cut=True)
        attempts = 0
        while True:
            if self.lost_at is not None:
                self.revive(patient)
            in_tx = self.raw.info.transaction_status != pq.TransactionStatus.IDLE
            try:
                return op(self.raw)
            except psycopg.Error as err:
                if getattr(err, "sqlstate", None) == _NO_PRIVILEGE:
                    raise self._refused(err, verb) from None
                if not _lost(err, self.raw):
                    raise
                self._lose(err)
                if verb == "ROLLBACK":
                    return None  # the transaction is gone with its session
                if verb == "COMMIT":
                    raise self._unavailable(
                        "the connection was lost during COMMIT", cut=True, in_doubt=True
                    ) from None
                if in_tx:
                    self.cut = True
                    raise self._unavailable("the transaction was cut", cut=True) from None
                if verb not in _REREAD:
                    raise self._unavailable(
                        "the statement was cut", cut=True, in_doubt=True
                    ) from None
                attempts += 1
                if attempts >= 3:
                    raise self._unavailable("the connection keeps being lost") from None

    # ------------------------------------------------------------------ sessions

    def _lose(self, err: BaseException) -> None:
        if self.lost_at is None:
            self.lost_at = time.monotonic()
            self.backoff.reset()
        self.lost_error = _one_line(self.backend.url.scrub(err))

    def _unavailable(self, what: str, **kw: Any) -> StateUnavailable:
        why = f": {self.lost_error}" if self.lost_error else ""
        return StateUnavailable(
            f"state database connection lost ({what}){why}",
            self.backend.where,
            since=self.backend.patience.outage.since,
            **kw,
        )

    def revive(self, patient: bool = True) -> None:
        """Make a new session for a lost one, retrying with back-off for as long as the
        backend's patience allows this call (``patient=False``: one try, if the back-off
        allows); ``StateUnavailable`` when it cannot."""
        patience = self.backend.patience
        deadline = time.monotonic() + (patience.wait_s if patient else 0.0)
        last = False  # the try at the deadline, whatever the back-off says
        while self.lost_at is not None:
            if last or self.backoff.due(time.monotonic()):
                try:
                    self._reconnect()
                    return
                except StateUnavailable as err:
                    self.lost_error = err.message
                    patience.outage.down(err.message)
                    self.backoff.failed(time.monotonic())
            now = time.monotonic()
            if patience.stopped() or now >= deadline:
                raise StateUnavailable(
                    f"{UNREACHABLE}{self.lost_error}",
                    self.backend.where,
                    since=patience.outage.since,
                )
            wake = min(self.backoff.next_at, deadline)
            last = wake >= deadline
            patience.sleep(wake - now)

    def _reconnect(self) -> None:
        raw = self.backend.open_raw(strict=False)
        try:
            for hook in self.hooks:
                hook(_bare(raw))
        except psycopg.Error as err:
            with contextlib.suppress(Exception):
                raw.close()
            raise StateUnavailable(
                _one_line(self.backend.url.scrub(err)), self.backend.where
            ) from None
        old, self.raw = self.raw, raw
        with contextlib.suppress(Exception):
            old.close()
        self.session += 1
        self.listening = False
        self.changes += 1  # notifications were missed meanwhile: a change for the probe
        error, self.lost_at, self.lost_error = self.lost_error, None, None
        self.backoff.reset()
        self.backend.patience.outage.up(error)


def _bare(raw: Any) -> Callable[[str, Sequence[Any]], Any]:
    """qmark SQL run directly on the session ``raw`` (for ``on_connect`` hooks)."""

    def execute(sql: str, args: Sequence[Any] = ()) -> Any:
        return raw.execute(to_pyformat(sql), tuple(args))

    return execute


def _notify_ddl() -> list[str]:
    fn = (
        f"CREATE OR REPLACE FUNCTION skydeck_notify() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_notify('{CHANNEL}', ''); RETURN NULL; END $$"
    )
    out = [fn]
    for t in TABLES:
        out.append(f"DROP TRIGGER IF EXISTS {t}_notify ON {t}")
        out.append(
            f"CREATE TRIGGER {t}_notify AFTER INSERT OR UPDATE OR DELETE ON {t} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION skydeck_notify()"
        )
    return out


class PostgreSQL:
    """The state database on a PostgreSQL server (``[state] url``)."""

    name = "postgresql"
    Error: type[Exception] = psycopg.Error
    ID_COLUMN = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    MAX_PARAMS = 10000  # the protocol allows 65535 bound parameters per statement
    EXTRA_DDL: tuple[str, ...] = tuple(_notify_ddl())

    def __init__(
        self, url: StateURL, timeout: float = 30.0, patience: Patience | None = None
    ) -> None:
        """``patience``: how long a call waits for an unreachable server (default: the
        URL's ``wait_s``, ``[state] wait_s``)."""
        self.url = url
        self.where = url.redacted
        self.timeout = timeout
        self.patience = patience or Patience(url.wait_s)

    def open_raw(self, strict: bool = True) -> psycopg.Connection[Any]:
        """One attempt at a new session. ``StateUnavailable`` when the server cannot be
        reached or is not taking connections (down, starting, shutting down, full);
        with ``strict`` (a first connection) ``BadInput`` when it refused this URL for good
        (no such role or database, a wrong password): a restart cannot fix that."""
        params: dict[str, Any] = {
            **KEEPALIVES,
            "application_name": "skydeck",
            "connect_timeout": str(max(1, int(self.timeout))),
        }
        try:  # what the URL sets itself wins over these defaults
            given = conninfo_to_dict(self.url.conninfo)
        except psycopg.ProgrammingError as err:
            raise BadInput(f"malformed state URL: {self.url.scrub(err)}", self.where) from None
        params = {k: v for k, v in params.items() if k not in given}
        try:
            raw = psycopg.connect(
                self.url.conninfo, autocommit=True, row_factory=_named_row, **params
            )
        except psycopg.OperationalError as err:
            text = _one_line(self.url.scrub(err))
            if strict and _refused_for_good(text):
                raise BadInput(
                    f"cannot connect to the state database: {text}", self.where
                ) from None
            raise StateUnavailable(f"cannot connect: {text}", self.where) from None
        try:
            raw.adapters.register_dumper(bool, _BoolAsInt)
            # a lock wait longer than the timeout is an error, not a hang (SQLite: busy_timeout)
            raw.execute(f"SET lock_timeout = {int(self.timeout * 1000)}")
        except psycopg.Error as err:
            with contextlib.suppress(Exception):
                raw.close()
            raise StateUnavailable(
                f"cannot connect: {_one_line(self.url.scrub(err))}", self.where
            ) from None
        return raw

    def connect(self) -> Connection:
        """A new connection; an unreachable server is waited for as ``patience`` allows
        (with back-off, the outage reported once), then ``StateUnavailable``."""
        deadline = time.monotonic() + self.patience.wait_s
        backoff = Backoff()
        while True:
            try:
                raw = self.open_raw()
            except StateUnavailable as err:
                self.patience.outage.down(err.message)
                backoff.failed(time.monotonic())
                now = time.monotonic()
                if self.patience.stopped() or now >= deadline:
                    raise StateUnavailable(
                        f"{UNREACHABLE}{err.message}", self.where, since=self.patience.outage.since
                    ) from None
                self.patience.sleep(min(backoff.next_at, deadline) - now)
                continue
            self.patience.outage.up()
            return Connection(self, raw)

    def begin_write(self, conn: Any) -> None:
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK_KEY,))
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def in_transaction(self, conn: Any) -> bool:
        status = conn.raw.info.transaction_status
        return bool(
            conn.cut
            or status
            in (
                pq.TransactionStatus.INTRANS,
                pq.TransactionStatus.INERROR,
                pq.TransactionStatus.ACTIVE,
            )
        )

    def session(self, conn: Any) -> int:
        return int(conn.session)

    def tuple_cursor(self, conn: Any) -> Any:
        return Cursor(conn, tuple_row)

    def insert(self, conn: Any, sql: str, args: Sequence[Any]) -> int:
        return int(conn.execute(sql + " RETURNING id", args).fetchone()[0])

    def data_version(self, conn: Any) -> int:
        def probe(raw: Any) -> int:
            if not conn.listening:
                raw.execute(f"LISTEN {CHANNEL}")
                conn.listening = True
            seen = sum(1 for _ in raw.notifies(timeout=0))
            if not seen:
                # A commit that returned before this call has signalled this connection's
                # server process, but under load that process may not have sent the
                # notification yet. It sends pending ones before answering any command, so
                # one round trip makes the probe exact, as SQLite's data_version is.
                raw.execute("SELECT 1")
                seen = sum(1 for _ in raw.notifies(timeout=0))
            return seen

        # a lost session is re-made (LISTEN again, one change counted for what was missed)
        seen = conn.run("SELECT", probe)  # (first: a new session counts one change itself)
        conn.changes += seen
        return int(conn.changes)

    def has_table(self, conn: Any, table: str) -> bool:
        return (
            # the catalog, not information_schema: that lists only the tables this role
            # was granted something on, and a role granted nothing must not think the
            # database empty (and try to create it)
            conn.execute(
                "SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                "AND c.relname = ? AND c.relkind IN ('r', 'p')",
                (table,),
            ).fetchone()
            is not None
        )

    def columns(self, conn: Any, table: str) -> set[str]:
        return {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = ?",
                (table,),
            )
        }

    def backup_name(self, version: int) -> str:
        return f"schema skydeck_backup_v{int(version)}"

    def backup(self, conn: Any, version: int) -> None:
        """Copy every table into schema ``skydeck_backup_v<version>``, in the caller's
        transaction (which holds the write lock): the copy is exactly what the migration
        then changes, and it is kept only if the migration commits."""
        schema = f"skydeck_backup_v{int(version)}"
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
        for t in TABLES:
            conn.execute(f"CREATE TABLE {schema}.{t} AS TABLE {t}")

    # ------------------------------------------------------------ db copy (engine/store/copy.py)

    def tables(self, conn: Any) -> set[str]:
        """Every table of the current schema (``db copy`` refuses a database that holds
        someone else's tables)."""
        return {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                "current_schema() AND table_type = 'BASE TABLE'"
            )
        }

    def copy_rows(
        self, conn: Any, table: str, columns: Sequence[str], rows: Iterator[Sequence[Any]]
    ) -> int:
        """Write ``rows`` into ``table`` with one ``COPY ... FROM STDIN`` (in the caller's
        transaction); returns how many were sent."""
        cols = ", ".join(columns)

        def op(raw: Any) -> int:
            n = 0
            with raw.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)
                    n += 1
            return n

        return int(conn.run("COPY", op))

    def set_identity(self, conn: Any, table: str, next_id: int) -> int:
        """Make ``table``'s identity column hand out ``next_id`` or more next (never an id
        already in the table); returns the next id it will hand out."""
        row = conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
            f"GREATEST(COALESCE(MAX(id), 0) + 1, ?), false) FROM {table}",
            (int(next_id),),
        ).fetchone()
        return int(row[0])
