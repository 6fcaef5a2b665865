"""Small text formatters shared by the panels (ages, durations, byte counts, status colors)."""

from __future__ import annotations

from rich.text import Text

from engine.api import human_bytes

# Pipeline-II's front end: FAILED rows red; running work stands out; finished work recedes.
STATUS_STYLE = {
    "WAITING": "grey62",
    "READY": "cyan",
    "QUEUED": "blue",
    "SUBMITTED": "blue",
    "RUNNING": "bold yellow",
    "SUCCESS": "green",
    "FAILED": "bold red",
    "TERMINATING": "magenta",
    "TERMINATED": "magenta",
    "CANCELING": "magenta",
    "CANCELED": "magenta",
    "SKIPPED": "grey50",
}
STATE_STYLE = {
    "arrived": "cyan",
    "running": "bold yellow",
    "stopped": "magenta",
    "staged": "green",
    "failed": "bold red",
    "rejected": "bold magenta",
}


def age(seconds: float) -> str:
    """Compact age (k9s style): 42s, 7m, 3h, 2d."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def size(n: int) -> str:
    return human_bytes(n) if n else "-"


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def bar(fraction: float, width: int = 10) -> str:
    """A text progress bar: fraction 0..1 drawn in ``width`` cells."""
    f = min(1.0, max(0.0, fraction))
    full = int(f * width)
    return "█" * full + "░" * (width - full)


def printable(s: str) -> str:
    """``s`` with every control or non-printable character written as an escape (``\\x1b``,
    ``\\n``, ``\\u200b``): a name or note from outside can never move the cursor, recolour
    the terminal or hide text. Markup is not this function's business: cells are
    ``rich.text.Text`` objects, never parsed as markup."""
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def plain(s: str, style: str = "") -> Text:
    """Text from outside, escaped and never parsed as markup (a table cell, a tree label)."""
    return Text(printable(s), style=style)
