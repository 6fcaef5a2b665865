"""One connection to the state database: opening it, its transactions, re-running what a
lost server cut, and the events table.

Why a module of its own: ``StateDB`` (db.py) is this connection plus the records it keeps
(``IntakeState`` for deliveries and downlinks, ``StreamState`` for streams, instances and
files); the rules every write keeps are here, once: the write lock taken up front
(``tx``), a transaction cut by a PostgreSQL server going away run again from its first
statement (``_retrying``: each write method is idempotent or recognises its own earlier
write), owners judged through ``engine.core.owner`` and, on PostgreSQL, the server
(``presence``), and the events that say what happened.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Self, TypeVar

from engine.core.dburl import StateURL
from engine.core.errors import BadInput, StateUnavailable
from engine.core.owner import Owner, RemoteJudge, owner_dead
from engine.store import presence
from engine.store.backend import Backend
from engine.store.migrations import ensure_schema
from engine.store.outage import Patience
from engine.store.queries import ReadQueries
from engine.store.sqlite import SQLite

RERUNS = 5  # a transaction cut this many times in a row (the server keeps dropping it) gives up
T = TypeVar("T")


class StateConnection(ReadQueries):
    """A connection to the state database; create one per thread/process (as ``StateDB``)."""

    def __init__(
        self,
        where: Path | str | StateURL,
        timeout: float = 30.0,
        check_same_thread: bool = True,
        *,
        backend: Backend | None = None,
        patience: Patience | None = None,
    ) -> None:
        """``where``: the SQLite file, or a PostgreSQL ``StateURL`` (``Workspace.state``
        gives the one in effect). ``check_same_thread=False`` only for a connection used by
        one worker thread and closed by its owner after that thread ended (never used by two
        threads at once). ``backend``: an engine object to use instead. ``patience``: how
        long a call waits for an unreachable PostgreSQL server, opening included (default:
        ``[state] wait_s``; engine/store/outage.py)."""
        self.backend: Backend = backend or open_backend(where, timeout, check_same_thread, patience)
        self.where = self.backend.where  # what error lines name (a URL without password)
        self.conn: Any = self.backend.connect()
        try:
            self.opened_version = ensure_schema(self.backend, self.conn)
        except BaseException:
            self.conn.close()
            raise
        # owners on other hosts, judged by the server through this connection (None: SQLite)
        self.remote_judge: RemoteJudge | None = presence.judge_of(self.backend, self.conn)
        self.takeovers: list[dict[str, Any]] = []  # drain_takeovers

    def hold_presence(self) -> presence.Presence | None:
        """Make this process an owner the server can see die (kept for the process's life;
        None on SQLite). The claim code calls it before writing an owner; the daemon at
        start, so its heartbeat and lock files are never judged dead while it lives."""
        return presence.hold(self.backend)

    def _judge_owner(self, pid: Any, host: Any, start: Any) -> tuple[bool, str, bool]:
        """(dead, why, on another host) of a recorded owner."""
        dead, why = owner_dead(pid, host, start, self.remote_judge)
        return dead, why, pid is not None and host != Owner.me().host

    def _takeover(
        self, what: str, dlid: str | None, old: str, new: Owner, why: str, **ids: Any
    ) -> None:
        """The ``takeover`` event of a claim whose owner on another host died (in the
        caller's transaction), kept for the caller's log line (``drain_takeovers``)."""
        detail = {"what": what, "old_owner": old, "new_owner": str(new), "why": why, **ids}
        self.log_event("takeover", dlid, **detail)
        entry = {"dlid": dlid, **detail}
        if entry not in self.takeovers:  # a transaction re-run after a cut: one line
            self.takeovers.append(entry)

    def drain_takeovers(self) -> list[dict[str, Any]]:
        """The takeovers this connection made since the last call (for the caller's log
        lines; a rolled-back claim's may be among them, its event was rolled back)."""
        out, self.takeovers = self.takeovers, []
        return out

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def tx(self) -> Iterator[Any]:
        """One write transaction holding the write lock from the start, so claims cannot
        interleave; yields the connection. A lost connection raises ``StateUnavailable``
        (the write methods below run the transaction again: ``_retrying``)."""
        self.backend.begin_write(self.conn)
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            # A failed statement or COMMIT (disk full, I/O error, a lost connection) may
            # already have ended the transaction; either way none of it stays and the
            # connection is usable again.
            if self.backend.in_transaction(self.conn):
                with suppress(self.backend.Error, StateUnavailable):
                    self.conn.execute("ROLLBACK")
            raise

    def _retrying(self, body: Callable[[bool], T]) -> T:
        """``body(again)``: one write transaction, run again from its start when a lost
        connection cut it (the backend has a new session by then, or raises when the
        server cannot be reached within the caller's patience). ``again`` is True on a run
        after a COMMIT whose outcome is unknown (it may have committed): the body then
        recognises its own earlier write instead of making a second one."""
        again = False
        for attempt in range(RERUNS):
            try:
                return body(again)
            except StateUnavailable as err:
                if not err.cut or attempt == RERUNS - 1:
                    raise
                again = again or err.in_doubt
        raise AssertionError("unreachable")

    def q(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return list(self.conn.execute(sql, args).fetchall())

    def data_version(self) -> int:
        """Changes whenever another connection commits (a poller's cheap change probe)."""
        return self.backend.data_version(self.conn)

    # ------------------------------------------------------------ events (structured log)

    def log_event(
        self, kind: str, dlid: str | None = None, t: float | None = None, **detail: Any
    ) -> None:
        """One row of the events table: in the caller's transaction, or in one of its own
        (re-run after a lost connection without a second row)."""
        t = time.time() if t is None else t
        text = json.dumps(detail, default=str)
        if self.backend.in_transaction(self.conn):
            self.conn.execute(
                "INSERT INTO events (t, kind, dlid, detail) VALUES (?,?,?,?)", (t, kind, dlid, text)
            )
            return

        def body(again: bool) -> None:
            with self.tx() as c:
                if again and self._event_at(t, kind):
                    return  # written by the attempt whose COMMIT was cut
                c.execute(
                    "INSERT INTO events (t, kind, dlid, detail) VALUES (?,?,?,?)",
                    (t, kind, dlid, text),
                )

        self._retrying(body)

    def _event_at(self, t: float, kind: str) -> bool:
        return (
            self.conn.execute("SELECT 1 FROM events WHERE t=? AND kind=?", (t, kind)).fetchone()
            is not None
        )

    def trim_events(self, span: tuple[float, int] | None, **record: Any) -> int:
        """One prune's write to the events table, in one transaction: delete the rows older
        than ``span``'s cut-off (epoch seconds) whose id is at most its last id (the rows
        the prune planned; those written since are not among them), and log a ``prune``
        event holding ``record``. ``span`` None: only the log. Returns the rows deleted."""
        t = time.time()

        def body(again: bool) -> int:
            with self.tx() as c:
                if again and self._event_at(t, "prune"):
                    return 0  # done by the attempt whose COMMIT was cut
                n = 0
                if span is not None:
                    n = int(c.execute("DELETE FROM events WHERE t < ? AND id <= ?", span).rowcount)
                self.log_event("prune", None, t, events_deleted=n, **record)
                return n

        return self._retrying(body)

    def _update(self, sql: str, args: Sequence[Any]) -> None:
        """One idempotent write statement (the same values again) in its own transaction."""

        def body(_again: bool) -> None:
            with self.tx() as c:
                c.execute(sql, args)

        self._retrying(body)


def open_backend(
    where: Path | str | StateURL,
    timeout: float = 30.0,
    check_same_thread: bool = True,
    patience: Patience | None = None,
) -> Backend:
    """The backend for ``where``: PostgreSQL for a ``StateURL`` (psycopg is imported only
    then; ``patience``: engine/store/outage.py), else the SQLite file."""
    if isinstance(where, StateURL):
        try:
            from engine.store.postgres import PostgreSQL
        except ImportError as err:
            raise BadInput(
                f"a PostgreSQL state needs psycopg ({err.name} is not installed): "
                "pip install 'skydeck[postgresql]'",
                where.redacted,
            ) from None
        return PostgreSQL(where, timeout, patience)
    return SQLite(Path(where), timeout, check_same_thread)
