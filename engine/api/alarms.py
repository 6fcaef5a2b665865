"""Alarms, acknowledgements, halts and the engine's banners, as a front end asks for them.

Why in the engine's face: the console (banners, an alarm list, an acknowledge action) and the
CLI (``health``, ``ack``, ``streams``, ``halt``) must show and change the same things, the
stream alarms of engine/pipeline/alarms.py and the halt flags of engine/pipeline/halts.py,
without reaching into the state database themselves. ``engine_status`` answers the
questions a banner asks at once: is a daemon alive (its heartbeat's age), which halt flags
are set, is launching paused for disk, how many alarms are open.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.alerts import Alerter, alerter_for
from engine.core.errors import StateUnavailable
from engine.core.heartbeat import read_heartbeats
from engine.core.thresholds import BEATS_PER_HEALTH, DEFAULT_STUCK_AFTER_S
from engine.core.workspace import Workspace
from engine.pipeline import alarms as _alarms
from engine.pipeline import halts as _halts
from engine.pipeline.alarms import Ack, Alarm
from engine.pipeline.usage import launch_paused
from engine.store import StateDB
from engine.store.outage import Patience

_ALERTERS: dict[Path, Alerter] = {}  # one worker per workspace for a long-lived front end


def alerter(ws: Workspace) -> Alerter:
    """This process's alerter for ``ws`` (``[alerts] command``; its worker thread lives as
    long as the process)."""
    a = _ALERTERS.get(ws.root)
    if a is None:
        a = _ALERTERS[ws.root] = alerter_for(ws)
    return a


def alarms(
    ws: Workspace,
    *,
    stuck_after: float = DEFAULT_STUCK_AFTER_S,
    heartbeat_max_age: float | None = None,
    now: float | None = None,
) -> list[Alarm]:
    """Every FAILED or STUCK latest stream, open and acknowledged (``Alarm.open``)."""
    max_age = heartbeat_max_age or BEATS_PER_HEALTH * ws.settings.metrics.interval_s
    with StateDB(ws.state) as db:
        return _alarms.stream_alarms(ws, db, max_age=max_age, stuck_after=stuck_after, now=now)


def acknowledge(
    ws: Workspace, dlid: str, stream_id: int | None = None, *, reason: str, who: str | None = None
) -> tuple[int, str | None]:
    """Record an operator's acknowledgement of ``dlid``'s stream (its latest by default):
    an ``ack`` event naming who (the Unix user) and why; (stream id, its status)."""
    from engine.core.ids import parse_dlid

    with StateDB(ws.state) as db:
        return _alarms.acknowledge(db, parse_dlid(dlid), stream_id, reason, who)


def acknowledgements(ws: Workspace, dlid: str | None = None) -> dict[int, list[Ack]]:
    """Every acknowledgement by stream id, oldest first (``streams`` shows the latest)."""
    with StateDB(ws.state) as db:
        return _alarms.acks(db, dlid)


def set_halt(ws: Workspace, flag: str, dlid: str | None = None, wait: bool = False) -> Path:
    """Set a halt flag and send its alert (``wait``: let the hook run before returning, as
    a command that exits next must; a front end that lives on does not wait)."""
    p = _halts.set_halt(ws, flag, dlid)
    a = alerter(ws)
    _alarms.alert_halt(a, flag, dlid)
    if wait:
        a.close()
    return p


@dataclass
class EngineStatus:
    """What a console's banners show: a daemon alive (the newest heartbeat's age, None:
    none), the halt flags set ({flag: ["global"] and/or dlids}), launching paused for disk
    (and why), open alarms, and whether the state database answered."""

    daemon_alive: bool
    heartbeat_age_s: float | None
    daemon: str | None  # "pid on host" of the newest heartbeat
    halts: dict[str, list[str]]
    disk_paused: bool
    disk_why: str
    alarms: list[Alarm] = field(default_factory=list)
    state_up: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "daemon_alive": self.daemon_alive,
            "heartbeat_age_s": None
            if self.heartbeat_age_s is None
            else round(self.heartbeat_age_s, 1),
            "daemon": self.daemon,
            "halts": self.halts,
            "disk_paused": self.disk_paused,
            "disk_why": self.disk_why,
            "alarms": [a.as_json() for a in self.alarms],
            "state_up": self.state_up,
        }


def engine_status(
    ws: Workspace, now: float | None = None, per_downlink: bool = False
) -> EngineStatus:
    """The banners' facts now; the state database is asked once, without waiting.
    ``per_downlink``: also the flags set for single downlinks (a walk of downlinks/,
    costly with many downlinks; a row's note says it too)."""
    now = time.time() if now is None else now
    max_age = BEATS_PER_HEALTH * ws.settings.metrics.interval_s
    beats = read_heartbeats(ws)
    hb = beats[0] if beats else None
    alive = hb is not None and now - hb.t <= max_age and not hb.dead()[0]
    paused, why = False, ""
    with contextlib.suppress(OSError):
        paused, why = launch_paused(ws)
    found: list[Alarm] = []
    up = True
    try:
        with StateDB(ws.state, patience=Patience(0.0)) as db:
            found = _alarms.stream_alarms(
                ws, db, max_age=max_age, stuck_after=DEFAULT_STUCK_AFTER_S, now=now
            )
    except StateUnavailable:
        up = False
    halts_set: dict[str, list[str]] = {}
    for flag in _halts.HALT_FLAGS:
        where = [_halts.GLOBAL] if _halts.is_set_globally(ws, flag) else []
        if per_downlink:
            with contextlib.suppress(OSError):
                where += sorted(
                    p.parent.name for p in ws.downlinks.glob(f"*/{flag}") if p.parent.name.isdigit()
                )
        if where:
            halts_set[flag] = where
    return EngineStatus(
        alive,
        None if hb is None else max(0.0, now - hb.t),
        None if hb is None else f"{hb.pid} on {hb.host}",
        halts_set,
        paused,
        why,
        [a for a in found if a.open],
        up,
    )
