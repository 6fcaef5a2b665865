"""The timeline of one stream: every execution of every process instance as a span on a
time axis, grouped by host, waiting (created to started) and running (started to ended)
drawn apart.

Why this module exists: the stream tree shows what each instance is now; an operator who
asks "why did this downlink take an hour" needs the order and overlap of the jobs, where
they ran, and what waited (a slot, a halt, the batch queue). This screen draws it in the
terminal from the state database's times (``engine.api.stream_history``), nothing else.
"""

from __future__ import annotations

import time
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from console.format import STATUS_STYLE, duration, printable
from engine.api import ProcessInstance, StreamView

WAIT = "░"
RUN = "█"
LABEL_W = 26


def spans(view: StreamView, now: float) -> tuple[float, float]:
    """The time range the axis covers: the first creation to the last end (or now)."""
    t0 = min((p.created for p in view.instances), default=now)
    t1 = max((p.ended or (now if p.started else p.created) for p in view.instances), default=now)
    return t0, max(t1, t0 + 1.0)


def bar(pi: ProcessInstance, t0: float, t1: float, width: int, now: float) -> Text:
    """One instance's span: spaces before, ░ while it waited, █ while it ran."""
    scale = width / (t1 - t0)

    def col(t: float) -> int:
        return max(0, min(width, int((t - t0) * scale)))

    start = pi.started
    end = pi.ended or (now if start else None)
    a = col(pi.created)
    b = col(start) if start else (col(end) if end else col(now))
    c = max(b + 1, col(end)) if start and end else b
    out = Text(" " * a)
    out.append(WAIT * max(0, b - a), style="grey50")
    out.append(RUN * max(0, c - b), style=STATUS_STYLE.get(pi.status, ""))
    out.append(" " * max(0, width - len(out)))
    return out


def render(view: StreamView, width: int, now: float | None = None) -> Text:
    """The whole timeline as text: a header with the axis, then per host its spans."""
    now = time.time() if now is None else now
    t0, t1 = spans(view, now)
    axis_w = max(10, width - LABEL_W - 30)
    s = view.stream
    out = Text(f"{s.dlid} {s.task} {s.status} e{s.execution}\n", style="bold")
    left = time.strftime("%m-%d %H:%M:%S", time.localtime(t0))
    right = time.strftime("%H:%M:%S", time.localtime(t1))
    out.append(f"{'':<{LABEL_W}} {left}{right:>{axis_w - len(left)}}\n", style="dim")
    out.append(f"{'':<{LABEL_W}} {WAIT} waiting (READY, QUEUED)   {RUN} running\n", style="dim")
    by_host: dict[str, list[ProcessInstance]] = {}
    for pi in sorted(view.instances, key=lambda p: (p.created, p.process, p.key, p.execution)):
        where = pi.job_id and f"{pi.launcher}:{pi.job_id}"
        host = printable(pi.host or ("batch queue" if where else "not started"))
        by_host.setdefault(host, []).append(pi)
    for host, items in by_host.items():
        out.append(f"{host}\n", style="bold underline")
        for pi in items:
            name = f"{pi.process}{' ' + pi.key if pi.key else ''} e{pi.execution}"
            out.append(f"  {printable(name):<{LABEL_W - 2}.{LABEL_W - 2}} ")
            out.append_text(bar(pi, t0, t1, axis_w, now))
            end = pi.ended or (now if pi.started else None)
            took = duration(end - pi.started) if pi.started and end else "-"
            out.append(f" {pi.status:<10}", style=STATUS_STYLE.get(pi.status, ""))
            out.append(f" {took:>7}\n")
    return out


class TimelineScreen(ModalScreen[None]):
    """`t`: the selected downlink's stream as spans per host; escape closes."""

    BINDINGS: ClassVar = [Binding("escape,q,t", "close", "Close", id="timeline.close")]

    def __init__(self, view: StreamView, width: int) -> None:
        super().__init__()
        self.view, self.width = view, width

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="timeline"):
            yield Static(render(self.view, self.width), id="timeline-body")

    def action_close(self) -> None:
        self.dismiss(None)
