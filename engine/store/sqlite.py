"""The SQLite backend: the only module of skydeck that imports a database driver.

Why SQLite: one file in the workspace, shared by the daemon, ``skydeck-engine run``, the CLI
listings and the console at the same time, with no server to run. Two daemons must agree on
who runs a downlink (a claim is one ``BEGIN IMMEDIATE`` transaction), and the console must
read a consistent picture while a daemon writes (WAL: readers never block the writer).
Rules kept here:

- one connection per thread and process (``connect`` is cheap; never share one across a fork);
- a busy timeout, so short writer overlaps wait instead of failing;
- every SQLite-only statement of the store (PRAGMAs, ``sqlite_master``, the backup API,
  ``lastrowid``) lives in this module; the queries elsewhere are portable SQL.

This is one implementation of ``engine.store.backend.Backend``; a PostgreSQL backend is
another class with the same methods.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from engine.core.errors import BadInput
from engine.core.groups import no_permission

BEGIN_ATTEMPTS = 200
BEGIN_PAUSE_S = 0.05


class SQLite:
    """The state database as one SQLite file (WAL mode)."""

    name = "sqlite"
    Error: type[Exception] = sqlite3.Error
    ID_COLUMN = "INTEGER PRIMARY KEY AUTOINCREMENT"
    MAX_PARAMS = 900  # below SQLITE_MAX_VARIABLE_NUMBER of every SQLite build (999 before 3.32)
    EXTRA_DDL: tuple[str, ...] = ()  # data_version needs no triggers

    def __init__(self, path: Path, timeout: float = 30.0, check_same_thread: bool = True) -> None:
        """``check_same_thread=False`` only for a connection used by one worker thread and
        closed by its owner after that thread ended (never used by two threads at once)."""
        self.where = Path(path)
        self.timeout = timeout
        self.check_same_thread = check_same_thread

    def connect(self) -> sqlite3.Connection:
        self._check_access()
        conn = sqlite3.connect(
            self.where,
            timeout=self.timeout,
            isolation_level=None,
            check_same_thread=self.check_same_thread,
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as err:
            conn.close()
            if getattr(err, "sqlite_errorcode", None) in (
                sqlite3.SQLITE_NOTADB,
                sqlite3.SQLITE_CORRUPT,
            ):
                raise BadInput(f"not a skydeck state database ({err})", self.where) from None
            raise
        return conn

    def _check_access(self) -> None:
        """Create the database file with the mode the umask gives (SQLite itself would
        create it 0644 before the umask: not writable by a workspace's group; its -wal and
        -shm files then take the database file's mode), and refuse in one line what this
        user may not read or write (exit 77) rather than fail inside SQLite."""
        where = self.where
        try:
            where.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(where, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except PermissionError as err:
            raise no_permission(err.filename or where, "creating the state database") from None
        for p in (
            where,
            where.with_name(where.name + "-wal"),
            where.with_name(where.name + "-shm"),
        ):
            if p.exists() and not os.access(p, os.R_OK | os.W_OK):
                raise no_permission(p, "opening the state database for writing")
        side = [where.with_name(where.name + x) for x in ("-wal", "-shm")]
        if not all(p.exists() for p in side) and not os.access(where.parent, os.W_OK | os.X_OK):
            # SQLite must create its -wal and -shm beside the database
            raise no_permission(where.parent, "writing beside the state database (its WAL)")

    def begin_write(self, conn: Any) -> None:
        for attempt in range(BEGIN_ATTEMPTS):
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as err:
                if (
                    "locked" not in str(err)
                    and "busy" not in str(err)
                    or attempt == BEGIN_ATTEMPTS - 1
                ):
                    raise
                time.sleep(BEGIN_PAUSE_S)

    def in_transaction(self, conn: Any) -> bool:
        return bool(conn.in_transaction)

    def session(self, conn: Any) -> int:
        return 0  # a file is never "lost" as a server connection is

    def tuple_cursor(self, conn: Any) -> Any:
        cur = conn.cursor()
        cur.row_factory = None  # plain tuples: cheaper to fetch
        return cur

    def insert(self, conn: Any, sql: str, args: Sequence[Any]) -> int:
        # lastrowid rather than RETURNING: RETURNING needs SQLite 3.35, newer than some
        # clusters' system library (RHEL 9 ships 3.34)
        return int(conn.execute(sql, args).lastrowid)

    def data_version(self, conn: Any) -> int:
        # changes whenever another connection commits, at the cost of one page read
        return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def has_table(self, conn: Any, table: str) -> bool:
        return (
            conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            is not None
        )

    def columns(self, conn: Any, table: str) -> set[str]:
        return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}

    def id_high_water(self, conn: Any) -> dict[str, int]:
        """The largest id each AUTOINCREMENT table ever handed out (``sqlite_sequence``:
        ids of deleted rows are never given again), for ``db copy`` to continue after."""
        if not self.has_table(conn, "sqlite_sequence"):
            return {}
        return {
            str(r[0]): int(r[1] or 0) for r in conn.execute("SELECT name, seq FROM sqlite_sequence")
        }

    def backup_name(self, version: int) -> str:
        return backup_path(self.where, version).name

    def backup(self, conn: Any, version: int) -> None:
        """Copy the database to ``backup_path(file, version)`` (``state.db.v1.bak``) with
        SQLite's online backup API.

        Called while the caller's connection holds the write lock (``BEGIN IMMEDIATE``): a
        second connection can still read (WAL), sees everything committed so far, and no one
        can commit until the caller is done, so the copy is exactly the database the caller
        then changes. The copy is written to a temporary name, switched out of WAL mode (one
        self-contained file), synced and renamed into place: a crash leaves no half backup.
        """
        dest = backup_path(self.where, version)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        try:
            with (
                closing(sqlite3.connect(self.where, timeout=self.timeout)) as src,
                closing(sqlite3.connect(tmp)) as out,
            ):
                src.backup(out)
                out.execute("PRAGMA journal_mode = DELETE")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def backup_path(path: Path, version: int) -> Path:
    """Where the copy of a database file at ``version`` is kept before it is upgraded."""
    return path.with_name(f"{path.name}.v{version}.bak")
