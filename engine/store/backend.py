"""The seam between the store's SQL and a database engine: what a backend must provide.

Why this exists: the state database is SQLite today (one file in the workspace, the
embedded default) and will be PostgreSQL for sites that run daemons, runners and consoles
on several hosts. The queries, the schema and the migrations are written once, in portable
SQL, in ``db.py``, ``queries.py``, ``schema.py`` and ``migrations.py``; everything that
differs between engines is behind this interface, implemented once per engine:

- connecting, with the engine's settings (SQLite: busy timeout, WAL, foreign keys);
- taking the write lock up front (SQLite ``BEGIN IMMEDIATE``; PostgreSQL would take an
  advisory lock or use SERIALIZABLE);
- the change counter a poller reads (SQLite ``PRAGMA data_version``);
- the catalogue (does a table exist, which columns it has), the id of an inserted row,
  the DDL of an auto-increment key, and the backup copy made before a migration.

A server can go away under a connection (PostgreSQL; never a SQLite file): the backend
re-makes the session itself and raises ``engine.core.errors.StateUnavailable`` for what it
cannot re-run (a transaction cut by the loss); ``session`` tells a reader when state it
cached from the connection may be stale (a new session missed notifications).

SQL text uses qmark parameters (``?``); a driver with another paramstyle (psycopg: ``%s``)
translates them in its backend. ``engine/store/sqlite.py`` and ``engine/store/postgres.py`` implement it and are the
only modules that import a database driver: PostgreSQL is one more class of this Protocol,
not a second copy of the queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol


class Backend(Protocol):
    """One database engine as the store sees it (see the module docstring)."""

    name: str  # "sqlite" or "postgresql"
    Error: type[Exception]  # the driver's base error
    ID_COLUMN: str  # DDL of an auto-increment integer primary key
    MAX_PARAMS: int  # bound parameters one statement may carry
    EXTRA_DDL: tuple[str, ...]  # run after the schema's tables are created (triggers)

    @property
    def where(self) -> Path | str:
        """What error lines name: the file, or the URL without its password."""
        ...

    def connect(self) -> Any:
        """A new connection in autocommit mode whose rows map column names to values."""
        ...

    def begin_write(self, conn: Any) -> None:
        """Start a transaction that holds the write lock from its first statement."""
        ...

    def in_transaction(self, conn: Any) -> bool: ...

    def session(self, conn: Any) -> int:
        """Which session of ``conn`` this is: it changes when the backend re-made a lost one
        (always 0 for SQLite)."""
        ...

    def tuple_cursor(self, conn: Any) -> Any:
        """A cursor whose rows are plain tuples (cheaper for bulk reads)."""
        ...

    def insert(self, conn: Any, sql: str, args: Sequence[Any]) -> int:
        """Run one INSERT into a table with an auto-increment key; the new row's id."""
        ...

    def data_version(self, conn: Any) -> int:
        """A number that changes whenever another connection commits."""
        ...

    def has_table(self, conn: Any, table: str) -> bool: ...

    def columns(self, conn: Any, table: str) -> set[str]: ...

    def backup(self, conn: Any, version: int) -> None:
        """A consistent copy of the database at schema ``version``, made while ``conn``
        holds the write lock (so the copy is exactly what a migration then changes)."""
        ...

    def backup_name(self, version: int) -> str:
        """Where ``backup`` puts that copy, as an operator is told (a file, a schema)."""
        ...
