"""Read models: the queries behind the console's tables, the CLI listings and the daemon.

Why a module of its own: these reads span tables (a downlink with its latest stream, the
files it produced, how far its chunks got) and run often (a console refresh every few
hundred milliseconds with 10,000 downlinks), so they are aggregate queries tuned once here,
returning plain values and tuples, never one query per downlink. Records and single-table
reads are in ``db.py``; ``ReadQueries`` is mixed into ``StateDB``.

Portable SQL, written once for every backend. Which downlinks were registered since the
last read is told by ``downlinks.seq`` (registration order, set under the write lock).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, NamedTuple

from engine.store.backend import Backend
from engine.store.records import FINAL_STREAM

_ROWS_SQL = """
SELECT d.dlid, d.chunks, d.delivered,
       s.id AS sid, s.status, s.execution, s.note, s.owner_pid, s.owner_host, s.owner_start,
       d.seq
FROM downlinks d LEFT JOIN streams s ON s.dlid = d.dlid AND s.is_latest = 1
"""
_DETAIL_SQL = """
SELECT s.id, s.vars,
       (SELECT COUNT(*) FROM process_instances p WHERE p.stream_id = s.id AND p.is_latest = 1
          AND p.process = ? AND p.status IN ('SUCCESS', 'SKIPPED')) AS done,
       (SELECT COALESCE(SUM(f.size), 0) FROM files f WHERE f.dlid = s.dlid) AS bytes
