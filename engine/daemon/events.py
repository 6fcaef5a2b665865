"""The daemon's events: one line per event, to its loggers and logs/daemon.log, and what a
run of the daemon did (``WatchResult``).

Why a module of its own: every role of the daemon (intake, streams, the loop) and every
stream runner it drives says what happened through one ``emit``, which also counts events
(``--once`` ends after rounds without any) and keeps the result ``watch`` prints. A test or
an embedding program passes its own ``emit`` and gets the same dicts instead of log lines.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.alerts import Alerter
from engine.core.log import attach_file, detach_file, emit_event, logger
from engine.intake import deliveries

Emit = Callable[[dict[str, Any]], None]


@dataclass
class WatchResult:
    registered: list[str] = field(default_factory=list)
    rejected: list[deliveries.Outcome] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    terminated: bool = False
    errors: list[str] = field(default_factory=list)  # faults still open at exit: "what: error"


class Events:
    """Where the daemon's events go: ``emit`` (a caller's) or the engine's loggers plus the
    JSON lines of ``log_file`` (logs/daemon.log, which a console can open)."""

    def __init__(
        self, log_file: Path | None, emit: Emit | None = None, alerter: Alerter | None = None
    ) -> None:
        self.emit_fn = emit
        self.alerter = alerter  # [alerts] command: the events that are alerts go there too
        self.count = 0
        self.result = WatchResult()
        self._log_file = attach_file(log_file) if emit is None and log_file else None

    def emit(self, ev: dict[str, Any], area: str = "pipeline") -> None:
        """One event (the runners' too: their area is the default). To the ``skydeck.<area>``
        logger: a JSON line appended to logs/daemon.log, then a line on stdout, human or JSON
        (``--log-format``). A log that cannot be written (its disk full, its reader gone, no
        permission) loses the line, not the daemon."""
        self.count += 1
        if ev.get("event") == "stream_success":
            self.result.succeeded.append(ev["dlid"])
        elif ev.get("event") == "stream_failed":
            self.result.failed.append(ev["dlid"])
        if self.alerter is not None:
            self.alerter.observe(ev)  # queues at most; never raises
        if self.emit_fn is not None:
            self.emit_fn(ev)
            return
        with contextlib.suppress(OSError, ValueError):
            emit_event(logger(area), ev)

    def ev(self, event: str, _area: str = "daemon", **kw: Any) -> None:
        """An event of the daemon's own, stamped now."""
        self.emit({"t": round(time.time(), 3), "event": event, **kw}, _area)

    def debug(self, event: str, _area: str = "daemon", **kw: Any) -> None:
        """A debug line (``-v``, ``--log-level debug``): not an event the loop counts, and
        nothing is built when debug is off."""
        log = logger(_area)
        if self.emit_fn is None and log.isEnabledFor(logging.DEBUG):
            with contextlib.suppress(OSError, ValueError):
                emit_event(log, {"t": round(time.time(), 3), "event": event, **kw}, logging.DEBUG)

    def close(self) -> None:
        if self.alerter is not None:
            self.alerter.close()  # what is queued is sent (bounded by [alerts] timeout_s)
        if self._log_file is not None:
            detach_file(self._log_file)
            self._log_file = None
