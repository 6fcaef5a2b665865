"""How a process rides over its state server going away: patience, back-off, one report.

Why this module exists: a PostgreSQL state server restarts (an upgrade, a failover, a DBA's
``pg_terminate_backend``) while daemons, runners, jobs and consoles hold connections to it.
Each of those must survive it, but they differ in how long one call may wait: a job or a
listing can simply wait for the server to come back; the daemon's main loop must not
block (its heartbeat, its job exits and SIGTERM go on), it retries whole units of work
later; a health probe or a console answers at once and says the server is unreachable.
So the waiting policy is a value the caller hands to the store, and the store's PostgreSQL
connection (engine/store/postgres.py) applies it wherever a connection is found lost:

- ``Patience``: how long one call waits for a lost server to come back (``wait_s``: 0 tries
  once, ``math.inf`` waits until it is back), what stops the wait early (``stop``, e.g. a
  daemon shutting down), and the ``Outage`` the process's connections share;
- ``Outage``: whether the state server is reachable as this process last saw it, since
  when, and why not; ``report`` hears one ``state_unreachable`` event when the first of
  the process's connections finds the server gone and one ``state_reachable`` event (with
  ``down_s``) when one gets through again, however many connections the process holds;
- ``Backoff``: the pause between reconnection attempts, doubling from ``FIRST_S`` to
  ``MAX_S``, so a server that is down is not hammered by every process of a site.

Nothing here imports a driver; SQLite (a file, never "down") never uses it.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Report = Callable[[dict[str, Any]], None]  # one event: {"event": ..., ...}

FIRST_S = 0.1  # first pause between reconnection attempts
MAX_S = 5.0  # longest pause: a server that is back is seen within this
UNREACHABLE = "state database unreachable: "  # how StateUnavailable's message starts
RECONNECT_QUIET_S = 5.0  # a reconnection with no outage (or right after one): at most one line


class Outage:
    """The state server as this process sees it (shared by its connections)."""

    def __init__(self, report: Report | None = None) -> None:
        self.report = report
        self.since: float | None = None  # epoch seconds the server was found unreachable
        self.error: str | None = None  # the last reason it could not be reached
        self._mutex = threading.Lock()
        self._reconnect_told = float("-inf")

    @property
    def reachable(self) -> bool:
        return self.since is None

    def down(self, error: str) -> None:
        """A connection could not reach the server: the outage starts (reported once)."""
        error = error.removeprefix(UNREACHABLE)
        with self._mutex:
            self.error = error
            if self.since is not None:
                return
            self.since = time.time()
            ev = {"event": "state_unreachable", "error": error, "since": round(self.since, 3)}
        self._tell(ev)

    def up(self, error: str | None = None) -> None:
        """A connection got through: the outage (if any) ends, reported with its length.
        ``error``: why the connection had been lost, when it was re-made with no outage
        (a terminated session); reported at most every ``RECONNECT_QUIET_S``."""
        now = time.time()
        with self._mutex:
            since, self.since = self.since, None
            if since is not None:
                ev: dict[str, Any] = {
                    "event": "state_reachable",
                    "down_s": round(now - since, 3),
                    "error": self.error,
                }
                # the process's other sessions, lost in the same outage, come back silently
                self._reconnect_told = now
            elif error is not None and now - self._reconnect_told >= RECONNECT_QUIET_S:
                self._reconnect_told = now
                ev = {"event": "state_reconnected", "error": error}
            else:
                return
            self.error = None
        self._tell(ev)

    def as_json(self) -> dict[str, Any]:
        """What a heartbeat carries (engine/core/heartbeat.py)."""
        return {"reachable": self.since is None, "since": self.since, "error": self.error}

    def _tell(self, ev: dict[str, Any]) -> None:
        if self.report is not None:
            # a report that fails (a full disk) loses the line, not the call
            with contextlib.suppress(Exception):
                self.report({"t": round(time.time(), 3), **ev})


@dataclass
class Patience:
    """How long one call waits for a lost state server (see the module docstring)."""

    wait_s: float = 0.0
    stop: threading.Event | None = None
    outage: Outage = field(default_factory=Outage)

    @classmethod
    def forever(cls, outage: Outage | None = None, stop: threading.Event | None = None) -> Patience:
        return cls(math.inf, stop, outage or Outage())

    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def sleep(self, seconds: float) -> bool:
        """Pause (cut short when ``stop`` is set); False when stopped."""
        if seconds > 0:
            if self.stop is not None:
                return not self.stop.wait(seconds)
            time.sleep(seconds)
        return not self.stopped()


class Backoff:
    """The pause before the next reconnection attempt: ``FIRST_S``, doubling, at most
    ``MAX_S``; ``reset`` once a connection got through."""

    def __init__(self) -> None:
        self.pause = FIRST_S
        self.next_at = 0.0  # monotonic: when the next attempt is due (0: now)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def failed(self, now: float) -> None:
        self.next_at = now + self.pause
        self.pause = min(MAX_S, self.pause * 2)

    def reset(self) -> None:
        self.pause = FIRST_S
        self.next_at = 0.0
