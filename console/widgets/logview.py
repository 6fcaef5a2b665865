"""The log of a selected process instance, following the file, bounded in memory.

Following is a thread worker (the app's) tailing the file and posting lines; this widget
only appends them. ``max_lines`` bounds memory however long a job writes (an unbounded log view is a
known way for a console to run out of memory).
The title names the file; lines are escaped (a log is data from outside: an ESC sequence
in it must not reach the terminal).
"""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Log

from console.format import printable

MAX_LINES = 5000


class LogPanel(Log):
    def __init__(self, **kw: object) -> None:
        super().__init__(max_lines=MAX_LINES, highlight=False, auto_scroll=True, **kw)  # type: ignore[arg-type]
        self.path: str | None = None
        self.dlid: str | None = None  # the downlink whose instance log this is, if one

    def start(self, path: str, dlid: str | None = None) -> None:
        self.clear()
        self.path = path
        self.dlid = dlid
        self.border_title = f"Log {printable(Path(path).name)} ({printable(path)}, following)"

    def drop(self, why: str) -> None:
        """Stop showing the log (the selection moved away from its downlink)."""
        self.clear()
        self.path = None
        self.dlid = None
        self.border_title = "Log"
        self.write_line(printable(why))

    def add(self, lines: list[str]) -> None:
        self.write_lines([printable(line) for line in lines])
