"""The log of a selected process instance, following the file, bounded in memory.

Following is a thread worker (the app's) tailing the file and posting lines; this widget
only appends them. ``max_lines`` bounds memory however long a job writes (k9s issue 1188).
"""

from __future__ import annotations

from textual.widgets import Log

MAX_LINES = 5000


class LogPanel(Log):
    def __init__(self, **kw: object) -> None:
        super().__init__(max_lines=MAX_LINES, highlight=False, auto_scroll=True, **kw)  # type: ignore[arg-type]
        self.path: str | None = None

    def start(self, path: str) -> None:
        self.clear()
        self.path = path
        self.border_title = f"Log {path} (following)"

    def add(self, lines: list[str]) -> None:
        self.write_lines(lines)
