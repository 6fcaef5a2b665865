"""Containment: what happens to one delivery, one stream or one step of the daemon stays
there.

Why a module of its own: the daemon must never die of one bad input or one failed write.
Every unit of work runs inside ``Containment.contained(key)``: an exception is logged as one
``error`` line naming the unit (only when it is new or changed), and that unit backs off
exponentially (``[watch] error_backoff_s`` doubling up to ``error_backoff_max_s``) while
the others are served; the first success afterwards is one ``recovered`` line. The state
database going away is not a unit's fault but the daemon's weather: a ``StateUnavailable``
goes to the shared ``Outage`` (one ``state_unreachable`` line) instead. Every role of the
daemon shares one ``Containment``, so back-off and the open faults at exit are one table.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from engine.core.errors import StateUnavailable
from engine.daemon.events import Events
from engine.store.outage import Outage


def one_line(err: BaseException) -> str:
    """An exception as the one line an ``error`` event carries."""
    text = " ".join(str(err).split()) or "(no message)"
    return f"{type(err).__name__}: {text[:300]}"


@dataclass
class Fault:
    """Consecutive failures of one delivery, stream or daemon step, and when to try again."""

    count: int
    message: str
    retry_at: float


class Containment:
    """The faults of every unit of one daemon, and their back-off."""

    def __init__(
        self, events: Events, outage: Outage, backoff_s: float, backoff_max_s: float
    ) -> None:
        self.events, self.outage = events, outage
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.faults: dict[str, Fault] = {}

    def fault(self, key: str, err: BaseException | str, **ids: Any) -> None:
        """Record a failure of ``key`` (``delivery:<name>``, ``stream:<dlid>``, a daemon
        step): one log line when the error is new or changed, then back off exponentially."""
        prev = self.faults.get(key)
        count = prev.count + 1 if prev else 1
        delay = min(self.backoff_max_s, self.backoff_s * 2 ** min(count - 1, 20))
        msg = err if isinstance(err, str) else one_line(err)
        self.faults[key] = Fault(count, msg, time.monotonic() + delay)
        if prev is None or prev.message != msg:
            with contextlib.suppress(Exception):
                self.events.ev(
                    "error", during=key, error=msg, attempt=count, retry_in_s=delay, **ids
                )

    def backing_off(self, key: str) -> bool:
        f = self.faults.get(key)
        return f is not None and time.monotonic() < f.retry_at

    def recovered(self, key: str, **ids: Any) -> None:
        f = self.faults.pop(key, None)
        if f is not None:
            with contextlib.suppress(Exception):
                self.events.ev("recovered", during=key, attempts=f.count, **ids)

    def state_lost(self, err: StateUnavailable) -> None:
        """A unit met an unreachable state server: the outage (one line, once)."""
        self.outage.down(err.message)

    @contextlib.contextmanager
    def contained(self, key: str, **ids: Any) -> Iterator[None]:
        """Run one delivery's, one stream's or one daemon step's work; an exception from it
        is logged and backed off, never raised into the main loop."""
        try:
            yield
        except StateUnavailable as err:  # not this unit's fault: the daemon's outage mode
            self.state_lost(err)
        except Exception as err:  # the point: nothing from one unit kills the daemon
            self.fault(key, err, **ids)
        else:
            if key in self.faults:
                self.recovered(key, **ids)

    def open_errors(self) -> list[str]:
        """The faults still open ("what: error"), for ``watch``'s result."""
        return [f"{key}: {f.message}" for key, f in self.faults.items()]


class _Contains(Protocol):
    contain: Containment


R = TypeVar("R")


def contained_as(key: str) -> Callable[[Callable[..., R]], Callable[..., R | None]]:
    """A role's method whose exceptions are contained under ``key`` (its ``contain``); it
    returns None when it raised."""

    def wrap(fn: Callable[..., R]) -> Callable[..., R | None]:
        @functools.wraps(fn)
        def inner(self: _Contains, *args: Any, **kw: Any) -> R | None:
            with self.contain.contained(key):
                return fn(self, *args, **kw)
            return None

        return inner

    return wrap
