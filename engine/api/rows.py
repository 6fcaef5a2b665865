"""The downlinks table's read model: one row per downlink, cheap to refresh.

Why this module exists: the console's downlinks table and any other front end need every
downlink as a row (state, chunks done/total, runs, bytes, age, note) from a few aggregate
queries, not one query per downlink, so a refresh stays cheap with 10,000 downlinks and
100,000 process instances; ``DownlinkRows`` re-reads only the downlinks that may have moved.
It is its own small module so that importing the row type (the console's first paint) stays
light. Nothing here imports Textual (tests/test_headless.py).
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import SkydeckError
from engine.core.ids import dlid_date, is_dlid
from engine.core.owner import owner_dead
from engine.core.workspace import Workspace
from engine.intake import inbox
from engine.pipeline.halts import held_note
from engine.pipeline.task import load_task
from engine.store import StateDB

STATES = ("arrived", "running", "stopped", "staged", "failed", "rejected")
_STREAM_STATE = {
    "WAITING": "arrived",
    "RUNNING": "running",
    "SUCCESS": "staged",
    "FAILED": "failed",
    "TERMINATED": "stopped",  # stopped cleanly (daemon stopped): resumes, not a failure
    "CANCELED": "failed",
}


@dataclass(frozen=True)
class DownlinkRow:
    """What the downlinks table shows for one downlink (frozen: compared to find changes)."""

    dlid: str
    date: str  # YYYY-MM-DD decoded from YYMMDD
    state: str  # arrived | running | stopped | staged | failed | rejected
    stream: str  # the latest stream's Pipeline-II status, "-" without one
    execution: int  # the latest stream's execution number (0 without one)
    chunks_done: int
    chunks_total: int
    runs: int
    bytes: int  # bytes of the files the pipeline recorded for it
    since: float  # delivered (registered) or seen (incoming, rejected) time
    note: str  # stream note, rejection reason (reason first), or why it is stuck
    kept: str = ""  # rejected: where its files were kept (incoming/rejected/...)


@functools.lru_cache(maxsize=65536)
def _date(dlid: str) -> str:
    """YYYY-MM-DD of a downlink id (cached: strptime dominated a 10,000-row refresh)."""
    try:
        return dlid_date(dlid).isoformat()
    except ValueError:
        return "?"


_FINAL = ("SUCCESS", "FAILED", "TERMINATED", "CANCELED")
ENDED_SLACK_S = 5.0  # clock skew between writers and this reader


def chunk_process(ws: Workspace) -> str:
    """The process of the workspace's task that runs once per chunk (``foreach = "chunks"``):
    its finished instances are a downlink's chunks done (``makeEvt`` in halfpipe, also when
    the task file cannot be read)."""
    with contextlib.suppress(SkydeckError):
        for p in load_task(ws).processes:
            if p.foreach == "chunks":
                return p.name
    return "makeEvt"


class DownlinkRows:
    """Every downlink's row, re-reading only the downlinks whose stream may have moved.

    Why this is enough: the stream runner only writes to streams it claimed (status RUNNING),
    a rollback first sets the stream back to WAITING, and a new execution is a new stream
    row. So after the first read, a refresh re-reads (1) downlinks registered since (their seq),
    (2) streams created since (id), (3) streams not in a final state, (4) the streams that
    were not final last time (they may have just finished), and (5) streams that ended since
    the last read (final, active and final again in between). Rows of finished streams are
    reused as they are. Keep one per thread (it holds no connection).
    """

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.chunk_process = chunk_process(ws)
        self._rows: dict[str, DownlinkRow] = {}
        self._open: set[str] = set()  # downlinks whose stream was not final at the last read
        self._dl_seq = 0
        self._stream_id = 0
        self._read_at = 0.0

    def read(self, db: StateDB, incoming: bool = True) -> dict[str, DownlinkRow]:
        # a stream that went final -> active -> final between two reads has a fresh `ended`
        since = self._read_at - ENDED_SLACK_S
        self._read_at = time.time()
        for f in db.downlink_facts(
            self._dl_seq, self._stream_id, since, self._open, chunk_process=self.chunk_process
        ):
            self._dl_seq = max(self._dl_seq, f.seq)
            if f.stream_id is not None:
                self._stream_id = max(self._stream_id, f.stream_id)
            note, status = f.note or "", f.status
            if status == "RUNNING" and f.owner_pid is not None:
                dead, why = owner_dead(f.owner_pid, f.owner_host, f.owner_start)
                if dead:
                    note = f"STUCK: runner gone ({why})"
            elif status in (None, "WAITING"):
                note = held_note(self.ws, f.dlid) or note  # a halt holds it: say which
            self._rows[f.dlid] = DownlinkRow(
                f.dlid,
                _date(f.dlid),
                _STREAM_STATE.get(status, "arrived") if status else "arrived",
                status or "-",
                f.execution or 0,
                f.chunks_done,
                f.stream_chunks or f.chunks,
                f.runs,
                f.bytes,
                f.delivered,
                note,
            )
            if status is not None and status not in _FINAL:
                self._open.add(f.dlid)
            else:
                self._open.discard(f.dlid)
        out = dict(self._rows)
        for d in db.deliveries("REJECTED"):
            key = d.dlid or d.name
            if key in out:  # e.g. a second delivery of a registered id: its own row
                key = d.name
            if key not in out:
                out[key] = DownlinkRow(
                    key,
                    _date(d.dlid) if d.dlid else "?",
                    "rejected",
                    "-",
                    0,
                    0,
                    0,
                    0,
                    0,
                    d.seen,
                    reason_first(d.reason or ""),
                    d.path,
                )
        if incoming:
            # why a delivery waits (files missing, still being written), as the daemon recorded
            pending = {d.name: d.reason for d in db.deliveries("PENDING") if d.reason}
            for c in inbox.scan(self.ws):
                if c.stem not in out and is_dlid(c.stem):
                    waits = pending.get(c.name)
                    out[c.stem] = DownlinkRow(
                        c.stem,
                        _date(c.stem),
                        "arrived",
                        "-",
                        0,
                        0,
                        0,
                        0,
                        0,
                        _mtime(c.manifest),
                        f"pending: {waits}" if waits else f"in incoming/{c.kind}",
                    )
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
