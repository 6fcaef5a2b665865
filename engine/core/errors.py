"""Errors that map to the documented exit codes (docs/design.md, "Command contract").

Every failure a user can cause or meet is one of these, carrying the file it concerns,
so the CLI prints exactly one line: ``skydeck-engine: <file>: <problem>``.
"""

from __future__ import annotations

from os import PathLike

EXIT_OK = 0
EXIT_FAILED = 1  # a job failed mid-way (I/O error, full disk, dead worker)
EXIT_USAGE = 2  # bad input or usage, detected before any output exists
EXIT_BUSY = 3  # busy or locked
EXIT_INTERRUPTED = 130


_ONE_LINE = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


class SkydeckError(Exception):
    """Base error: a message, optionally the file it concerns, and an exit code."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, path: str | PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        # one line, whatever the input put into a name or path (a TOML key may hold "\n")
        return text.translate(_ONE_LINE)


class BadInput(SkydeckError):
    """Input or usage is wrong; nothing was written (exit 2)."""

    exit_code = EXIT_USAGE


class JobFailed(SkydeckError):
    """The job started and failed; temporary outputs were removed (exit 1)."""

    exit_code = EXIT_FAILED


class Busy(SkydeckError):
    """Someone else holds the lock or the resource (exit 3)."""

    exit_code = EXIT_BUSY
