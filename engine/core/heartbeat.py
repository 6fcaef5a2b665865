"""The daemon's heartbeat: a small file each live daemon replaces every few seconds.

Why a file, and why in core: a probe (``skydeck-engine health``), the console, ``db copy``
(refusing while a daemon lives) and retention (never removing a live one) must tell whether
a daemon runs, including while the state database is unreachable (a PostgreSQL server
restarting), so the heartbeat cannot live in the database. Each daemon replaces
``<logs>/heartbeat/<host>-<pid>.json`` every ``[metrics] interval_s`` and removes it when it
stops; the file names the process (pid, host, start time: ``engine.core.owner`` judges it
dead), when it beat, and whether it reached the state database then (since when it has
not, and why). Readers above the daemon (engine.api.health) and the daemon itself
(engine.daemon.exporter) share this one definition.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core.atomic import replace_snapshot
from engine.core.owner import Owner, owner_dead
from engine.core.workspace import Workspace


@dataclass(frozen=True)
class Heartbeat:
    """One daemon's last loop: who (pid, host, process start), when, how often it beats,
    and whether it reached the state database then (since when it has not, and why)."""

    pid: int
    host: str
    start: float
    t: float
    interval_s: float
    path: Path
    state_reachable: bool = True
    state_since: float | None = None
    state_error: str | None = None

    def dead(self) -> tuple[bool, str]:
        return owner_dead(self.pid, self.host, self.start)


def heartbeat_path(ws: Workspace, owner: Owner) -> Path:
    return ws.heartbeat_dir / f"{owner.host}-{owner.pid}.json"


def write_heartbeat(
    ws: Workspace,
    owner: Owner,
    interval_s: float,
    now: float | None = None,
    state: dict[str, Any] | None = None,
) -> Path:
    """``state``: the daemon's view of the state database (``reachable``, ``since``,
    ``error``: engine.store.outage.Outage.as_json)."""
    p = heartbeat_path(ws, owner)
    doc: dict[str, Any] = {
        "pid": owner.pid,
        "host": owner.host,
        "start": owner.start,
        "t": round(time.time() if now is None else now, 3),
        "interval_s": interval_s,
    }
    if state is not None:
        doc["state"] = state
    replace_snapshot(p, (json.dumps(doc) + "\n").encode())
    return p


def read_heartbeats(ws: Workspace) -> list[Heartbeat]:
    """Every daemon heartbeat file that parses, newest first (an unreadable one is skipped:
    it can only be a file someone else put there)."""
    out: list[Heartbeat] = []
    try:
        entries = sorted(ws.heartbeat_dir.glob("*.json"))
    except OSError:
        return out
    for p in entries:
        if p.name.startswith("."):
            continue
        try:
            d = json.loads(p.read_bytes()[:4096])
            st = d.get("state") or {}
            since, err = st.get("since"), st.get("error")
            out.append(
                Heartbeat(
                    int(d["pid"]),
                    str(d["host"]),
                    float(d["start"]),
                    float(d["t"]),
                    float(d["interval_s"]),
                    p,
                    bool(st.get("reachable", True)),
                    None if since is None else float(since),
                    None if err is None else str(err)[:300],
                )
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return sorted(out, key=lambda h: h.t, reverse=True)


def sweep_dead_heartbeats(ws: Workspace) -> list[Path]:
    """Remove the heartbeat files of daemons provably dead on this host (a daemon that was
    killed cannot remove its own); those of other hosts stay."""
    removed = []
    for hb in read_heartbeats(ws):
        if hb.dead()[0]:
            with contextlib.suppress(OSError):
                hb.path.unlink()
                removed.append(hb.path)
    return removed
