"""The state database: downlinks, deliveries, streams, process instances and written files.

One SQLite file in WAL mode, shared by the daemon, `skydeck-engine run`, the CLI listings and
the console at the same time. Why SQLite and not files alone: two daemons must agree on who
runs a downlink (a claim is one ``BEGIN IMMEDIATE`` transaction), and the console must read a
consistent picture while a daemon writes. Rules kept here:

- one connection per thread and process (``connect`` is cheap; never share one across a fork);
- a busy timeout, so short writer overlaps wait instead of failing;
- every multi-row change is one transaction (``tx``);
- owners (pid, host, process start time) are stored on claims, so a claim whose owner is
  provably dead on this host can be taken over after a crash (``owner_alive``).

Statuses follow Pipeline-II (reference/halfpipe.md 3.2).
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

SCHEMA_VERSION = 1

PI_STATUSES = ("WAITING", "READY", "QUEUED", "SUBMITTED", "RUNNING", "SUCCESS", "FAILED",
               "TERMINATING", "TERMINATED", "CANCELING", "CANCELED", "SKIPPED")
ACTIVE_PI = ("QUEUED", "SUBMITTED", "RUNNING", "TERMINATING")
DONE_PI = ("SUCCESS", "SKIPPED")
STREAM_STATUSES = ("WAITING", "RUNNING", "SUCCESS", "FAILED", "TERMINATED", "CANCELED")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    name        TEXT PRIMARY KEY,        -- fcopy:<file stem> or level0:<dir name>
    kind        TEXT NOT NULL,           -- fcopy | level0
    dlid        TEXT,                    -- NULL when the name is no valid downlink id
    status      TEXT NOT NULL,           -- CLAIMED | PENDING | ACCEPTED | REJECTED
    reason      TEXT,
    path        TEXT NOT NULL,           -- where it lies now (rejected/ after a rejection)
    owner_pid   INTEGER, owner_host TEXT, owner_start REAL,
    seen        REAL NOT NULL,
    done        REAL
);
CREATE TABLE IF NOT EXISTS downlinks (
    dlid        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    level0      TEXT NOT NULL,           -- directory holding the sources and RetDefs
    chunks      INTEGER NOT NULL,
    gensteps    INTEGER NOT NULL DEFAULT 0,
    scene       TEXT,
    delivered   REAL NOT NULL,           -- delivery complete (manifest seen and verified)
    registered  REAL NOT NULL,
    manifest_id TEXT                     -- its MANIFEST.md5 as registered (dev:ino:size:mtime_ns)
);
CREATE TABLE IF NOT EXISTS streams (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    task        TEXT NOT NULL,
    dlid        TEXT NOT NULL REFERENCES downlinks(dlid),
    execution   INTEGER NOT NULL,
    is_latest   INTEGER NOT NULL DEFAULT 1,
    status      TEXT NOT NULL,
    vars        TEXT NOT NULL DEFAULT '{}',
    note        TEXT,
    owner_pid   INTEGER, owner_host TEXT, owner_start REAL,
    created     REAL NOT NULL, started REAL, ended REAL,
    UNIQUE (task, dlid, execution)
);
CREATE TABLE IF NOT EXISTS process_instances (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id   INTEGER NOT NULL REFERENCES streams(id),
    process     TEXT NOT NULL,
    key         TEXT NOT NULL DEFAULT '',   -- substream: chunk %05d, run start (decimal), ''
    execution   INTEGER NOT NULL,
    is_latest   INTEGER NOT NULL DEFAULT 1,
    status      TEXT NOT NULL,
    auto_retry  INTEGER NOT NULL DEFAULT 0,
    max_retries INTEGER NOT NULL DEFAULT 0,
    host TEXT, pid INTEGER, pid_start REAL,
    created REAL NOT NULL, started REAL, ended REAL,
    exit_code   INTEGER,
    log_path    TEXT,
    note        TEXT
);
CREATE INDEX IF NOT EXISTS pi_stream ON process_instances(stream_id, is_latest);
CREATE TABLE IF NOT EXISTS files (
    path        TEXT PRIMARY KEY,
    dlid        TEXT,
    producer    TEXT NOT NULL,           -- process name
    pi_id       INTEGER,                 -- producing process instance
    size        INTEGER NOT NULL,
    md5         TEXT,
    created     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_dlid ON files(dlid);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, t REAL NOT NULL, kind TEXT NOT NULL,
    dlid TEXT, detail TEXT NOT NULL DEFAULT '{}'
);
"""


