"""Progress for long work: a Rich bar on a terminal, nothing when output is piped.

Jobs report through a callback, so the same job code drives the CLI bar, the console's
progress widget (through the state database) or nothing at all.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


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


@contextmanager
def progress(total: int | None, description: str, enabled: bool | None = None) -> Iterator[Progress]:
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
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True), transient=True,
    ) as prog:
        yield _Rich(prog, prog.add_task(description, total=total))
