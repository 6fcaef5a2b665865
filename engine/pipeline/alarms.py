"""Stream alarms: a FAILED or STUCK stream, until an operator acts on it.

Why a module of its own, below the api and the daemon: ``health`` (engine.api.health), the
console, the metrics (engine/daemon/exporter.py) and the alert hooks the daemon sends
(engine/core/alerts.py) ask the same question, "which streams need an operator?", and must
give the same answer. An alarm is raised by a latest stream that is FAILED, or RUNNING
with nothing happening (stuck: its runner provably dead and no daemon took it over, or no
progress for longer than ``stuck_after`` whatever its runner). It stays until an operator
acts: a re-run or a rollback (the stream is no longer FAILED, or something happens), or an
explicit acknowledgement (``skydeck-engine ack``), an ``ack`` row in the events table
naming who (the Unix user) and why. An acknowledgement covers the alarm as it stood when it
was given: a stream that fails again, or gets stuck again after progress, raises a new one.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import time
from dataclasses import dataclass
from typing import Any

from engine.core.alerts import Alerter
from engine.core.owner import owner_dead
from engine.core.thresholds import BEATS_PER_HEALTH, DEFAULT_STUCK_AFTER_S
from engine.core.workspace import Workspace
from engine.pipeline.halts import GLOBAL, HALT_MEANING, halts
from engine.pipeline.usage import launch_paused
from engine.store import StateDB

ACK_EVENT = "ack"  # the events table's kind of an acknowledgement
FAILED, STUCK = "FAILED", "STUCK"


@dataclass(frozen=True)
class Ack:
    """An operator's acknowledgement of a stream's alarm."""

    t: float
    who: str
    why: str
    kind: str | None  # FAILED, STUCK or None (whatever the stream's alarm was)

    def line(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.t))
        return f"acknowledged by {self.who} at {when}: {self.why}"


@dataclass(frozen=True)
class Alarm:
    """A stream that needs an operator: FAILED, or STUCK. ``since``: when it failed, or its
    last activity; ``ack``: the acknowledgement that covers it (None: open)."""

    kind: str
    dlid: str
    stream_id: int
    execution: int
    process: str | None
    reason: str
    since: float
    ack: Ack | None = None

    @property
    def open(self) -> bool:
        return self.ack is None

    def line(self) -> str:
        proc = f" process {self.process}" if self.process else ""
        return f"downlink {self.dlid} stream {self.stream_id}{proc} {self.kind}: {self.reason}"

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "dlid": self.dlid,
            "stream": self.stream_id,
            "execution": self.execution,
            "process": self.process,
            "reason": self.reason,
            "since": round(self.since, 3),
            "acknowledged": None
            if self.ack is None
            else {"t": round(self.ack.t, 3), "who": self.ack.who, "why": self.ack.why},
        }


def whoami() -> str:
    """The Unix user of this process (its effective uid), as an acknowledgement names it."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def acks(db: StateDB, dlid: str | None = None) -> dict[int, list[Ack]]:
    """Every acknowledgement, by stream id, oldest first."""
    out: dict[int, list[Ack]] = {}
    for t, _dlid, d in db.events_of(ACK_EVENT, dlid):
        try:
            sid = int(d["stream"])
        except (KeyError, TypeError, ValueError):
            continue
        kind = d.get("alarm")
        out.setdefault(sid, []).append(
            Ack(
                t,
                str(d.get("who", "?")),
                str(d.get("why", "")),
                None if kind is None else str(kind),
            )
        )
    return out


def covering(found: list[Ack], kind: str, since: float) -> Ack | None:
    """The latest acknowledgement of ``found`` given after ``since`` for this kind."""
    for a in reversed(found):
        if a.t >= since and a.kind in (None, kind):
            return a
    return None


