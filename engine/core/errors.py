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
# the state database cannot be reached now (a server restart, a failover, a network cut):
# sysexits' EX_TEMPFAIL, "try again later"; a restart (systemd's Restart=on-failure) may work
EXIT_UNAVAILABLE = 75
EXIT_NOPERM = 77  # sysexits' EX_NOPERM: this user may not read or write a workspace file
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


class NoPermission(SkydeckError):
    """This user may not read or write a file of the workspace (not in its group, or the
    file was made private by someone else); nothing was changed (exit 77)."""

    exit_code = EXIT_NOPERM


class StateUnavailable(SkydeckError):
    """The state database cannot be reached now: its server is down or restarting, or the
    connection was cut (a failover, ``pg_terminate_backend``, a network cut). Nothing is
    wrong with the input; the same call may succeed later (exit 75).

    ``cut``: a transaction or statement was under way when the connection went; none of
    it is known to be committed unless ``in_doubt`` (the connection went during COMMIT:
    it may have committed), so the store re-runs it only where a re-run recognises its own
    earlier write (engine/store/db.py). ``since``: when the server was first found
    unreachable (epoch seconds), None while that is not known."""

    exit_code = EXIT_UNAVAILABLE

    def __init__(
        self,
        message: str,
        path: str | PathLike[str] | None = None,
        *,
        cut: bool = False,
        in_doubt: bool = False,
        since: float | None = None,
    ) -> None:
        super().__init__(message, path)
        self.cut = cut
        self.in_doubt = in_doubt
        self.since = since
