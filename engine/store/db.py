"""``StateDB``: one connection to the state database and the transactions that change it.

The state database holds downlinks, deliveries, streams, process instances and written
files; the daemon, ``skydeck-engine run``, the CLI listings and the console share it at the
same time. Rules kept here:

- one ``StateDB`` per thread and process (opening is cheap; never share one across a fork);
- every multi-row change is one transaction taken with the write lock up front (``tx``), so
  two claims cannot interleave;
- owners (pid, host, process start time) are stored on claims, so a claim whose owner is
  provably dead on this host can be taken over after a crash (``engine.core.owner``); on
  PostgreSQL a claimer first holds its presence on the server (``presence.py``) and an
  owner on another host is judged by the server (its presence gone: dead), so a crashed
  host's claims are taken over too, each with a ``takeover`` event (old owner and new);
- opening makes the schema current (``migrations.ensure_schema``) or refuses a database
  written by a newer skydeck;
- a PostgreSQL server that goes away (a restart, ``pg_terminate_backend``) is reconnected
  to by the backend (engine/store/postgres.py, waiting as the caller's ``Patience`` says);
  a transaction it cut is run again here (``_retrying``), from its first statement, on the
  new session: nothing of a cut transaction is committed, except one cut *during* COMMIT
  (``in_doubt``), which may have been. So every write method is safe to run again after
  its own commit: it is idempotent (an UPDATE to the same values, an upsert, a claim that
  finds itself the owner) or recognises its own earlier write by a value fixed before the
  first attempt (a downlink's registration time and manifest, an instance's creation time,
  an event's time). What cannot be re-run in time raises ``StateUnavailable`` (exit 75)
  to the caller, whose unit of work is reconciling and is retried later (the daemon).

The SQL here is written once for every backend (qmark parameters, ``ON CONFLICT`` rather
than SQLite's ``INSERT OR ...``); what differs between engines is the ``Backend`` the
database is opened with (``engine/store/sqlite.py`` today). The read models the console and
the CLI need beyond single records are in ``queries.py``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

from engine.core.dburl import StateURL
from engine.core.errors import BadInput, SkydeckError, StateUnavailable
from engine.core.owner import Owner, RemoteJudge, owner_dead
from engine.store import presence
from engine.store.backend import Backend
from engine.store.migrations import ensure_schema
from engine.store.outage import Patience
from engine.store.queries import ReadQueries
from engine.store.records import (
    Delivery,
    Downlink,
    FileRecord,
    Identity,
    ProcessInstance,
    Stream,
)
from engine.store.sqlite import SQLite

_PI_COLUMNS = frozenset(f.name for f in fields(ProcessInstance)) - {"id"}
_DELIVERY = "SELECT " + ", ".join(f.name for f in fields(Delivery)) + " FROM deliveries"
RERUNS = 5  # a transaction cut this many times in a row (the server keeps dropping it) gives up
T = TypeVar("T")


def _row(cls: type, row: Any) -> Any:
    d = dict(row)
    if cls is Stream:
        d["vars"] = json.loads(d["vars"] or "{}")
        d["is_latest"] = bool(d["is_latest"])
    elif cls is ProcessInstance:
        d["is_latest"] = bool(d["is_latest"])
    elif cls is Downlink:
        d["gensteps"] = bool(d["gensteps"])
        d.pop("seq", None)  # registration order: the read models' business (queries.py)
    return cls(**d)


class StateDB(ReadQueries):
    """A connection to the state database; create one per thread/process."""

    def __init__(self, where: Path | str | StateURL, timeout: float = 30.0,
                 check_same_thread: bool = True, *, backend: Backend | None = None,
                 patience: Patience | None = None) -> None:
        """``where``: the SQLite file, or a PostgreSQL ``StateURL`` (``Workspace.state``
        gives the one in effect). ``check_same_thread=False`` only for a connection used by
        one worker thread and closed by its owner after that thread ended (never used by two
        threads at once). ``backend``: an engine object to use instead. ``patience``: how
        long a call waits for an unreachable PostgreSQL server, opening included (default:
        ``[state] wait_s``; engine/store/outage.py)."""
        self.backend: Backend = backend or open_backend(where, timeout, check_same_thread,
                                                        patience)
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

    def _takeover(self, what: str, dlid: str | None, old: str, new: Owner, why: str,
                  **ids: Any) -> None:
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

    def __enter__(self) -> StateDB:
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

    def log_event(self, kind: str, dlid: str | None = None, t: float | None = None,
                  **detail: Any) -> None:
        """One row of the events table: in the caller's transaction, or in one of its own
        (re-run after a lost connection without a second row)."""
        t = time.time() if t is None else t
        text = json.dumps(detail, default=str)
        if self.backend.in_transaction(self.conn):
            self.conn.execute("INSERT INTO events (t, kind, dlid, detail) VALUES (?,?,?,?)",
                              (t, kind, dlid, text))
            return

        def body(again: bool) -> None:
            with self.tx() as c:
                if again and self._event_at(t, kind):
                    return  # written by the attempt whose COMMIT was cut
                c.execute("INSERT INTO events (t, kind, dlid, detail) VALUES (?,?,?,?)",
                          (t, kind, dlid, text))
        self._retrying(body)

    def _event_at(self, t: float, kind: str) -> bool:
        return self.conn.execute("SELECT 1 FROM events WHERE t=? AND kind=?",
                                 (t, kind)).fetchone() is not None

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
                    n = int(c.execute("DELETE FROM events WHERE t < ? AND id <= ?",
                                      span).rowcount)
                self.log_event("prune", None, t, events_deleted=n, **record)
                return n
        return self._retrying(body)

    # ------------------------------------------------------------ deliveries

    def claim_delivery(self, name: str, kind: str, dlid: str | None, path: str,
                       again: bool = False) -> bool:
        """Claim a delivery for verification; False if it is done or a live owner holds it.

        An accepted name is claimed again only with ``again``: the caller found a new
        delivery under the same name (an fcopy package sent again), which is then judged,
        never silently ignored. A claim of a dead owner on another host (PostgreSQL) is
        taken over with a ``takeover`` event."""
        me = Owner.me()
        self.hold_presence()
        # a re-run after a cut COMMIT finds its own claim (same owner): idempotent
        return self._retrying(lambda _again: self._claim_delivery(me, name, kind, dlid, path,
                                                                   again))

    def _claim_delivery(self, me: Owner, name: str, kind: str, dlid: str | None, path: str,
                        again: bool) -> bool:
        with self.tx() as c:
            row = c.execute("SELECT * FROM deliveries WHERE name=?", (name,)).fetchone()
            if row is not None:
                if row["status"] == "ACCEPTED" and not again:
                    return False
                # REJECTED: the bad one was moved away, so this is a new delivery of the name
                same = (row["owner_pid"], row["owner_host"]) == (me.pid, me.host)
                if row["status"] == "CLAIMED" and not same:
                    dead, why, remote = self._judge_owner(row["owner_pid"], row["owner_host"],
                                                          row["owner_start"])
                    if not dead:
                        return False
                    if remote:
                        self._takeover("delivery", dlid, f"{row['owner_host']}:{row['owner_pid']}",
                                       me, why, delivery=name)
                seen = row["seen"] if row["status"] == "PENDING" else time.time()
                c.execute("UPDATE deliveries SET status='CLAIMED', reason=NULL, done=NULL, "
                          "owner_pid=?, owner_host=?, owner_start=?, path=?, seen=? WHERE name=?",
                          (me.pid, me.host, me.start, path, seen, name))
                return True
            c.execute("INSERT INTO deliveries (name, kind, dlid, status, path, owner_pid, owner_host,"
                      " owner_start, seen) VALUES (?,?,?,?,?,?,?,?,?)",
                      (name, kind, dlid, "CLAIMED", path, me.pid, me.host, me.start, time.time()))
            return True

    def release_delivery(self, name: str, pending: str | None = None) -> None:
        """Give a claim back without a verdict. With ``pending`` (why it is not complete yet)
        the row stays as PENDING so the console can show it; else it is removed."""
        me = Owner.me()

        def body(_again: bool) -> None:  # idempotent: only our own claim is touched
            with self.tx() as c:
                if pending is None:
                    c.execute("DELETE FROM deliveries WHERE name=? AND status='CLAIMED' AND "
                              "owner_pid=? AND owner_host=?", (name, me.pid, me.host))
                else:
                    c.execute("UPDATE deliveries SET status='PENDING', reason=?, owner_pid=NULL, "
                              "owner_host=NULL, owner_start=NULL WHERE name=? AND "
                              "status='CLAIMED' AND owner_pid=? AND owner_host=?",
                              (pending, name, me.pid, me.host))
        self._retrying(body)

    def finish_delivery(self, name: str, status: str, path: str, reason: str | None = None,
                        identity: Identity | None = None) -> None:
        """The verdict on a claimed delivery; an ACCEPTED one records ``identity`` (what was
        accepted, by content), any other verdict clears it (nothing accepted lies there)."""
        ident = (None, None, None, None) if identity is None else (
            identity.manifest_sha256, identity.manifest_key, identity.package_md5,
            identity.package_key)
        done = time.time()

        def body(_again: bool) -> None:  # idempotent: the same values again
            with self.tx() as c:
                c.execute("UPDATE deliveries SET status=?, reason=?, path=?, done=?, "
                          "owner_pid=NULL, manifest_sha256=?, manifest_key=?, package_md5=?, "
                          "package_key=? WHERE name=?",
                          (status, reason, path, done, *ident, name))
        self._retrying(body)

    def set_identity(self, name: str, identity: Identity) -> None:
        """Record what an accepted delivery is, by content, and its stat keys: once the
        delivery was checked again (its keys settled or changed with the same content), or
        for a delivery accepted before identities were recorded. Only while it is ACCEPTED."""
        def body(_again: bool) -> None:  # idempotent: the same values again
            with self.tx() as c:
                c.execute("UPDATE deliveries SET manifest_sha256=?, manifest_key=?, "
                          "package_md5=?, package_key=? WHERE name=? AND status='ACCEPTED'",
                          (identity.manifest_sha256, identity.manifest_key,
                           identity.package_md5, identity.package_key, name))
        self._retrying(body)

    def delivery(self, name: str) -> Delivery | None:
        row = self.conn.execute(_DELIVERY + " WHERE name=?", (name,)).fetchone()
        return None if row is None else _row(Delivery, row)

    def deliveries(self, status: str | None = None) -> list[Delivery]:
        rows = self.q(_DELIVERY + " WHERE status=? ORDER BY seen", (status,)) if status else \
            self.q(_DELIVERY + " ORDER BY seen")
        return [_row(Delivery, r) for r in rows]

    # ------------------------------------------------------------ downlinks

    def register_downlink(self, dl: Downlink) -> bool:
        """Insert a downlink; False when it is already registered (exactly-once). A re-run
        after a cut COMMIT that had registered it recognises its own row (the same
        registration time, form, directory and manifest) and says True again."""
        def body(again: bool) -> bool:
            with self.tx() as c:
                cur = c.execute(
                    "INSERT INTO downlinks (dlid, kind, level0, chunks, gensteps, scene, "
                    "delivered, registered, manifest_id, manifest_sha256, seq) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM downlinks)) "
                    "ON CONFLICT (dlid) DO NOTHING",
                    (dl.dlid, dl.kind, dl.level0, dl.chunks, int(dl.gensteps), dl.scene,
                     dl.delivered, dl.registered, dl.manifest_id, dl.manifest_sha256))
                if cur.rowcount:
                    self.log_event("registered", dl.dlid, form=dl.kind,
                                   latency_s=round(dl.registered - dl.delivered, 4))
                    return True
                if not again:
                    return False
                have = self.downlink(dl.dlid)
                return have is not None and (have.registered, have.kind, have.level0,
                                             have.manifest_id, have.manifest_sha256) == (
                    dl.registered, dl.kind, dl.level0, dl.manifest_id, dl.manifest_sha256)
        return self._retrying(body)

    def set_level0_identity(self, dlid: str, manifest_id: str | None, manifest_sha256: str) -> None:
        """Record a registered downlink's level-0 MANIFEST.md5 by content (its entries'
        digest) and its stat key, once checked again (a key settled, a legacy row adopted)."""
        with self.tx() as c:
            c.execute("UPDATE downlinks SET manifest_id=?, manifest_sha256=? WHERE dlid=?",
                      (manifest_id, manifest_sha256, dlid))

    def downlink(self, dlid: str) -> Downlink | None:
        row = self.conn.execute("SELECT * FROM downlinks WHERE dlid=?", (dlid,)).fetchone()
        return None if row is None else _row(Downlink, row)

    def downlinks(self) -> list[Downlink]:
        return [_row(Downlink, r) for r in self.q("SELECT * FROM downlinks ORDER BY dlid")]

    # ------------------------------------------------------------ streams

    def stream(self, stream_id: int) -> Stream:
        return _row(Stream, self.conn.execute("SELECT * FROM streams WHERE id=?", (stream_id,)).fetchone())

    def latest_stream(self, dlid: str, task: str = "halfpipe") -> Stream | None:
        row = self.conn.execute("SELECT * FROM streams WHERE dlid=? AND task=? AND is_latest=1",
                                (dlid, task)).fetchone()
        return None if row is None else _row(Stream, row)

    def streams(self, latest_only: bool = True) -> list[Stream]:
        sql = "SELECT * FROM streams" + (" WHERE is_latest=1" if latest_only else "") + \
            " ORDER BY dlid, execution"
        return [_row(Stream, r) for r in self.q(sql)]

    def claim_stream(self, dlid: str, task: str, steal_dead: bool = True) -> tuple[Stream | None, str]:
        """Create or take over the latest stream of a downlink for this process.

        Returns (stream, "") when claimed; (None, why) when a live owner holds it or it is
        finished. The previous owner, when provably dead, is recorded in a ``stream_resumed``
        event; one on another host (PostgreSQL: its presence is gone) also in a ``takeover``
        event and the stream's note (``drain_takeovers`` gives it to the caller's log).
        """
        me = Owner.me()
        now = time.time()
        self.hold_presence()
        # a re-run after a cut COMMIT finds the stream it made or took owned by itself
        return self._retrying(lambda _again: self._claim_stream(me, now, dlid, task, steal_dead))

    def _claim_stream(self, me: Owner, now: float, dlid: str, task: str,
                      steal_dead: bool) -> tuple[Stream | None, str]:
        with self.tx() as c:
            row = c.execute("SELECT * FROM streams WHERE dlid=? AND task=? AND is_latest=1",
                            (dlid, task)).fetchone()
            if row is None:
                sid = self.backend.insert(
                    c, "INSERT INTO streams (task, dlid, execution, status, owner_pid, owner_host, "
                    "owner_start, created, started) VALUES (?,?,?,?,?,?,?,?,?)",
                    (task, dlid, 1, "RUNNING", me.pid, me.host, me.start, now, now))
                self.log_event("stream_created", dlid, stream=sid)
                return _row(Stream, c.execute("SELECT * FROM streams WHERE id=?",
                                              (sid,)).fetchone()), ""
            st = _row(Stream, row)
            if st.status in ("SUCCESS", "FAILED", "CANCELED"):
                return None, f"stream {dlid} is {st.status}"
            if st.owner_pid is not None and (st.owner_pid, st.owner_host) != (me.pid, me.host):
                dead, why, remote = self._judge_owner(st.owner_pid, st.owner_host, st.owner_start)
                if not dead or not steal_dead:
                    return None, f"stream {dlid} is held by {st.owner_host}:{st.owner_pid} ({why})"
                self.log_event("stream_resumed", dlid, stream=st.id, previous_owner=st.owner_pid,
                               why=why)
                if remote:
                    old = f"{st.owner_host}:{st.owner_pid}"
                    self._takeover("stream", dlid, old, me, why, stream=st.id)
                    c.execute("UPDATE streams SET note=? WHERE id=?",
                              (f"taken over from {old} by {me}: {why}", st.id))
            c.execute("UPDATE streams SET owner_pid=?, owner_host=?, owner_start=?, status='RUNNING',"
                      " started=COALESCE(started, ?) WHERE id=?",
                      (me.pid, me.host, me.start, now, st.id))
            return _row(Stream, c.execute("SELECT * FROM streams WHERE id=?", (st.id,)).fetchone()), ""

    def release_stream(self, stream_id: int, status: str, note: str | None = None) -> None:
        ended = time.time() if status in ("SUCCESS", "FAILED", "CANCELED") else None

        def body(again: bool) -> None:
            with self.tx() as c:
                row = c.execute("SELECT dlid, status, note, ended, owner_pid FROM streams "
                                "WHERE id=?", (stream_id,)).fetchone()
                if again and (row["status"], row["note"], row["ended"], row["owner_pid"]) == (
                        status, note, ended, None):
                    return  # released by the attempt whose COMMIT was cut
                c.execute("UPDATE streams SET status=?, note=?, ended=?, owner_pid=NULL, "
                          "owner_host=NULL, owner_start=NULL WHERE id=?",
                          (status, note, ended, stream_id))
                self.log_event("stream_" + status.lower(), row["dlid"], stream=stream_id,
                               note=note)
        self._retrying(body)

    def reset_stream(self, stream_id: int, note: str, retire: Sequence[int] = ()) -> None:
        """Roll a stream back: the instances ``retire`` are no longer latest and the stream
        is WAITING again (a runner then makes new executions); one transaction."""
        t = time.time()

        def body(again: bool) -> None:
            with self.tx() as c:
                if again and self._event_at(t, "rollback"):
                    return  # rolled back by the attempt whose COMMIT was cut
                for pi_id in retire:
                    c.execute("UPDATE process_instances SET is_latest=0 WHERE id=?", (pi_id,))
                c.execute("UPDATE streams SET status='WAITING', ended=NULL, note=? WHERE id=?",
                          (note, stream_id))
                dlid = c.execute("SELECT dlid FROM streams WHERE id=?",
                                 (stream_id,)).fetchone()[0]
                self.log_event("rollback", dlid, t, stream=stream_id, instances=list(retire))
        self._retrying(body)

    def set_stream_vars(self, stream_id: int, **values: Any) -> dict[str, Any]:
        def body(_again: bool) -> dict[str, Any]:  # idempotent: the same keys set again
            with self.tx() as c:
                cur = json.loads(c.execute("SELECT vars FROM streams WHERE id=?",
                                           (stream_id,)).fetchone()[0])
                cur.update(values)
                c.execute("UPDATE streams SET vars=? WHERE id=?", (json.dumps(cur), stream_id))
                return dict(cur)
        return self._retrying(body)

    def set_stream_note(self, stream_id: int, note: str | None) -> None:
        self._update("UPDATE streams SET note=? WHERE id=?", (note, stream_id))

    def _update(self, sql: str, args: Sequence[Any]) -> None:
        """One idempotent write statement (the same values again) in its own transaction."""
        def body(_again: bool) -> None:
            with self.tx() as c:
                c.execute(sql, args)
        self._retrying(body)

    # ------------------------------------------------------------ process instances

    def instances(self, stream_id: int, latest_only: bool = True) -> list[ProcessInstance]:
        sql = "SELECT * FROM process_instances WHERE stream_id=?" + \
            (" AND is_latest=1" if latest_only else "") + " ORDER BY id"
        return [_row(ProcessInstance, r) for r in self.q(sql, (stream_id,))]

    def instance(self, pi_id: int) -> ProcessInstance:
        return _row(ProcessInstance, self.conn.execute(
            "SELECT * FROM process_instances WHERE id=?", (pi_id,)).fetchone())

    def latest_instance(self, stream_id: int, process: str, key: str) -> ProcessInstance | None:
        """The latest execution of (process, key) in a stream; None when there is none."""
        row = self.conn.execute("SELECT * FROM process_instances WHERE stream_id=? AND process=? "
                                "AND key=? AND is_latest=1", (stream_id, process, key)).fetchone()
        return None if row is None else _row(ProcessInstance, row)

    def create_instance(self, stream_id: int, process: str, key: str, max_retries: int,
                        auto_retry: int = 0, status: str = "WAITING") -> ProcessInstance:
        """New execution of (process, key): execution = 1 + the highest so far. A re-run
        after a cut COMMIT that had made it returns that one (its creation time is this
        call's), never a second execution."""
        created = time.time()

        def body(again: bool) -> ProcessInstance:
            with self.tx() as c:
                if again:
                    row = c.execute("SELECT * FROM process_instances WHERE stream_id=? AND "
                                    "process=? AND key=? AND is_latest=1 AND created=?",
                                    (stream_id, process, key, created)).fetchone()
                    if row is not None:
                        return _row(ProcessInstance, row)
                prev = c.execute("SELECT MAX(execution) FROM process_instances WHERE "
                                 "stream_id=? AND process=? AND key=?",
                                 (stream_id, process, key)).fetchone()[0] or 0
                c.execute("UPDATE process_instances SET is_latest=0 WHERE stream_id=? AND "
                          "process=? AND key=?", (stream_id, process, key))
                pi_id = self.backend.insert(
                    c, "INSERT INTO process_instances (stream_id, process, key, execution, "
                    "status, auto_retry, max_retries, created) VALUES (?,?,?,?,?,?,?,?)",
                    (stream_id, process, key, prev + 1, status, auto_retry, max_retries,
                     created))
                return _row(ProcessInstance, c.execute(
                    "SELECT * FROM process_instances WHERE id=?", (pi_id,)).fetchone())
        return self._retrying(body)

    def update_instance(self, pi_id: int, **values: Any) -> None:
        if not values:
            return
        unknown = set(values) - _PI_COLUMNS
        if unknown:  # column names go into the SQL text: only the record's own
            raise ValueError(f"process instances have no column {', '.join(sorted(unknown))}")
        cols = ", ".join(f"{k}=?" for k in values)
        self._update(f"UPDATE process_instances SET {cols} WHERE id=?", (*values.values(), pi_id))

    def set_job(self, pi_id: int, launcher: str, job_id: str | None) -> None:
        """Record which launcher runs the instance and its batch job id (None locally), so
        a runner that takes over after a crash finds the job instead of submitting it again."""
        self._update("UPDATE process_instances SET launcher=?, job_id=? WHERE id=?",
                     (launcher, job_id, pi_id))

    def retire_instances(self, pi_ids: Sequence[int]) -> None:
        """Mark instances as no longer latest (rollback): the runner makes new executions."""
        def body(_again: bool) -> None:  # idempotent
            with self.tx() as c:
                for pi_id in pi_ids:
                    c.execute("UPDATE process_instances SET is_latest=0 WHERE id=?", (pi_id,))
        self._retrying(body)

    # ------------------------------------------------------------ files

    def record_file(self, path: Path, producer: str, pi_id: int | None, dlid: str | None,
                    md5: str | None) -> FileRecord:
        st = os.stat(path)
        rec = FileRecord(str(path), dlid, producer, pi_id, st.st_size, md5, time.time())
        self._update("INSERT INTO files (path, dlid, producer, pi_id, size, md5, created) "
                     "VALUES (?,?,?,?,?,?,?) ON CONFLICT (path) DO UPDATE SET dlid=excluded.dlid, "
                     "producer=excluded.producer, pi_id=excluded.pi_id, size=excluded.size, "
                     "md5=excluded.md5, created=excluded.created",
                     (rec.path, rec.dlid, rec.producer, rec.pi_id, rec.size, rec.md5, rec.created))
        return rec

    def forget_file(self, path: Path | str) -> None:
        self._update("DELETE FROM files WHERE path=?", (str(path),))

    def file(self, path: Path | str) -> FileRecord | None:
        row = self.conn.execute("SELECT * FROM files WHERE path=?", (str(path),)).fetchone()
        return None if row is None else _row(FileRecord, row)

    def files(self, dlid: str | None = None, producer: str | None = None) -> list[FileRecord]:
        sql, args = "SELECT * FROM files WHERE 1=1", []
        if dlid is not None:
            sql += " AND dlid=?"
            args.append(dlid)
        if producer is not None:
            sql += " AND producer=?"
            args.append(producer)
        return [_row(FileRecord, r) for r in self.q(sql + " ORDER BY path", args)]


def open_backend(where: Path | str | StateURL, timeout: float = 30.0,
                 check_same_thread: bool = True, patience: Patience | None = None) -> Backend:
    """The backend for ``where``: PostgreSQL for a ``StateURL`` (psycopg is imported only
    then; ``patience``: engine/store/outage.py), else the SQLite file."""
    if isinstance(where, StateURL):
        try:
            from engine.store.postgres import PostgreSQL
        except ImportError as err:
            raise BadInput(f"a PostgreSQL state needs psycopg ({err.name} is not installed): "
                           "pip install 'skydeck[postgresql]'", where.redacted) from None
        return PostgreSQL(where, timeout, patience)
    return SQLite(Path(where), timeout, check_same_thread)


def open_db(where: Path | StateURL) -> StateDB:
    return StateDB(where)


def init_state(where: Path | StateURL) -> None:
    """Create the state database at ``where`` (or bring an existing one up to date): what
    ``skydeck-engine init`` does after laying out the workspace's directories. BadInput
    naming the file or the URL (without password) when it cannot be created."""
    name = where.redacted if isinstance(where, StateURL) else where
    try:
        StateDB(where).close()
    except OSError as err:
        raise BadInput(f"cannot create the state database: {err.strerror}",
                       err.filename or name) from None
    except Exception as err:  # the driver's error: sqlite3.Error, psycopg.Error
        if isinstance(err, SkydeckError):
            raise
        text = where.scrub(err) if isinstance(where, StateURL) else str(err)
        raise BadInput(f"cannot create the state database: {text}", name) from None
