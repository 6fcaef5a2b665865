"""Health: the verdict ``skydeck-engine health`` (a monitoring probe) gives, check by check.

Why in the engine's face: a probe, the CLI and the console ask the same question (is a
daemon alive, is the state database reachable from here and from the daemon, is launching
paused or held, is any stream stuck), so it is answered once, from what every reader can
see: the daemons' heartbeat files (``engine.core.heartbeat``: they beat while the state
database is down), the state database (asked once, never waited for) and the workspace's
flags and free space. Each ``Check`` carries the line an operator reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from engine.core.errors import StateUnavailable
from engine.core.heartbeat import Heartbeat, read_heartbeats
from engine.core.thresholds import BEATS_PER_HEALTH, DEFAULT_STUCK_AFTER_S
from engine.core.workspace import Workspace
from engine.pipeline.alarms import STUCK, Alarm, stream_alarms
from engine.pipeline.frozen import frozen_evidence
from engine.pipeline.halts import halts
from engine.pipeline.locks import list_locks
from engine.pipeline.usage import launch_paused
from engine.store import StateDB
from engine.store.outage import UNREACHABLE, Patience


@dataclass(frozen=True)
class Check:
    """One health check's verdict; ``detail`` is the line an operator reads."""

    name: str
    ok: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


def _ago(s: float) -> str:
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def health(
    ws: Workspace,
    *,
    heartbeat_max_age: float | None = None,
    stuck_after: float = DEFAULT_STUCK_AFTER_S,
    now: float | None = None,
) -> list[Check]:
    """The checks of ``skydeck-engine health``; healthy when every one is ok.

    - ``daemon``: some daemon's heartbeat is younger than ``heartbeat_max_age`` (default
      ``BEATS_PER_HEALTH`` x ``[metrics] interval_s``) and its process is not provably dead.
    - ``state``: the state database answers here (asked once, without waiting) and no live
      daemon's heartbeat says it cannot reach it; else since when, as the daemon saw it.
    - ``lock:<name>``: no lock is held longer than ``heartbeat_max_age`` by a holder that is
      alive but frozen (engine/pipeline/frozen.py: its daemon heartbeat stopped advancing,
      or the process is stopped).
    - ``halt:<flag>``: no global halt flag is set; ``disk``: free space on the output areas
      is not under the reserve (launching would pause).
    - ``failed:<dlid>``: a latest stream is FAILED and no operator acted (a rollback, a
      re-run, or ``skydeck-engine ack``: engine/pipeline/alarms.py).
    - ``stuck:<dlid>``: a latest stream that is RUNNING and not held by a halt flag is stuck
      when its runner (the stream's owner) is provably dead and nothing happened for longer
      than ``heartbeat_max_age`` (no daemon took it over), or when nothing happened for
      longer than ``stuck_after`` whatever its runner; "happened" is the stream starting or
      one of its instances being created, started or ending. Not judged while the state
      database cannot be read.
    """
    now = time.time() if now is None else now
    max_age = heartbeat_max_age or BEATS_PER_HEALTH * ws.settings.metrics.interval_s
    checks: list[Check] = []

    beats = read_heartbeats(ws)
    fresh = [hb for hb in beats if now - hb.t <= max_age and not hb.dead()[0]]
    if fresh:
        hb = fresh[0]
        checks.append(
            Check(
                "daemon",
                True,
                f"daemon pid {hb.pid} on {hb.host} beat {_ago(max(0.0, now - hb.t))}",
            )
        )
    elif not beats:
        checks.append(
            Check(
                "daemon",
                False,
                f"no daemon heartbeat in {ws.heartbeat_dir} "
                "(no `skydeck-engine watch` running here)",
            )
        )
    else:
        hb = beats[0]
        dead, why = hb.dead()
        state = why if dead else f"older than {max_age:g} s"
        checks.append(
            Check(
                "daemon",
                False,
                f"daemon pid {hb.pid} on {hb.host} last beat "
                f"{_ago(max(0.0, now - hb.t))} ({state})",
            )
        )

    running = None
    alarms: list[Alarm] = []
    try:
        with StateDB(ws.state, patience=Patience(0.0)) as db:
            running = db.running_streams_activity()
            alarms = stream_alarms(ws, db, max_age=max_age, stuck_after=stuck_after, now=now)
    except StateUnavailable as err:
        why = err.message.removeprefix(UNREACHABLE)
        checks.append(Check("state", False, _unreachable(why, fresh, now)))
    else:
        blind = [hb for hb in fresh if not hb.state_reachable]
        if blind:
            hb = blind[0]
            checks.append(
                Check(
                    "state",
                    False,
                    _unreachable(
                        f"daemon pid {hb.pid} on {hb.host} cannot reach it: {hb.state_error}",
                        blind,
                        now,
                    ),
                )
            )
        else:
            checks.append(Check("state", True, "state database reachable"))

    for flag in halts(ws):
        checks.append(
            Check(
                f"halt:{flag}",
                False,
                f"halt flag {flag} is set globally ({ws.path('flags') / flag})",
            )
        )
    paused, why = launch_paused(ws)
    checks.append(Check("disk", not paused, why or "free space above the reserve"))

    for info in list_locks(ws.lock):
        evidence = frozen_evidence(info, beats, max_age, now)
        if evidence and info.age_s > max_age:
            checks.append(
                Check(
                    f"lock:{info.name}",
                    False,
                    f"lock {info.name} held by {info.owner} for {info.age_s:.0f} s, holder "
                    f"frozen: {evidence} (`skydeck-engine unlock {info.name}` releases it)",
                )
            )

    for a in alarms:
        if a.open:
            checks.append(Check(f"{a.kind.lower()}:{a.dlid}", False, _alarm_line(a)))
    if running is not None and not any(a.open for a in alarms):
        acked = sum(1 for a in alarms if not a.open)
        checks.append(
            Check(
                "streams",
                True,
                f"{len(running)} stream(s) running, none stuck or failed"
                + (f" ({acked} acknowledged)" if acked else ""),
            )
        )
    return checks


def _alarm_line(a: Alarm) -> str:
    """An alarm as health's line: the stream (its downlink), the process, and why."""
    proc = f" process {a.process}" if a.process else ""
    if a.kind == STUCK:
        return f"stream {a.stream_id} ({a.dlid}) {a.reason}"
    return f"stream {a.stream_id} ({a.dlid}) FAILED{proc}: {a.reason}"


def _unreachable(why: str, beats: list[Heartbeat], now: float) -> str:
    """The state check's line: unreachable, since when (as the earliest live daemon that
    cannot reach it saw it; else "now"), and why."""
    since = min(
        (hb.state_since for hb in beats if not hb.state_reachable and hb.state_since is not None),
        default=None,
    )
    when = "" if since is None else f" since {_when(since)} ({max(0.0, now - since):.0f} s)"
    return f"state database unreachable{when}: {why}"
