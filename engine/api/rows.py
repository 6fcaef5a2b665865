"""The downlinks table's read model: one row per downlink, cheap to refresh.

Why this module exists: the console's downlinks table and any other front end need every
downlink as a row (state, chunks done/total, runs, bytes, age, note) from a few aggregate
queries, not one query per downlink, so a refresh stays cheap with 10,000 downlinks and
100,000 process instances; ``DownlinkRows`` re-reads only the downlinks that may have moved.
It is its own small module so that importing the row type (the console's first paint) stays
light. Nothing here imports Textual (tests/test_headless.py).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.ids import dlid_date, is_dlid
from engine.core.workspace import Workspace
from engine.intake import deliveries
from engine.store.state import StateDB, owner_dead

STATES = ("arrived", "running", "staged", "failed", "rejected")
_STREAM_STATE = {"WAITING": "arrived", "RUNNING": "running", "SUCCESS": "staged",
                 "FAILED": "failed", "TERMINATED": "failed", "CANCELED": "failed"}


@dataclass(frozen=True)
class DownlinkRow:
    """What the downlinks table shows for one downlink (frozen: compared to find changes)."""

    dlid: str
    date: str               # YYYY-MM-DD decoded from YYMMDD
    state: str              # arrived | running | staged | failed | rejected
    stream: str             # the latest stream's Pipeline-II status, "-" without one
    execution: int          # the latest stream's execution number (0 without one)
    chunks_done: int
    chunks_total: int
    runs: int
    bytes: int              # bytes of the files the pipeline recorded for it
    since: float            # delivered (registered) or seen (incoming, rejected) time
    note: str               # stream note, rejection reason (reason first), or why it is stuck
    kept: str = ""          # rejected: where its files were kept (incoming/rejected/...)


@functools.lru_cache(maxsize=65536)
def _date(dlid: str) -> str:
    """YYYY-MM-DD of a downlink id (cached: strptime dominated a 10,000-row refresh)."""
    try:
        return dlid_date(dlid).isoformat()
    except ValueError:
        return "?"


_ROWS_SQL = """
SELECT d.dlid, d.chunks, d.delivered,
       s.id AS sid, s.status, s.execution, s.note, s.owner_pid, s.owner_host, s.owner_start,
       d.rowid
FROM downlinks d LEFT JOIN streams s ON s.dlid = d.dlid AND s.is_latest = 1
"""
_DETAIL_SQL = """
SELECT s.id, s.vars,
       (SELECT COUNT(*) FROM process_instances p WHERE p.stream_id = s.id AND p.is_latest = 1
          AND p.process = 'makeEvt' AND p.status IN ('SUCCESS', 'SKIPPED')) AS done,
       (SELECT COALESCE(SUM(f.size), 0) FROM files f WHERE f.dlid = s.dlid) AS bytes
