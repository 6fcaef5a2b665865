"""Progress for long work: a Rich bar on a terminal, JSON lines for a front end that runs
the command as a child process, nothing when output is piped.

Jobs report through a ``Progress`` (``advance``, ``set_total``), so the same job code drives
the CLI bar, a front end's progress widget or nothing at all. Which reporter ``progress()``
hands out is decided once per process: by default from the terminal; ``report_json_lines()``
(``python -m engine.cli.jsonprogress``, how the console starts a build) switches to one JSON
object per line on stdout, ``{"progress": done, "total": total, "what": description}``, at
most ten a second.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

_MIN_INTERVAL_S = 0.1
_json_lines = False  # report_json_lines(): the process's one decision


class Progress(Protocol):
    def advance(self, n: int = 1) -> None: ...

    def set_total(self, total: int) -> None: ...


class _Null:
    def advance(self, n: int = 1) -> None:
        pass

    def set_total(self, total: int) -> None:
        pass


class _Rich:
    def __init__(self, prog, task) -> None:  # type: ignore[no-untyped-def]
        self._prog, self._task = prog, task

    def advance(self, n: int = 1) -> None:
        self._prog.advance(self._task, n)

    def set_total(self, total: int) -> None:
        self._prog.update(self._task, total=total)


class _JsonLines:
    """One JSON object per line on stdout, at most ten a second (and at every total)."""

    def __init__(self, total: int | None, what: str) -> None:
        self.total, self.what, self.done, self._last = total, what, 0, 0.0
        self.emit(force=True)

    def emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= _MIN_INTERVAL_S:
            self._last = now
            print(
                json.dumps({"progress": self.done, "total": self.total, "what": self.what}),
                flush=True,
            )

    def advance(self, n: int = 1) -> None:
        self.done += n
        self.emit()

    def set_total(self, total: int) -> None:
        self.total = total
        self.emit(force=True)


def report_json_lines() -> None:
    """Every ``progress()`` of this process reports JSON lines on stdout from now on."""
    global _json_lines
    _json_lines = True


@contextmanager
def progress(
    total: int | None, description: str, enabled: bool | None = None
) -> Iterator[Progress]:
    if _json_lines:
        bar = _JsonLines(total, description)
        try:
            yield bar
        finally:
            bar.emit(force=True)
        return
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield _Null()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    with RichProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as prog:
        yield _Rich(prog, prog.add_task(description, total=total))
