"""Search across logs: one pattern over the logs of a stream, or of a time window.

Why: at 3 a.m. the question is rarely "what does this one log say" but "where else did
`truncated HDF5` happen", "what did the daemon and the jobs say about 251207002", or "what
went wrong between 02:00 and 02:30". The Log tab searches inside one log; this searches the
workspace's logs area (`logs/`): the daemon's JSON event log (``logs/daemon.log``, each
line timed and naming its downlink) and the process and console-job logs (plain text, one
folder per downlink). `skydeck-engine logs` and the console's `g` both call it.

- A JSON event line is matched on its human form (local time, level, event, fields: what
  an operator reads) and is dated by its own ``t``; with ``dlid``, only lines naming it.
- A plain log has no time per line: it is dated by its last write, and searched when that
  is at or after ``since``; ``until`` bounds the timed lines only (a job log written
  across the window's end is still searched).
- Bounded: at most ``limit`` matches, each line cut to ``LINE_MAX`` characters; links are
  not followed (a symlink planted in logs/ is skipped); an unreadable file is skipped. A
  bad pattern or window is ``BadInput`` (exit 2 through the CLI).

This module only reads.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.errors import BadInput
from engine.core.ids import is_dlid
from engine.core.log import human_event, json_object
from engine.core.workspace import Workspace

LINE_MAX = 500
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_FORMATS = (
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)


@dataclass(frozen=True)
class LogMatch:
    """One matching line: its log, line number (from 1), when (the line's own time for an
    event line, the log's last write for a plain one) and the line as read."""

    path: str
    lineno: int
    t: float
    line: str

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "line_number": self.lineno,
            "t": round(self.t, 3),
            "line": self.line,
        }


def parse_when(text: str, now: float | None = None) -> float:
    """A window bound: a duration back from now (``90s``, ``30m``, ``2h``, ``1d``) or a local
    date and time (``2026-12-07 02:30``, ``2026-12-07T02:30:00``, ``2026-12-07``)."""
    now = time.time() if now is None else now
    if m := _DURATION.match(text):
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    for fmt in _FORMATS:
        with contextlib.suppress(ValueError, OverflowError):
            return time.mktime(time.strptime(text.strip(), fmt))
    raise BadInput(
        f"not a time: {text[:60]!r} (a duration such as 30m, 2h, 1d, or YYYY-MM-DD [HH:MM[:SS]])"
    )


def _files(ws: Workspace, dlid: str | None) -> list[Path]:
    """The daemon's log first, then the plain logs (of one downlink, or all), oldest first."""
    out: list[Path] = []
    if ws.daemon_log.is_file() and not ws.daemon_log.is_symlink():
        out.append(ws.daemon_log)
    dirs: list[str] = []
    with contextlib.suppress(OSError):
        for sub in os.scandir(ws.logs):
            if sub.is_dir(follow_symlinks=False) and (dlid is None or sub.name == dlid):
                dirs.append(sub.path)
    plain: list[tuple[float, str]] = []
    for d in dirs:
        with contextlib.suppress(OSError):
            for f in os.scandir(d):
                if f.name.endswith(".log") and f.is_file(follow_symlinks=False):
                    with contextlib.suppress(OSError):
                        plain.append((f.stat(follow_symlinks=False).st_mtime, f.path))
    return out + [Path(p) for _, p in sorted(plain)]


def search_logs(
    ws: Workspace,
    pattern: str,
    *,
    dlid: str | None = None,
    since: float | None = None,
    until: float | None = None,
    ignore_case: bool = True,
    limit: int = 200,
) -> list[LogMatch]:
    """Every line of the workspace's logs matching ``pattern`` (a regular expression) in
    the window, as the module docstring says, at most ``limit``."""
    try:
        rx = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as err:
        raise BadInput(f"bad pattern {pattern[:60]!r}: {err}") from None
    if dlid is not None and not is_dlid(dlid):
        raise BadInput(f"not a downlink id: {dlid[:40]!r}")
    if since is not None and until is not None and until < since:
        raise BadInput("the window ends before it begins (--until is before --since)")
    found: list[LogMatch] = []
    for path in _files(ws, dlid):
        try:
            mtime = path.stat().st_mtime
            fh = open(path, "rb")  # noqa: SIM115 - closed below, after the lines
        except OSError:
            continue
        events = path == ws.daemon_log
        if not events and since is not None and mtime < since:
            fh.close()
            continue
        with fh:
            for n, raw in enumerate(fh, 1):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                t = mtime
                doc = _event(line) if events else None
                if events and doc is None:  # not an event line: dated by the log's write
                    if dlid is not None or (since is not None and mtime < since):
                        continue
                elif doc is not None:
                    if dlid is not None and str(doc.get("dlid", "")) != dlid:
                        continue
                    t = float(doc.get("t") or 0.0)
                    if (since is not None and t < since) or (until is not None and t > until):
                        continue
                    line = human_event(doc) if "event" in doc else line
                if rx.search(line):
                    found.append(LogMatch(str(path), n, t, line[:LINE_MAX]))
                    if len(found) >= limit:
                        return found
    return found


def _event(line: str) -> dict[str, Any] | None:
    """A JSON line of the daemon's log, when its time (if any) is a number."""
    doc = json_object(line)
    return doc if doc is not None and isinstance(doc.get("t", 0), int | float) else None