def stream_alarms(
    ws: Workspace,
    db: StateDB,
    *,
    max_age: float,
    stuck_after: float,
    now: float | None = None,
) -> list[Alarm]:
    """Every alarm of the latest streams (acknowledged ones too: see ``Alarm.open``), FAILED
    first then STUCK, by downlink. ``max_age``: how long a dead runner's stream may wait for
    a daemon to take it over; ``stuck_after``: the longest a stream may go without anything
    happening (engine.api.health documents both)."""
    now = time.time() if now is None else now
    out: list[Alarm] = []
    for fs in db.failed_streams():
        why = fs.process_note or fs.note or "failed"
        if fs.exit_code is not None and "exit" not in why:
            why = f"{why} (exit {fs.exit_code})"
        out.append(
            Alarm(
                FAILED,
                fs.dlid,
                fs.stream_id,
                fs.execution,
                fs.process,
                " ".join(why.split())[:300],
                fs.ended,
            )
        )
    for rs in db.running_streams_activity():
        if halts(ws, rs.dlid):
            continue  # held on purpose
        idle = max(0.0, now - rs.last_activity)
        dead, why = owner_dead(rs.owner_pid, rs.owner_host, rs.owner_start)
        if dead and idle > max_age:
            reason = f"RUNNING, runner gone ({why}), nothing happened for {idle:.0f} s"
        elif idle > stuck_after:
            reason = (
                f"RUNNING, nothing happened for {idle:.0f} s (over {stuck_after:g} s; "
                f"{rs.active_jobs} job(s) in flight)"
            )
        else:
            continue
        out.append(
            Alarm(
                STUCK,
                rs.dlid,
                rs.stream_id,
                0,
                None,
                reason,
                rs.last_activity,
            )
        )
    if not out:
        return out
    # the events table is large and not indexed by kind: its acknowledgements are read only
    # when there is an alarm they could cover
    by_stream = acks(db)
    return [
        dataclasses.replace(a, ack=covering(by_stream.get(a.stream_id, []), a.kind, a.since))
        for a in out
    ]


def acknowledge(
    db: StateDB, dlid: str, stream_id: int | None, why: str, who: str | None = None
) -> tuple[int, str | None]:
    """Record an operator's acknowledgement of ``dlid``'s stream (its latest when
    ``stream_id`` is None) as an ``ack`` event: (the stream id, the status it had)."""
    from engine.core.errors import BadInput

    why = " ".join(why.split())
    if not why:
        raise BadInput("ack needs --reason TEXT: why the alarm needs no further action")
    mine = [s for s in db.streams(latest_only=False) if s.dlid == dlid]
    if not mine:
        raise BadInput(f"downlink {dlid} has no stream to acknowledge")
    if stream_id is None:
        latest = [s for s in mine if s.is_latest]
        st = max(latest or mine, key=lambda s: s.id)
    else:
        found = [s for s in mine if s.id == stream_id]
        if not found:
            raise BadInput(f"downlink {dlid} has no stream {stream_id}")
        st = found[0]
    db.log_event(
        ACK_EVENT,
        dlid,
        stream=st.id,
        status=st.status,
        who=who or whoami(),
        why=why[:500],
    )
    return st.id, st.status


def alarm_scan(ws: Workspace, db: StateDB, alerter: Alerter, now: float | None = None) -> None:
    """The alerts a periodic look finds (the daemon's reconciliation scan): open STUCK
    alarms, global halt flags, launching paused for disk. FAILED streams are alerted when
    they fail (the runner's ``stream_failed`` event, engine/core/alerts.py), by whichever
    process ran them. Each alert's reason is stable (no running figures), so the alerter's
    deduplication sends it once."""
    max_age = BEATS_PER_HEALTH * ws.settings.metrics.interval_s
    for a in stream_alarms(ws, db, max_age=max_age, stuck_after=DEFAULT_STUCK_AFTER_S, now=now):
        if a.open and a.kind == STUCK:
            stable = "runner gone" if "runner gone" in a.reason else "no progress"
            alerter.send(
                "stream_stuck",
                a.dlid,
                a.process,
                f"stream {a.stream_id} stuck: {stable}",
                stream=a.stream_id,
                detail=a.reason,
            )
    for flag, where in halts(ws).items():
        if GLOBAL in where:
            alert_halt(alerter, flag, None)
    paused, why = launch_paused(ws)
    if paused:
        alerter.send("disk_paused", None, None, f"launching paused: {why}")


def alert_halt(alerter: Alerter, flag: str, dlid: str | None) -> None:
    """The alert of a halt flag set (globally when ``dlid`` is None)."""
    where = f"for downlink {dlid}" if dlid else "globally"
    alerter.send(
        "halt_set",
        dlid,
        None,
        f"halt flag {flag} set {where}: {HALT_MEANING.get(flag, '')}",
        flag=flag,
    )
