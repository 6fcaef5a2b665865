"""The Log pane: one log file followed, bounded in memory, searchable.

Following is a thread worker (the screen's) tailing the file and posting lines; this widget
only appends them. ``max_lines`` bounds memory however long a job writes (an unbounded log
view is a known way for a console to run out of memory). The title names the file; lines
are escaped (a log is data from outside: an ESC sequence in it must not reach the
terminal); JSON event lines (``logs/daemon.log``) arrive already in the human format
(``engine.api.human_log_lines``). ``/`` in the pane searches it: every match highlighted,
``n``/``N`` jump to the next/previous match line, the current one marked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar

from rich.highlighter import Highlighter
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.strip import Strip
from textual.widgets import Log

from console.format import printable

MAX_LINES = 5000
MATCH = "black on yellow"
CURRENT = "bold black on dark_orange"


class _Matches(Highlighter):
    """Styles the search's matches in a line (the current match line more strongly)."""

    def __init__(self) -> None:
        self.rx: re.Pattern[str] | None = None
        self.current = False

    def highlight(self, text: Text) -> None:
        if self.rx is None:
            return
        for m in self.rx.finditer(text.plain):
            if m.end() > m.start():
                text.stylize(CURRENT if self.current else MATCH, m.start(), m.end())


class LogPanel(Log):
    BINDINGS: ClassVar = [
        Binding("slash", "search", "Search log", show=False),
        Binding("n", "next_match(1)", "Next match", show=False),
        Binding("N", "next_match(-1)", "Previous match", show=False),
    ]

    def __init__(self, **kw: object) -> None:
        super().__init__(max_lines=MAX_LINES, highlight=True, auto_scroll=True, **kw)  # type: ignore[arg-type]
        self.path: str | None = None
        self.dlid: str | None = None  # the downlink whose instance log this is, if one
        self.matches = _Matches()
        self.highlighter = self.matches
        self.search = ""
        self.current: int | None = None  # the line of the current match

    def start(self, path: str, dlid: str | None = None) -> None:
        self.clear()
        self.path = path
        self.dlid = dlid
        self.current = None
        self._title()

    def _title(self) -> None:
        if self.path is None:
            self.border_title = "Log"
            return
        title = f"Log {printable(Path(self.path).name)} ({printable(self.path)}, following)"
        if self.search:
            n = sum(1 for _ in self.match_lines())
            title += f"  /{printable(self.search)}: {n} lines"
        self.border_title = title

    def drop(self, why: str) -> None:
        """Stop showing the log (the selection moved away from its downlink)."""
        self.clear()
        self.path = None
        self.dlid = None
        self._title()
        self.write_line(printable(why))

    def add(self, lines: list[str]) -> None:
        self.write_lines([printable(line) for line in lines])
        if self.search:
            self._title()

    # ---------------------------------------------------------------- search

    def set_search(self, pattern: str) -> None:
        """Highlight ``pattern`` (a regex, case-insensitive); raises re.error on a bad one."""
        rx = re.compile(pattern, re.IGNORECASE) if pattern else None
        self.search = pattern
        self.matches.rx = rx
        self.current = None
        self._render_line_cache.clear()
        self._title()
        self.refresh()

    def match_lines(self) -> list[int]:
        rx = self.matches.rx
        if rx is None:
            return []
        return [i for i, line in enumerate(self.lines) if rx.search(line)]

    def action_search(self) -> None:
        self.screen.query_one("#log-search").focus()

    def action_next_match(self, step: int) -> None:
        """The next (step 1) or previous (-1) line with a match, wrapping around."""
        hits = self.match_lines()
        if not hits:
            self.app.bell()
            return
        here = self.current if self.current is not None else int(self.scroll_y)
        if step > 0:
            after = [i for i in hits if i > here]
            target = after[0] if after else hits[0]
        else:
            before = [i for i in hits if i < here]
            target = before[-1] if before else hits[-1]
        self.current = target
        self.auto_scroll = False  # stay on the match while the log grows
        self._render_line_cache.clear()
        self.scroll_to(y=max(0, target - self.size.height // 2), animate=False)
        self.refresh()

    def _render_line_strip(self, y: int, rich_style: Style) -> Strip:
        self.matches.current = y == self.current
        if self.matches.current:
            self._render_line_cache.discard(y)
        return super()._render_line_strip(y, rich_style)