# ---------------------------------------------------------------- owners (pid, host, start)

@dataclass(frozen=True)
class Owner:
    """A process identity that survives pid reuse: pid + host + process start time."""

    pid: int
    host: str
    start: float

    @classmethod
    def me(cls) -> Owner:
        return cls(os.getpid(), socket.gethostname(), process_start(os.getpid()) or 0.0)

    def verdict(self) -> tuple[bool, str]:
        """(provably dead, why). Another host is never provably dead."""
        return owner_dead(self.pid, self.host, self.start)


PID_MAX = 2**22  # Linux's largest pid_max: no process has a pid outside 1..PID_MAX


def process_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, OverflowError, TypeError):
        return None


def owner_dead(pid: int | None, host: str | None, start: float | None) -> tuple[bool, str]:
    """Decide whether an owner is provably dead, with the reason shown to operators.

    Total over what a database row or lock file may hold: a pid that is no integer in
    1..PID_MAX names no process (dead on this host), a start that is no finite number is
    ignored; psutil is only asked about a valid pid.
    """
    if pid is None:
        return True, "no owner recorded"
    if host != socket.gethostname():
        return False, f"owner is on another host ({str(host)[:80]}); only an operator may clear it"
    if isinstance(pid, bool) or not isinstance(pid, int) or not 1 <= pid <= PID_MAX:
        return True, f"pid {str(pid)[:24]} is no valid process id on this host"
    if not psutil.pid_exists(pid):
        return True, f"pid {pid} is not running on this host"
    actual = process_start(pid)
    if actual is None:
        return False, f"pid {pid} exists but its start time cannot be read"
    try:
        started = float(start or 0.0)
    except (TypeError, ValueError, OverflowError):
        started = 0.0
    if started and math.isfinite(started) and abs(actual - started) > 1.0:
        return True, f"pid {pid} was reused (start time differs)"
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True, f"pid {pid} is a zombie"
    except psutil.Error:
        pass
    return False, f"pid {pid} is alive"


# ---------------------------------------------------------------- rows as dataclasses

@dataclass
class Delivery:
    name: str
    kind: str
    dlid: str | None
    status: str
    reason: str | None
    path: str
    seen: float
    done: float | None


@dataclass
class Downlink:
    dlid: str
    kind: str
    level0: str
    chunks: int
    gensteps: bool
    scene: str | None
    delivered: float
    registered: float
    # identity of the level-0 MANIFEST.md5 that was registered: a directory at the same path
    # with another manifest is a second delivery of the id, not this one (None: not recorded)
    manifest_id: str | None = None


@dataclass
class Stream:
    id: int
    task: str
    dlid: str
    execution: int
    is_latest: bool
    status: str
    vars: dict[str, Any]
    note: str | None
    owner_pid: int | None
    owner_host: str | None
    owner_start: float | None
    created: float
    started: float | None
    ended: float | None

    @property
    def path(self) -> str:
        return self.dlid


@dataclass
class ProcessInstance:
    id: int
    stream_id: int
    process: str
    key: str
    execution: int
    is_latest: bool
    status: str
    auto_retry: int
    max_retries: int
    host: str | None
    pid: int | None
    pid_start: float | None
    created: float
    started: float | None
    ended: float | None
    exit_code: int | None
    log_path: str | None
    note: str | None

    @property
    def label(self) -> str:
        return f"{self.process}[{self.key}]" if self.key else self.process


