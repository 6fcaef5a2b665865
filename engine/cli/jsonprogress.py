"""``python -m engine.cli.jsonprogress [-w W] COMMAND ...``: a CLI command with machine-readable progress.

Why: a front end that launches ``build`` or ``propagate`` as a separate process (so its own
loop never blocks, and a crash of the job cannot take it down) still wants a progress bar.
Commands report progress through ``engine.core.progress.progress``; this wrapper swaps that for a
reporter that writes one JSON object per line to stdout, at most ten a second:
``{"progress": done, "total": total, "what": description}``, then ``{"exit": code}``.
Other stdout lines (the command's own summary) pass through unchanged.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import engine.core.progress

_MIN_INTERVAL_S = 0.1


class _JsonProgress:
    def __init__(self, total: int | None, what: str) -> None:
        self.total, self.what, self.done, self._last = total, what, 0, 0.0
        self._emit(force=True)

    def _emit(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= _MIN_INTERVAL_S:
            self._last = now
            print(json.dumps({"progress": self.done, "total": self.total, "what": self.what}),
                  flush=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._emit()

    def set_total(self, total: int) -> None:
        self.total = total
        self._emit(force=True)


@contextmanager
def json_progress(total: int | None, description: str,
                  enabled: bool | None = None) -> Iterator[_JsonProgress]:
    bar = _JsonProgress(total, description)
    try:
        yield bar
    finally:
        bar._emit(force=True)


def main(argv: Sequence[str] | None = None) -> int:
    engine.core.progress.progress = json_progress  # before any command module imports it
    from engine.cli.main import main as cli_main

    code = cli_main(argv)
    print(json.dumps({"exit": code}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