FROM streams s WHERE s.id IN ({})
"""
_FINAL = ("SUCCESS", "FAILED", "TERMINATED", "CANCELED")
ENDED_SLACK_S = 5.0  # clock skew between writers and this reader


class DownlinkRows:
    """Every downlink's row, re-reading only the downlinks whose stream may have moved.

    Why this is enough: the stream runner only writes to streams it claimed (status RUNNING),
    a rollback first sets the stream back to WAITING, and a new execution is a new stream
    row. So after the first read, a refresh re-reads (1) downlinks registered since (rowid),
    (2) streams created since (id), (3) streams not in a final state, (4) the streams that
    were not final last time (they may have just finished), and (5) streams that ended since
    the last read (final, active and final again in between). Rows of finished streams are
    reused as they are. Keep one per thread (it holds no connection).
    """

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._rows: dict[str, DownlinkRow] = {}
        self._open: set[str] = set()   # downlinks whose stream was not final at the last read
        self._dl_rowid = 0
        self._stream_id = 0
        self._read_at = 0.0

    def _base(self, cur: Any, where: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        return cur.execute(_ROWS_SQL + where, args).fetchall()

    def read(self, db: StateDB, incoming: bool = True) -> dict[str, DownlinkRow]:
        cur = db.conn.cursor()
        cur.row_factory = None  # plain tuples: cheaper to fetch
        base = self._base(cur, " WHERE d.rowid > ?", (self._dl_rowid,))
        # a stream that went final -> active -> final between two reads has a fresh `ended`
        since = self._read_at - ENDED_SLACK_S
        self._read_at = time.time()
        moved = {d for (d,) in cur.execute(
            "SELECT dlid FROM streams WHERE is_latest = 1 AND (id > ? OR ended >= ? OR status "
            f"NOT IN ({','.join('?' * len(_FINAL))}))", (self._stream_id, since, *_FINAL))}
        moved |= self._open
        moved -= {r[0] for r in base}
        moved_list = sorted(moved)
        for i in range(0, len(moved_list), 900):  # SQLite's bound-parameter limit
            part = moved_list[i:i + 900]
            base += self._base(cur, f" WHERE d.dlid IN ({','.join('?' * len(part))})", part)
        details: dict[int, tuple[int, int, int, int]] = {}
        sids = [r[3] for r in base if r[3] is not None]
        for i in range(0, len(sids), 900):
            part = sids[i:i + 900]
            for sid, vars_json, done, size in cur.execute(
                    _DETAIL_SQL.format(",".join("?" * len(part))), part):
                v = json.loads(vars_json or "{}")
                details[sid] = (len(v.get("chunks") or []), len(v.get("runs") or []),
                                int(done), int(size))
        for r in base:
            dlid, _chunks, delivered, sid, status, execution, note, opid, ohost, ostart, rowid = r
            self._dl_rowid = max(self._dl_rowid, rowid)
            if sid is not None:
                self._stream_id = max(self._stream_id, sid)
            nchunks, nruns, done, size = details.get(sid, (0, 0, 0, 0))
            note = note or ""
            if status == "RUNNING" and opid is not None:
                dead, why = owner_dead(opid, ohost, ostart)
                if dead:
                    note = f"STUCK: runner gone ({why})"
            self._rows[dlid] = DownlinkRow(
                dlid, _date(dlid), _STREAM_STATE.get(status, "arrived") if status else "arrived",
                status or "-", execution or 0, done, nchunks or _chunks, nruns, size, delivered,
                note)
            if status is not None and status not in _FINAL:
                self._open.add(dlid)
            else:
                self._open.discard(dlid)
        out = dict(self._rows)
        for d in db.deliveries("REJECTED"):
            key = d.dlid or d.name
            if key in out:  # e.g. a second delivery of a registered id: its own row
                key = d.name
            if key not in out:
                out[key] = DownlinkRow(key, _date(d.dlid) if d.dlid else "?", "rejected", "-", 0,
                                       0, 0, 0, 0, d.seen, reason_first(d.reason or ""), d.path)
        if incoming:
            # why a delivery waits (files missing, still being written), as the daemon recorded
            pending = {d.name: d.reason for d in db.deliveries("PENDING") if d.reason}
            for c in deliveries.scan(self.ws):
                if c.stem not in out and is_dlid(c.stem):
                    why = pending.get(c.name)
                    out[c.stem] = DownlinkRow(c.stem, _date(c.stem), "arrived", "-", 0, 0, 0, 0,
                                              0, _mtime(c.manifest),
                                              f"pending: {why}" if why else f"in incoming/{c.kind}")
        return out


def reason_first(reason: str) -> str:
    """``"/long/path/file: problem"`` as ``"problem (/long/path/file)"``.

    A rejection reason is ``str(BadInput)``, which leads with the file; in a narrow column
    only the path would show. The problem comes first, the file after it.
    """
    path, sep, problem = reason.partition(": ")
    if sep and path.startswith(("/", "./", "~")) and problem:
        return f"{problem} ({path})"
    return reason


def downlink_rows(ws: Workspace, db: StateDB, incoming: bool = True) -> dict[str, DownlinkRow]:
    """Every downlink as a row, plus deliveries waiting in incoming/ and rejected ones.

    A stream marked RUNNING whose owner is provably dead is *stuck*: its note says so, which
    is how an operator finds it (``skydeck-engine run`` or the console's run resumes it).
    A poller should keep a ``DownlinkRows`` instead: it re-reads only what may have changed.
    """
    return DownlinkRows(ws).read(db, incoming)


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return time.time()