@dataclass
class FileRecord:
    path: str
    dlid: str | None
    producer: str
    pi_id: int | None
    size: int
    md5: str | None
    created: float


@dataclass
class StreamView:
    """A stream with its latest process instances (what `streams` and the console show)."""

    stream: Stream
    instances: list[ProcessInstance] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for pi in self.instances:
            out[pi.status] = out.get(pi.status, 0) + 1
        return out


def _row(cls: type, row: sqlite3.Row) -> Any:
    d = dict(row)
    if cls is Stream:
        d["vars"] = json.loads(d["vars"] or "{}")
        d["is_latest"] = bool(d["is_latest"])
    elif cls is ProcessInstance:
        d["is_latest"] = bool(d["is_latest"])
    elif cls is Downlink:
        d["gensteps"] = bool(d["gensteps"])
    return cls(**d)


# ---------------------------------------------------------------- the database

class StateDB:
    """A connection to the state database; create one per thread/process."""

    def __init__(self, path: Path, timeout: float = 30.0, check_same_thread: bool = True) -> None:
        """``check_same_thread=False`` only for a connection used by one worker thread and
        closed by its owner after that thread ended (never used by two threads at once)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                    check_same_thread=check_same_thread)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> StateDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _migrate(self) -> None:
        # Every statement is idempotent (IF NOT EXISTS / OR IGNORE): concurrent openers are safe.
        self.conn.executescript(_SCHEMA)
        # columns added since a database was created (CREATE TABLE IF NOT EXISTS keeps the old
        # shape); a concurrent opener may add it first
        cols = {r[1] for r in self.conn.execute("PRAGMA table_info(downlinks)")}
        if "manifest_id" not in cols:
            try:
                self.conn.execute("ALTER TABLE downlinks ADD COLUMN manifest_id TEXT")
            except sqlite3.OperationalError as err:
                if "duplicate column" not in str(err):
                    raise
        self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction taken up front (BEGIN IMMEDIATE), so claims cannot interleave."""
        for attempt in range(200):
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) and "busy" not in str(err) or attempt == 199:
                    raise
                time.sleep(0.05)
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            # A failed statement or COMMIT (disk full, I/O error) may already have ended the
            # transaction; either way none of it stays and the connection is usable again.
            if self.conn.in_transaction:
                with suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            raise

    def q(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, args).fetchall()

    # ------------------------------------------------------------ events (structured log)

    def log_event(self, kind: str, dlid: str | None = None, **detail: Any) -> None:
        self.conn.execute("INSERT INTO events (t, kind, dlid, detail) VALUES (?,?,?,?)",
                          (time.time(), kind, dlid, json.dumps(detail, default=str)))

    # ------------------------------------------------------------ deliveries

    def claim_delivery(self, name: str, kind: str, dlid: str | None, path: str,
                       again: bool = False) -> bool:
        """Claim a delivery for verification; False if it is done or a live owner holds it.

        An accepted name is claimed again only with ``again``: the caller found a new
        delivery under the same name (an fcopy package sent again), which is then judged,
        never silently ignored."""
        me = Owner.me()
        with self.tx() as c:
            row = c.execute("SELECT * FROM deliveries WHERE name=?", (name,)).fetchone()
            if row is not None:
                if row["status"] == "ACCEPTED" and not again:
                    return False
                # REJECTED: the bad one was moved away, so this is a new delivery of the name
                same = (row["owner_pid"], row["owner_host"]) == (me.pid, me.host)
                if row["status"] == "CLAIMED" and not same and not owner_dead(row["owner_pid"], row["owner_host"], row["owner_start"])[0]:
                    return False
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
        with self.tx() as c:
            if pending is None:
                c.execute("DELETE FROM deliveries WHERE name=? AND status='CLAIMED' AND owner_pid=? "
                          "AND owner_host=?", (name, me.pid, me.host))
            else:
                c.execute("UPDATE deliveries SET status='PENDING', reason=?, owner_pid=NULL, "
                          "owner_host=NULL, owner_start=NULL WHERE name=? AND status='CLAIMED' "
                          "AND owner_pid=? AND owner_host=?", (pending, name, me.pid, me.host))

    def finish_delivery(self, name: str, status: str, path: str, reason: str | None = None) -> None:
        with self.tx() as c:
            c.execute("UPDATE deliveries SET status=?, reason=?, path=?, done=?, owner_pid=NULL "
                      "WHERE name=?", (status, reason, path, time.time(), name))

    def delivery(self, name: str) -> Delivery | None:
        row = self.conn.execute("SELECT name, kind, dlid, status, reason, path, seen, done "
                                "FROM deliveries WHERE name=?", (name,)).fetchone()
        return None if row is None else _row(Delivery, row)

    def deliveries(self, status: str | None = None) -> list[Delivery]:
        sql = "SELECT name, kind, dlid, status, reason, path, seen, done FROM deliveries"
        rows = self.q(sql + " WHERE status=? ORDER BY seen", (status,)) if status else \
            self.q(sql + " ORDER BY seen")
        return [_row(Delivery, r) for r in rows]

    # ------------------------------------------------------------ downlinks

    def register_downlink(self, dl: Downlink) -> bool:
        """Insert a downlink; False when it is already registered (exactly-once)."""
        with self.tx() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO downlinks (dlid, kind, level0, chunks, gensteps, scene, "
                "delivered, registered, manifest_id) VALUES (?,?,?,?,?,?,?,?,?)",
                (dl.dlid, dl.kind, dl.level0, dl.chunks, int(dl.gensteps), dl.scene,
                 dl.delivered, dl.registered, dl.manifest_id))
            if cur.rowcount:
                self.log_event("registered", dl.dlid, form=dl.kind,
                               latency_s=round(dl.registered - dl.delivered, 4))
            return bool(cur.rowcount)

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
        finished. The previous owner, when provably dead, is recorded in the note.
        """
        me = Owner.me()
        now = time.time()
        with self.tx() as c:
            row = c.execute("SELECT * FROM streams WHERE dlid=? AND task=? AND is_latest=1",
                            (dlid, task)).fetchone()
            if row is None:
                cur = c.execute(
                    "INSERT INTO streams (task, dlid, execution, status, owner_pid, owner_host, "
                    "owner_start, created, started) VALUES (?,?,?,?,?,?,?,?,?)",
                    (task, dlid, 1, "RUNNING", me.pid, me.host, me.start, now, now))
                self.log_event("stream_created", dlid, stream=cur.lastrowid)
                return _row(Stream, c.execute("SELECT * FROM streams WHERE id=?",
                                              (cur.lastrowid,)).fetchone()), ""
            st = _row(Stream, row)
            if st.status in ("SUCCESS", "FAILED", "CANCELED"):
                return None, f"stream {dlid} is {st.status}"
            if st.owner_pid is not None and (st.owner_pid, st.owner_host) != (me.pid, me.host):
                dead, why = owner_dead(st.owner_pid, st.owner_host, st.owner_start)
                if not dead or not steal_dead:
                    return None, f"stream {dlid} is held by {st.owner_host}:{st.owner_pid} ({why})"
                self.log_event("stream_resumed", dlid, stream=st.id, previous_owner=st.owner_pid,
                               why=why)
            c.execute("UPDATE streams SET owner_pid=?, owner_host=?, owner_start=?, status='RUNNING',"
                      " started=COALESCE(started, ?) WHERE id=?",
                      (me.pid, me.host, me.start, now, st.id))
            return _row(Stream, c.execute("SELECT * FROM streams WHERE id=?", (st.id,)).fetchone()), ""

    def release_stream(self, stream_id: int, status: str, note: str | None = None) -> None:
        ended = time.time() if status in ("SUCCESS", "FAILED", "CANCELED") else None
        with self.tx() as c:
            c.execute("UPDATE streams SET status=?, note=?, ended=?, owner_pid=NULL, owner_host=NULL,"
                      " owner_start=NULL WHERE id=?", (status, note, ended, stream_id))
            dlid = c.execute("SELECT dlid FROM streams WHERE id=?", (stream_id,)).fetchone()[0]
            self.log_event("stream_" + status.lower(), dlid, stream=stream_id, note=note)

    def set_stream_vars(self, stream_id: int, **values: Any) -> dict[str, Any]:
        with self.tx() as c:
            cur = json.loads(c.execute("SELECT vars FROM streams WHERE id=?", (stream_id,)).fetchone()[0])
            cur.update(values)
            c.execute("UPDATE streams SET vars=? WHERE id=?", (json.dumps(cur), stream_id))
            return cur

    def set_stream_note(self, stream_id: int, note: str | None) -> None:
        with self.tx() as c:
            c.execute("UPDATE streams SET note=? WHERE id=?", (note, stream_id))

    # ------------------------------------------------------------ process instances

    def instances(self, stream_id: int, latest_only: bool = True) -> list[ProcessInstance]:
        sql = "SELECT * FROM process_instances WHERE stream_id=?" + \
            (" AND is_latest=1" if latest_only else "") + " ORDER BY id"
        return [_row(ProcessInstance, r) for r in self.q(sql, (stream_id,))]

    def instance(self, pi_id: int) -> ProcessInstance:
        return _row(ProcessInstance, self.conn.execute(
            "SELECT * FROM process_instances WHERE id=?", (pi_id,)).fetchone())

    def create_instance(self, stream_id: int, process: str, key: str, max_retries: int,
                        auto_retry: int = 0, status: str = "WAITING") -> ProcessInstance:
        """New execution of (process, key): execution = 1 + the highest so far."""
        with self.tx() as c:
            prev = c.execute("SELECT MAX(execution) FROM process_instances WHERE stream_id=? AND "
                             "process=? AND key=?", (stream_id, process, key)).fetchone()[0] or 0
            c.execute("UPDATE process_instances SET is_latest=0 WHERE stream_id=? AND process=? "
                      "AND key=?", (stream_id, process, key))
            cur = c.execute(
                "INSERT INTO process_instances (stream_id, process, key, execution, status, "
                "auto_retry, max_retries, created) VALUES (?,?,?,?,?,?,?,?)",
                (stream_id, process, key, prev + 1, status, auto_retry, max_retries, time.time()))
            return _row(ProcessInstance, c.execute("SELECT * FROM process_instances WHERE id=?",
                                                   (cur.lastrowid,)).fetchone())

    def update_instance(self, pi_id: int, **fields: Any) -> None:
        if not fields:
            return
        cols = ", ".join(f"{k}=?" for k in fields)
        with self.tx() as c:
            c.execute(f"UPDATE process_instances SET {cols} WHERE id=?", (*fields.values(), pi_id))

    def retire_instances(self, pi_ids: Sequence[int]) -> None:
        """Mark instances as no longer latest (rollback): the runner makes new executions."""
        with self.tx() as c:
            c.executemany("UPDATE process_instances SET is_latest=0 WHERE id=?", [(i,) for i in pi_ids])

    # ------------------------------------------------------------ files

    def record_file(self, path: Path, producer: str, pi_id: int | None, dlid: str | None,
                    md5: str | None) -> FileRecord:
        st = os.stat(path)
        rec = FileRecord(str(path), dlid, producer, pi_id, st.st_size, md5, time.time())
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?)",
                      (rec.path, rec.dlid, rec.producer, rec.pi_id, rec.size, rec.md5, rec.created))
        return rec

    def forget_file(self, path: Path | str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM files WHERE path=?", (str(path),))

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


def open_db(path: Path) -> StateDB:
    return StateDB(path)