FROM streams s WHERE s.id IN ({})
"""
_NO_DETAIL = (0, 0, 0, 0)


class DownlinkFacts(NamedTuple):
    """One downlink with its latest stream, as the downlinks table needs it."""

    dlid: str
    chunks: int  # chunks the delivery declared
    delivered: float
    stream_id: int | None  # None: no stream yet
    status: str | None  # the latest stream's status
    execution: int | None
    note: str | None
    owner_pid: int | None
    owner_host: str | None
    owner_start: float | None
    seq: int  # registration order (downlinks.seq)
    stream_chunks: int  # chunks the stream planned (0 before launchChunks ran)
    runs: int  # runs the stream touched
    chunks_done: int  # latest chunk instances done (SUCCESS or SKIPPED)
    bytes: int  # bytes of the files recorded for the downlink


class ReadQueries:
    """The read models, for a class holding ``conn`` and ``backend`` (``StateDB``)."""

    conn: Any
    backend: Backend

    def downlink_facts(
        self,
        after_seq: int,
        after_stream: int,
        ended_since: float,
        also: Iterable[str] = (),
        chunk_process: str = "makeEvt",
    ) -> list[DownlinkFacts]:
        """Downlinks whose row may have changed since a previous read.

        Those registered after ``after_seq``, and those whose latest stream was created
        after ``after_stream``, ended at or after ``ended_since``, or is not final; plus the
        downlinks in ``also``. With zeros: every downlink. ``chunk_process`` is the process
        whose finished instances count as chunks done.
        """
        cur = self.backend.tuple_cursor(self.conn)
        base = cur.execute(_ROWS_SQL + " WHERE d.seq > ?", (after_seq,)).fetchall()
        moved = {
            d
            for (d,) in cur.execute(
                "SELECT dlid FROM streams WHERE is_latest = 1 AND (id > ? OR ended >= ? OR status "
                f"NOT IN ({','.join('?' * len(FINAL_STREAM))}))",
                (after_stream, ended_since, *FINAL_STREAM),
            )
        }
        moved |= set(also)
        moved -= {r[0] for r in base}
        step = self.backend.MAX_PARAMS
        moved_list = sorted(moved)
        for i in range(0, len(moved_list), step):
            part = moved_list[i : i + step]
            base += cur.execute(
                _ROWS_SQL + f" WHERE d.dlid IN ({','.join('?' * len(part))})", part
            ).fetchall()
        details: dict[int, tuple[int, int, int, int]] = {}
        sids = [r[3] for r in base if r[3] is not None]
        for i in range(0, len(sids), step - 1):
            part = sids[i : i + step - 1]
            for sid, vars_json, done, size in cur.execute(
                _DETAIL_SQL.format(",".join("?" * len(part))), (chunk_process, *part)
            ):
                v = json.loads(vars_json or "{}")
                details[sid] = (
                    len(v.get("chunks") or []),
                    len(v.get("runs") or []),
                    int(done),
                    int(size),
                )
        return [DownlinkFacts._make((*r, *details.get(r[3], _NO_DETAIL))) for r in base]

    def typical_durations(self, recent: int = 500) -> dict[str, float]:
        """Mean wall time of the ``recent`` latest successful executions, per process."""
        rows = self.conn.execute(
            "SELECT process, AVG(ended - started) FROM (SELECT process, started, ended "
            "FROM process_instances WHERE status = 'SUCCESS' AND started IS NOT NULL "
            "AND ended IS NOT NULL ORDER BY id DESC LIMIT ?) recent GROUP BY process",
            (recent,),
        ).fetchall()
        return {p: float(d) for p, d in rows if d is not None}

    def streams_to_pick_up(self, task: str) -> list[str]:
        """Registered downlinks that need a runner for ``task``: no stream yet, or a latest
        stream that is WAITING (new, rolled back), RUNNING (its runner may be gone) or
        TERMINATED (resumable); by id."""
        rows = self.conn.execute(
            "SELECT d.dlid FROM downlinks d LEFT JOIN streams s ON s.dlid = d.dlid "
            "AND s.is_latest = 1 AND s.task = ? WHERE s.id IS NULL "
            "OR s.status IN ('WAITING', 'RUNNING', 'TERMINATED') ORDER BY d.dlid",
            (task,),
        ).fetchall()
        return [str(r[0]) for r in rows]

    # ------------------------------------------------------------ metrics and health

    def stream_status_counts(self) -> dict[str, int]:
        """Latest streams by status (engine/daemon/exporter.py)."""
        rows = self.conn.execute(
            "SELECT status, COUNT(*) FROM streams WHERE is_latest = 1 GROUP BY status"
        ).fetchall()
        return {str(s): int(n) for s, n in rows}

    def instance_status_counts(self) -> dict[tuple[str, str], int]:
        """Latest process instances of latest streams by (process, status)."""
        rows = self.conn.execute(
            "SELECT p.process, p.status, COUNT(*) FROM process_instances p "
            "JOIN streams s ON s.id = p.stream_id AND s.is_latest = 1 "
            "WHERE p.is_latest = 1 GROUP BY p.process, p.status"
        ).fetchall()
        return {(str(p), str(s)): int(n) for p, s, n in rows}

    def delivery_status_counts(self) -> dict[str, int]:
        """Deliveries by status (CLAIMED, PENDING, ACCEPTED, REJECTED)."""
        rows = self.conn.execute(
            "SELECT status, COUNT(*) FROM deliveries GROUP BY status"
        ).fetchall()
        return {str(s): int(n) for s, n in rows}

    def oldest_unsettled_delivery(self) -> float | None:
        """When the oldest delivery still PENDING or CLAIMED (seen, not yet registered or
        rejected) was first seen; None when there is none."""
        row = self.conn.execute(
            "SELECT MIN(seen) FROM deliveries WHERE status IN ('PENDING', 'CLAIMED')"
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def recent_registration_latencies(self, recent: int = 100) -> list[float]:
        """Seconds from delivery complete (seen and verified) to downlink registered, for the
        ``recent`` latest registrations, newest first."""
        rows = self.conn.execute(
            "SELECT registered - delivered FROM downlinks ORDER BY registered DESC LIMIT ?",
            (recent,),
        ).fetchall()
        return [max(0.0, float(r[0])) for r in rows if r[0] is not None]

    def running_streams_activity(self) -> list[RunningStream]:
        """Every latest stream that is RUNNING, with its owner and its last activity: the
        latest of the stream's start and its instances' created, submitted, started and
        ended times (``skydeck-engine health``'s stuck check; a job waiting in a batch queue
        has no start yet, its submission is its activity)."""
        rows = self.conn.execute(
            "SELECT s.id, s.dlid, s.owner_pid, s.owner_host, s.owner_start, "
            "COALESCE(s.started, s.created), "
            "(SELECT MAX(p.created) FROM process_instances p WHERE p.stream_id = s.id), "
            "(SELECT MAX(p.submitted) FROM process_instances p WHERE p.stream_id = s.id), "
            "(SELECT MAX(p.started) FROM process_instances p WHERE p.stream_id = s.id), "
            "(SELECT MAX(p.ended) FROM process_instances p WHERE p.stream_id = s.id), "
            "(SELECT COUNT(*) FROM process_instances p WHERE p.stream_id = s.id "
            "AND p.is_latest = 1 AND p.status IN ('QUEUED', 'SUBMITTED', 'RUNNING', "
            "'TERMINATING')) "
            "FROM streams s WHERE s.is_latest = 1 AND s.status = 'RUNNING' ORDER BY s.id"
        ).fetchall()
        out = []
        for sid, dlid, pid, host, start, *times, active in rows:
            last = max(float(t or 0.0) for t in times)
            out.append(RunningStream(int(sid), str(dlid), pid, host, start, last, int(active)))
        return out

    def failed_streams(self) -> list[FailedStream]:
        """Every latest stream that is FAILED, with its latest failed instance (process,
        note, exit code): what an alarm names (engine/pipeline/alarms.py)."""
        pick = (
            "(SELECT p.{} FROM process_instances p WHERE p.stream_id = s.id AND "
            "p.is_latest = 1 AND p.status = 'FAILED' ORDER BY p.ended DESC, p.id DESC LIMIT 1)"
        )
        rows = self.conn.execute(
            "SELECT s.id, s.dlid, s.execution, s.note, COALESCE(s.ended, s.created), "
            f"{pick.format('process')}, {pick.format('note')}, {pick.format('exit_code')} "
            "FROM streams s WHERE s.is_latest = 1 AND s.status = 'FAILED' ORDER BY s.dlid"
        ).fetchall()
        return [
            FailedStream(
                int(sid),
                str(dlid),
                int(ex),
                note,
                float(ended),
                proc,
                pnote,
                None if code is None else int(code),
            )
            for sid, dlid, ex, note, ended, proc, pnote, code in rows
        ]

    def events_of(self, kind: str, dlid: str | None = None) -> list[tuple[float, str | None, dict]]:
        """(time, dlid, detail) of the events of ``kind`` (of one downlink), oldest first:
        the acknowledgements an alarm is checked against (few rows: an operator's)."""
        sql = "SELECT t, dlid, detail FROM events WHERE kind = ?"
        args: tuple[Any, ...] = (kind,)
        if dlid is not None:
            sql += " AND dlid = ?"
            args += (dlid,)
        out: list[tuple[float, str | None, dict]] = []
        for t, d, detail in self.conn.execute(sql + " ORDER BY t, id", args).fetchall():
            try:
                doc = json.loads(detail)
            except ValueError:
                doc = {}
            out.append(
                (float(t), None if d is None else str(d), doc if isinstance(doc, dict) else {})
            )
        return out

    def failure_counts(self) -> tuple[dict[str, int], int]:
        """Failures ever recorded: FAILED process instances by process, every execution
        (a failure a retry or a rollback fixed still counts), and ``stream_failed`` events
        (streams that ended FAILED, until retention trims the events table)."""
        rows = self.conn.execute(
            "SELECT process, COUNT(*) FROM process_instances WHERE status = 'FAILED' "
            "GROUP BY process"
        ).fetchall()
        n = self.conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'stream_failed'").fetchone()
        return {str(p): int(c) for p, c in rows}, int(n[0])

    # ------------------------------------------------------------ retention

    def latest_stream_states(self) -> list[tuple[str, int, str, float, float | None, float | None]]:
        """(dlid, id, status, created, started, ended) of every latest stream: what a prune
        needs to tell finished downlinks, without building records (10,000s of rows)."""
        cur = self.backend.tuple_cursor(self.conn)
        return [
            (str(d), int(i), str(s), float(c), st, e)
            for d, i, s, c, st, e in cur.execute(
                "SELECT dlid, id, status, created, started, ended FROM streams WHERE is_latest = 1"
            )
        ]

    def instance_logs(self, dlids: Iterable[str]) -> list[tuple[str, str]]:
        """(dlid, log path) of every process instance with a log, of every stream and
        execution of the downlinks ``dlids`` (engine/pipeline/retention.py: the logs the
        engine wrote), in id order."""
        wanted = sorted(set(dlids))
        out: list[tuple[str, str]] = []
        step = self.backend.MAX_PARAMS
        for i in range(0, len(wanted), step):
            part = wanted[i : i + step]
            rows = self.conn.execute(
                "SELECT s.dlid, p.log_path FROM process_instances p "
                "JOIN streams s ON s.id = p.stream_id "
                f"WHERE p.log_path IS NOT NULL AND s.dlid IN ({','.join('?' * len(part))}) "
                "ORDER BY p.id",
                part,
            ).fetchall()
            out += [(str(d), str(lp)) for d, lp in rows]
        return out

    def files_by(
        self, dlids: Iterable[str], producers: Iterable[str]
    ) -> list[tuple[str, str, int, str | None]]:
        """(path, dlid, recorded size, recorded MD5) of the files the processes ``producers``
        wrote for the downlinks ``dlids`` and that are still recorded (cleanup forgets what
        it removes): the chunk outputs a finished stream left (engine/pipeline/retention.py)."""
        wanted, procs = sorted(set(dlids)), sorted(set(producers))
        out: list[tuple[str, str, int, str | None]] = []
        step = self.backend.MAX_PARAMS - len(procs)
        if not procs or step < 1:
            return out
        for i in range(0, len(wanted), step):
            part = wanted[i : i + step]
            rows = self.conn.execute(
                f"SELECT path, dlid, size, md5 FROM files WHERE producer IN "
                f"({','.join('?' * len(procs))}) AND dlid IN ({','.join('?' * len(part))}) "
                "ORDER BY path",
                (*procs, *part),
            ).fetchall()
            out += [(str(p), str(d), int(n), None if m is None else str(m)) for p, d, n, m in rows]
        return out

    def events_before(self, before: float) -> EventsSpan:
        """The rows of the events table older than ``before`` (epoch seconds): how many,
        their id range, and the bytes of their text (kind, dlid, detail)."""
        row = self.conn.execute(
            "SELECT COUNT(*), MIN(id), MAX(id), "
            "COALESCE(SUM(LENGTH(kind) + COALESCE(LENGTH(dlid), 0) + LENGTH(detail)), 0) "
            "FROM events WHERE t < ?",
            (before,),
        ).fetchone()
        n, lo, hi, size = row
        return EventsSpan(
            int(n), None if lo is None else int(lo), None if hi is None else int(hi), int(size)
        )


class EventsSpan(NamedTuple):
    """Rows of the events table older than a cut-off (``ReadQueries.events_before``)."""

    rows: int
    first_id: int | None
    last_id: int | None
    bytes: int  # the rows' text; the database file reuses, not returns, them


class RunningStream(NamedTuple):
    """A RUNNING stream as the health check sees it."""

    stream_id: int
    dlid: str
    owner_pid: int | None
    owner_host: str | None
    owner_start: float | None
    last_activity: float  # epoch seconds: start, or an instance created/started/ended
    active_jobs: int  # latest instances QUEUED, SUBMITTED, RUNNING or TERMINATING


class FailedStream(NamedTuple):
    """A latest stream that ended FAILED, as an alarm names it."""

    stream_id: int
    dlid: str
    execution: int
    note: str | None
    ended: float
    process: str | None  # its latest failed instance's process (None: none recorded)
    process_note: str | None  # that instance's note (its error line)
    exit_code: int | None
