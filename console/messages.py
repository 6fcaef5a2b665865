"""The messages the console's workers post to the UI thread (one per worker result).

Why this module exists: every engine call runs in a thread worker (one ``engine.api`` call
each) and hands its result to the UI thread as one of these messages; the main screen's
handlers apply them. Keeping them apart from the screens lets a test or a second screen
name them without importing the main screen. They do not bubble: the screen that started
the worker handles them, and the App never sees them a second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from engine.api import (
        Comparison,
        HitSummary,
        PrunePlan,
        RollbackPlan,
        Snapshot,
        StreamView,
        UsageReport,
    )


@dataclass
class Refreshed(Message, bubble=False):
    """What the poll loop read this round (``engine.api.Monitor.poll``)."""

    snapshot: Snapshot


@dataclass
class StateReach(Message, bubble=False):
    """The poll loop found the state database unreachable (``since``: when, ``error``:
    why) or reachable again (``since`` None; ``down_s``: how long it was not)."""

    since: float | None
    error: str = ""
    down_s: float = 0.0


@dataclass
class StageRead(Message, bubble=False):
    report: UsageReport | None  # None: the scan failed (reported separately)
    prune: PrunePlan | None = None  # what the next prune would free (None: not read)


@dataclass
class LogLines(Message, bubble=False):
    path: str
    lines: list[str]


@dataclass
class ActionDone(Message, bubble=False):
    text: str
    severity: str = "information"


@dataclass
class Planned(Message, bubble=False):
    """A rollback checked in a worker: ask to confirm it, or say why it cannot succeed."""

    dlid: str
    targets: list[str] | None
    question: str
    plan: RollbackPlan


@dataclass
class BulkPlanned(Message, bubble=False):
    """Rollbacks of the marked downlinks, checked in a worker: (dlid, plan) each."""

    plans: list[tuple[str, RollbackPlan]]


@dataclass
class BulkDone(Message, bubble=False):
    """A bulk action ended: one result line per downlink or lock; ``start``: the
    downlinks whose runner starts now (on the UI thread)."""

    title: str
    lines: list[str]
    failed: int
    start: list[str]


@dataclass
class HistoryRead(Message, bubble=False):
    """Every execution of a stream's instances (``engine.api.stream_history``); ``show``:
    open the timeline with it (else: the stream tree's history labels)."""

    dlid: str
    view: StreamView | None
    show: bool = False
    acks: tuple[str, ...] = ()  # operators' acknowledgements of the stream (who, when, why)
    held: str | None = None  # what holds the downlink back (a halt flag, another's lock)


@dataclass
class EventsPage(Message, bubble=False):
    """A page of propagation events beyond the newest (``page`` * the page size on)."""

    page: int
    total: int
    summaries: dict[str, HitSummary | str]


@dataclass
class HealthRead(Message, bubble=False):
    """The workspace's health checks (``engine.api.health.health``): what failed shows in
    the banner under the header (a daemon gone, halts, launching paused, stuck streams)."""

    failed: list[tuple[str, str]]  # (check name, the line an operator reads)


@dataclass
class JobProgress(Message, bubble=False):
    job: str
    done: int
    total: int | None
    what: str
    exit: int | None = None
    log: str = ""
    elapsed: float = 0.0  # seconds, when it ended


@dataclass
class Compared(Message, bubble=False):
    comparison: Comparison


@dataclass
class JobRecord:
    """One job the console launched (a build or a propagation): the `j` list keeps them,
    running and finished. ``outcome``: None while it runs, then its result line (what it
    made, how fast, where) or why it failed; ``log``: what the job printed."""

    title: str
    started: float  # epoch seconds
    log: str
    output: str
    ended: float | None = None
    exit: int | None = None
    outcome: str | None = None
    done: int = 0
    total: int = 0
