"""The pipeline's records in the state database: streams (claimed by one runner at a
time), process instances (executions, retries, jobs) and the files they wrote.

Why a module of its own: this is the half of ``StateDB`` that the stream runner, rollback
and retention write; a stream claim is exactly-once, taken over from a provably dead owner
(with a ``takeover`` event when the owner was on another host), and every write recognises
its own earlier commit after a cut (engine/store/connection.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from engine.core.owner import Owner
from engine.store.connection import StateConnection
from engine.store.records import FileRecord, ProcessInstance, Stream, from_row

_PI_COLUMNS = frozenset(f.name for f in fields(ProcessInstance)) - {"id"}


class StreamState(StateConnection):
    """Streams, process instances and files (``StateDB`` has them)."""

    # ------------------------------------------------------------ streams

    def stream(self, stream_id: int) -> Stream:
        return from_row(
            Stream, self.conn.execute("SELECT * FROM streams WHERE id=?", (stream_id,)).fetchone()
        )

    def latest_stream(self, dlid: str, task: str = "halfpipe") -> Stream | None:
        row = self.conn.execute(
            "SELECT * FROM streams WHERE dlid=? AND task=? AND is_latest=1", (dlid, task)
        ).fetchone()
        return None if row is None else from_row(Stream, row)

    def streams(self, latest_only: bool = True) -> list[Stream]:
        sql = (
            "SELECT * FROM streams"
            + (" WHERE is_latest=1" if latest_only else "")
            + " ORDER BY dlid, execution"
        )
        return [from_row(Stream, r) for r in self.q(sql)]

    def claim_stream(
        self, dlid: str, task: str, steal_dead: bool = True
    ) -> tuple[Stream | None, str]:
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

    def _claim_stream(
        self, me: Owner, now: float, dlid: str, task: str, steal_dead: bool
    ) -> tuple[Stream | None, str]:
        with self.tx() as c:
            row = c.execute(
                "SELECT * FROM streams WHERE dlid=? AND task=? AND is_latest=1", (dlid, task)
            ).fetchone()
            if row is None:
                sid = self.backend.insert(
                    c,
                    "INSERT INTO streams (task, dlid, execution, status, owner_pid, owner_host, "
                    "owner_start, created, started) VALUES (?,?,?,?,?,?,?,?,?)",
                    (task, dlid, 1, "RUNNING", me.pid, me.host, me.start, now, now),
                )
                self.log_event("stream_created", dlid, stream=sid)
                return from_row(
                    Stream, c.execute("SELECT * FROM streams WHERE id=?", (sid,)).fetchone()
                ), ""
            st = from_row(Stream, row)
            if st.status in ("SUCCESS", "FAILED", "CANCELED"):
                return None, f"stream {dlid} is {st.status}"
            if st.owner_pid is not None and (st.owner_pid, st.owner_host) != (me.pid, me.host):
                dead, why, remote = self._judge_owner(st.owner_pid, st.owner_host, st.owner_start)
                if not dead or not steal_dead:
                    return None, f"stream {dlid} is held by {st.owner_host}:{st.owner_pid} ({why})"
                self.log_event(
                    "stream_resumed", dlid, stream=st.id, previous_owner=st.owner_pid, why=why
                )
                if remote:
                    old = f"{st.owner_host}:{st.owner_pid}"
                    self._takeover("stream", dlid, old, me, why, stream=st.id)
                    c.execute(
                        "UPDATE streams SET note=? WHERE id=?",
                        (f"taken over from {old} by {me}: {why}", st.id),
                    )
            c.execute(
                "UPDATE streams SET owner_pid=?, owner_host=?, owner_start=?, status='RUNNING',"
                " started=COALESCE(started, ?), ended=NULL WHERE id=?",
                (me.pid, me.host, me.start, now, st.id),
            )
            return from_row(
                Stream, c.execute("SELECT * FROM streams WHERE id=?", (st.id,)).fetchone()
            ), ""

    def release_stream(self, stream_id: int, status: str, note: str | None = None) -> None:
        # a stream that stops (TERMINATED too: nothing runs until it is claimed again) shows
        # when it stopped, not a clock that keeps running; WAITING (held) has no end
        ended = time.time() if status in ("SUCCESS", "FAILED", "CANCELED", "TERMINATED") else None

        def body(again: bool) -> None:
            with self.tx() as c:
                row = c.execute(
                    "SELECT dlid, status, note, ended, owner_pid FROM streams WHERE id=?",
                    (stream_id,),
                ).fetchone()
                if again and (row["status"], row["note"], row["ended"], row["owner_pid"]) == (
                    status,
                    note,
                    ended,
                    None,
                ):
                    return  # released by the attempt whose COMMIT was cut
                c.execute(
                    "UPDATE streams SET status=?, note=?, ended=?, owner_pid=NULL, "
                    "owner_host=NULL, owner_start=NULL WHERE id=?",
                    (status, note, ended, stream_id),
                )
                self.log_event("stream_" + status.lower(), row["dlid"], stream=stream_id, note=note)

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
                c.execute(
                    "UPDATE streams SET status='WAITING', ended=NULL, note=? WHERE id=?",
                    (note, stream_id),
                )
                dlid = c.execute("SELECT dlid FROM streams WHERE id=?", (stream_id,)).fetchone()[0]
                self.log_event("rollback", dlid, t, stream=stream_id, instances=list(retire))

        self._retrying(body)

    def set_stream_vars(self, stream_id: int, **values: Any) -> dict[str, Any]:
        def body(_again: bool) -> dict[str, Any]:  # idempotent: the same keys set again
            with self.tx() as c:
                cur = json.loads(
                    c.execute("SELECT vars FROM streams WHERE id=?", (stream_id,)).fetchone()[0]
                )
                cur.update(values)
                c.execute("UPDATE streams SET vars=? WHERE id=?", (json.dumps(cur), stream_id))
                return dict(cur)

        return self._retrying(body)

    def set_stream_note(self, stream_id: int, note: str | None) -> None:
        self._update("UPDATE streams SET note=? WHERE id=?", (note, stream_id))

    # ------------------------------------------------------------ process instances

    def instances(self, stream_id: int, latest_only: bool = True) -> list[ProcessInstance]:
        sql = (
            "SELECT * FROM process_instances WHERE stream_id=?"
            + (" AND is_latest=1" if latest_only else "")
            + " ORDER BY id"
        )
        return [from_row(ProcessInstance, r) for r in self.q(sql, (stream_id,))]

    def instance(self, pi_id: int) -> ProcessInstance:
        return from_row(
            ProcessInstance,
            self.conn.execute("SELECT * FROM process_instances WHERE id=?", (pi_id,)).fetchone(),
        )

    def latest_instance(self, stream_id: int, process: str, key: str) -> ProcessInstance | None:
        """The latest execution of (process, key) in a stream; None when there is none."""
        row = self.conn.execute(
            "SELECT * FROM process_instances WHERE stream_id=? AND process=? "
            "AND key=? AND is_latest=1",
            (stream_id, process, key),
        ).fetchone()
        return None if row is None else from_row(ProcessInstance, row)

    def create_instance(
        self,
        stream_id: int,
        process: str,
        key: str,
        max_retries: int,
        auto_retry: int = 0,
        status: str = "WAITING",
    ) -> ProcessInstance:
        """New execution of (process, key): execution = 1 + the highest so far. A re-run
        after a cut COMMIT that had made it returns that one (its creation time is this
        call's), never a second execution."""
        created = time.time()

        def body(again: bool) -> ProcessInstance:
            with self.tx() as c:
                if again:
                    row = c.execute(
                        "SELECT * FROM process_instances WHERE stream_id=? AND "
                        "process=? AND key=? AND is_latest=1 AND created=?",
                        (stream_id, process, key, created),
                    ).fetchone()
                    if row is not None:
                        return from_row(ProcessInstance, row)
                prev = (
                    c.execute(
                        "SELECT MAX(execution) FROM process_instances WHERE "
                        "stream_id=? AND process=? AND key=?",
                        (stream_id, process, key),
                    ).fetchone()[0]
                    or 0
                )
                c.execute(
                    "UPDATE process_instances SET is_latest=0 WHERE stream_id=? AND "
                    "process=? AND key=?",
                    (stream_id, process, key),
                )
                pi_id = self.backend.insert(
                    c,
                    "INSERT INTO process_instances (stream_id, process, key, execution, "
                    "status, auto_retry, max_retries, created) VALUES (?,?,?,?,?,?,?,?)",
                    (stream_id, process, key, prev + 1, status, auto_retry, max_retries, created),
                )
                return from_row(
                    ProcessInstance,
                    c.execute("SELECT * FROM process_instances WHERE id=?", (pi_id,)).fetchone(),
                )

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
        self._update(
            "UPDATE process_instances SET launcher=?, job_id=? WHERE id=?",
            (launcher, job_id, pi_id),
        )

    def retire_instances(self, pi_ids: Sequence[int]) -> None:
        """Mark instances as no longer latest (rollback): the runner makes new executions."""

        def body(_again: bool) -> None:  # idempotent
            with self.tx() as c:
                for pi_id in pi_ids:
                    c.execute("UPDATE process_instances SET is_latest=0 WHERE id=?", (pi_id,))

        self._retrying(body)

    # ------------------------------------------------------------ files

    def record_file(
        self, path: Path, producer: str, pi_id: int | None, dlid: str | None, md5: str | None
    ) -> FileRecord:
        st = os.stat(path)
        rec = FileRecord(str(path), dlid, producer, pi_id, st.st_size, md5, time.time())
        self._update(
            "INSERT INTO files (path, dlid, producer, pi_id, size, md5, created) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT (path) DO UPDATE SET dlid=excluded.dlid, "
            "producer=excluded.producer, pi_id=excluded.pi_id, size=excluded.size, "
            "md5=excluded.md5, created=excluded.created",
            (rec.path, rec.dlid, rec.producer, rec.pi_id, rec.size, rec.md5, rec.created),
        )
        return rec

    def forget_file(self, path: Path | str) -> None:
        self._update("DELETE FROM files WHERE path=?", (str(path),))

    def file(self, path: Path | str) -> FileRecord | None:
        row = self.conn.execute("SELECT * FROM files WHERE path=?", (str(path),)).fetchone()
        return None if row is None else from_row(FileRecord, row)

    def files(self, dlid: str | None = None, producer: str | None = None) -> list[FileRecord]:
        sql, args = "SELECT * FROM files WHERE 1=1", []
        if dlid is not None:
            sql += " AND dlid=?"
            args.append(dlid)
        if producer is not None:
            sql += " AND producer=?"
            args.append(producer)
        return [from_row(FileRecord, r) for r in self.q(sql + " ORDER BY path", args)]
