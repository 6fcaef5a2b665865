"""Logging: the engine's event lines through the standard ``logging`` module, one logger per area.

Why: the daemon and ``run`` printed JSON lines with ``print``, readable by scripts and the
console but not by a person at a terminal, with no way to quiet them or to see more. Here:

- one logger per area (``skydeck.daemon``, ``skydeck.pipeline``, ``skydeck.intake``, ...);
  an *event* is a record whose payload is the dict the JSON line always carried (``event``,
  ``dlid``, ...), given as ``extra`` so nothing in it is lost;
- two formats: ``json`` (the event's fields exactly as before, then ``level`` and ``logger``)
  and ``human`` (``22:41:03 stream_success  251114005 note=...``: short, aligned, no braces);
  ``auto`` picks human for a stream that is a terminal, JSON otherwise (pipes, files, the
  journal), so every script and test that reads the lines keeps reading JSON;
- where lines go: events to stdout (the event stream scripts pipe), other diagnostics to
  stderr; ``logs/daemon.log`` gets JSON lines from the daemon whatever the terminal shows
  (``attach_file``), and a line it cannot write is lost, never the process;
- ``setup`` is called once by the CLI's ``main`` with ``--log-format``, ``--log-level``,
  ``-v``/``-q`` and ``SKYDECK_LOG_FORMAT``/``SKYDECK_LOG_LEVEL``; a bad value is ``BadInput``.

Only the ``skydeck`` logger is configured (it does not propagate to the root logger), so a
library's logging (watchdog, Textual) is left as it was.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from engine.core.errors import BadInput
from engine.core.text import printable

ROOT = "skydeck"
AREAS = ("cli", "daemon", "pipeline", "intake", "store", "builder", "propagate")
FORMATS = ("auto", "human", "json")
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_ALIASES = {"warn": "warning", "fatal": "critical"}
ENV_FORMAT = "SKYDECK_LOG_FORMAT"
ENV_LEVEL = "SKYDECK_LOG_LEVEL"

# The level of each event that is not plain information: -q keeps these, -qq the errors only.
EVENT_LEVELS: dict[str, int] = {
    "error": logging.ERROR,  # a contained fault (daemon), backing off
    "stream_failed": logging.ERROR,
    "failed": logging.WARNING,  # one process instance
    "rejected": logging.WARNING,  # a delivery, moved to rejected/
    "stream_canceled": logging.WARNING,
    "instance_failed_owner_died": logging.WARNING,
    "requeued": logging.WARNING,  # a job lost (node died) and queued again
    "stale_lock": logging.WARNING,
    "blocking_lock": logging.WARNING,
    "lock_reclaimed": logging.WARNING,
    "takeover": logging.WARNING,  # a dead owner's stream, claim or lock taken
    "presence_lost": logging.WARNING,  # this daemon's server session was lost
    "stream_lost": logging.WARNING,  # given up: another owner took it meanwhile
    "alert_failed": logging.WARNING,  # an [alerts] hook failed, hung or could not start
    "alert_dropped": logging.WARNING,  # alerts over the rate or the queue
}

_PAYLOAD = "skydeck_event"  # LogRecord attribute: the event's fields
_STREAM = "skydeck_stream"  # LogRecord attribute: "out" for the event stream
_OURS = "_skydeck_handler"  # marks the handlers setup() installed (replaced on a new setup)
_MAX_TEXT = 64  # characters of a bad option value quoted back


def logger(area: str) -> logging.Logger:
    """The logger of an area: ``skydeck.<area>``."""
    return logging.getLogger(f"{ROOT}.{area}")


logging.getLogger(ROOT).addHandler(logging.NullHandler())  # a library: no lastResort lines


def json_line(ev: Mapping[str, Any]) -> str:
    """One event as one compact JSON line (anything not JSON, a Path, as its ``str``)."""
    return json.dumps(ev, separators=(",", ":"), default=str)


def event_level(ev: Mapping[str, Any]) -> int:
    return EVENT_LEVELS.get(str(ev.get("event", "")), logging.INFO)


def emit_event(log: logging.Logger, ev: Mapping[str, Any], level: int | None = None) -> None:
    """Log one event dict (the fields of its JSON line) on the event stream (stdout).

    The level is ``level`` or the event's own (``EVENT_LEVELS``, else info). An error writing
    stdout (its reader gone) is raised to the caller, as ``print`` did; ``logs/daemon.log``,
    written first, has the line already."""
    lvl = event_level(ev) if level is None else level
    if log.isEnabledFor(lvl):
        log.log(lvl, str(ev.get("event", "event")), extra={_PAYLOAD: dict(ev), _STREAM: "out"})


def payload(record: logging.LogRecord) -> dict[str, Any]:
    """The fields of a record: an event's dict, or ``event`` = the message of a plain one
    (with its exception, if any, as ``error``)."""
    ev = getattr(record, _PAYLOAD, None)
    if isinstance(ev, dict):
        return ev
    out: dict[str, Any] = {"event": record.getMessage()}
    if record.exc_info and record.exc_info[1] is not None:
        err = record.exc_info[1]
        out["error"] = f"{type(err).__name__}: {' '.join(str(err).split())}"
    return out


class JsonFormatter(logging.Formatter):
    """The event's fields in their order (``t`` first, as before), then ``level`` and
    ``logger``; a field of the event of either name is kept as it was."""

    def format(self, record: logging.LogRecord) -> str:
        ev = payload(record)
        out: dict[str, Any] = {"t": ev.get("t", round(record.created, 3))}
        out.update(ev)
        out.setdefault("level", record.levelname.lower())
        out.setdefault("logger", record.name)
        return json_line(out)


# fields the human line shows in its own columns, or not at all (internal row ids); with a
# process, also its key and execution
_HUMAN_SKIP = frozenset({"t", "event", "dlid", "stream", "pi"})
_HUMAN_PROCESS = frozenset({"process", "key", "execution"})


def _human_value(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".") if abs(v) < 1e12 else repr(v)
    if isinstance(v, list | tuple):
        return ",".join(_human_value(x) for x in v)
    if isinstance(v, dict):
        return json_line(v)
    s = str(v)
    if not s or any(c.isspace() or c in '"=' or not c.isprintable() for c in s):
        # JSON escapes C0 controls; printable() the rest (C1, bidi overrides, separators)
        return printable(json.dumps(s, ensure_ascii=False), backslash=False)
    return s


class HumanFormatter(logging.Formatter):
    """``HH:MM:SS [LEVEL] event dlid process[key] k=v ...``: the time, the event name and the
    downlink in aligned columns, then the rest; info lines carry no level word, so a
    warning or an error stands out. Fields that are None are left out."""

    def format(self, record: logging.LogRecord) -> str:
        ev = payload(record)
        t = ev.get("t")
        when = time.strftime(
            "%H:%M:%S", time.localtime(t if isinstance(t, int | float) else record.created)
        )
        head = when if record.levelno == logging.INFO else f"{when} {record.levelname}"
        dlid = ev.get("dlid")
        parts = [
            f"{head} {printable(ev.get('event', '')):<16}",
            f"{_human_value(dlid) if dlid else '':<9}",
        ]
        if ev.get("process"):
            what = printable(ev["process"]) + (f"[{printable(ev['key'])}]" if ev.get("key") else "")
            execution = ev.get("execution")
            if isinstance(execution, int) and execution > 1:
                what += f" e{execution}"
            parts.append(what)
        skip = _HUMAN_SKIP | _HUMAN_PROCESS if ev.get("process") else _HUMAN_SKIP
        parts += [
            f"{k}={_human_value(v)}" for k, v in ev.items() if k not in skip and v is not None
        ]
        return " ".join(parts).rstrip()


class _Stream(logging.Handler):
    """stdout (events) or stderr (the rest), looked up at each line (a test's capture, a
    redirected stream). ``lenient``: a failed write loses the line instead of raising."""

    def __init__(self, name: str, level: int, lenient: bool) -> None:
        super().__init__(level)
        self.name_ = name
        self.lenient = lenient
        want_events = name == "stdout"
        self.addFilter(lambda r: (getattr(r, _STREAM, None) == "out") == want_events)
        setattr(self, _OURS, True)

    def emit(self, record: logging.LogRecord) -> None:
        stream = getattr(sys, self.name_, None)
        if stream is None:
            return
        line = self.format(record)
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            if not self.lenient:
                raise


class AppendFile(logging.Handler):
    """JSON lines appended to one file, opened for each line as ``print`` to a file was: a
    log rotated or removed is simply created again, nothing is held open for years. A line
    that cannot be written (disk full, no permission, the directory gone) is lost, never the
    process; the first loss of a run of them says so once on stderr."""

    def __init__(self, path: Path, level: int) -> None:
        super().__init__(level)
        self.path = path
        self.failing = False
        self.restore: tuple[int, list[tuple[_Stream, bool]]] | None = None  # attach_file's
        self.setFormatter(JsonFormatter())
        setattr(self, _OURS, True)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line)
        except (OSError, ValueError) as err:
            if not self.failing:
                self.failing = True  # before logging: this handler sees that line too
                logger("daemon").warning(
                    "log_unwritable",
                    extra={
                        _PAYLOAD: {
                            "event": "log_unwritable",
                            "path": str(self.path),
                            "error": f"{type(err).__name__}: {' '.join(str(err).split())}",
                            "why": "lines are lost until it can be written again",
                        }
                    },
                )
        else:
            self.failing = False


def parse_format(text: object, what: str = "--log-format") -> str:
    """``auto``, ``human`` or ``json`` (any case); else BadInput naming ``what``."""
    t = text.strip().lower() if isinstance(text, str) else None
    if t not in FORMATS:
        shown = text[:_MAX_TEXT] if isinstance(text, str) else type(text).__name__
        raise BadInput(f"{what}: {shown!r} is not one of {', '.join(FORMATS)}")
    return t


def parse_level(text: object, what: str = "--log-level") -> str:
    """A level name (``debug``, ``info``, ``warning``/``warn``, ``error``, ``critical``, any
    case), normalized; else BadInput naming ``what``."""
    t = text.strip().lower() if isinstance(text, str) else None
    t = _ALIASES.get(t, t) if t is not None else None
    if t not in LEVELS:
        shown = text[:_MAX_TEXT] if isinstance(text, str) else type(text).__name__
        raise BadInput(f"{what}: {shown!r} is not one of {', '.join(LEVELS)}")
    return t


class LogSetup(NamedTuple):
    """What ``setup`` decided: the level shown, and the format of each stream."""

    level: int
    stdout: str  # "human" or "json"
    stderr: str


def _is_tty(name: str) -> bool:
    stream = getattr(sys, name, None)
    try:
        return bool(stream is not None and stream.isatty())
    except (OSError, ValueError):
        return False


def resolve(
    fmt: str | None = None,
    level: str | None = None,
    verbose: int = 0,
    quiet: int = 0,
    env: Mapping[str, str] | None = None,
) -> LogSetup:
    """Options over environment over defaults (auto, info); each -v one level more, each -q
    one less. A bad value, given or in the environment, is BadInput."""
    env = os.environ if env is None else env
    if fmt is None and env.get(ENV_FORMAT):
        fmt = parse_format(env[ENV_FORMAT], ENV_FORMAT)
    fmt = parse_format(fmt if fmt is not None else "auto")
    if level is None and env.get(ENV_LEVEL):
        level = parse_level(env[ENV_LEVEL], ENV_LEVEL)
    base = LEVELS[parse_level(level if level is not None else "info")]
    shown = min(logging.CRITICAL, max(logging.DEBUG, base + 10 * (quiet - verbose)))

    def pick(stream: str) -> str:
        if fmt != "auto":
            return fmt
        return "human" if _is_tty(stream) else "json"

    return LogSetup(shown, pick("stdout"), pick("stderr"))


def setup(
    fmt: str | None = None,
    level: str | None = None,
    verbose: int = 0,
    quiet: int = 0,
    env: Mapping[str, str] | None = None,
) -> LogSetup:
    """Configure the ``skydeck`` logger for this process (called once by the CLI's main; a
    second call replaces the first's handlers)."""
    conf = resolve(fmt, level, verbose, quiet, env)
    root = logging.getLogger(ROOT)
    for h in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(h)
    for name, kind in (("stdout", conf.stdout), ("stderr", conf.stderr)):
        h = _Stream(name, conf.level, lenient=False)
        h.setFormatter(HumanFormatter() if kind == "human" else JsonFormatter())
        root.addHandler(h)
    # records at info reach logs/daemon.log (attach_file) even when the terminal shows less
    root.setLevel(min(conf.level, logging.INFO))
    root.propagate = False
    return conf


def attach_file(path: Path) -> AppendFile:
    """From now on every ``skydeck`` record at info or above (debug too when the terminal
    shows debug) is also appended to ``path`` as a JSON line, before the terminal gets it,
    and the terminal's handlers lose a line they cannot write instead of raising (a daemon
    outlives its readers). ``detach_file`` undoes it."""
    root = logging.getLogger(ROOT)
    handler = AppendFile(path, min(logging.INFO, root.getEffectiveLevel()))
    streams = [h for h in root.handlers if isinstance(h, _Stream)]
    handler.restore = (root.level, [(h, h.lenient) for h in streams])
    root.setLevel(handler.level)
    root.handlers.insert(0, handler)  # first: the file has the line whatever stdout does
    for h in streams:
        h.lenient = True
    return handler


def detach_file(handler: AppendFile) -> None:
    root = logging.getLogger(ROOT)
    root.removeHandler(handler)
    if handler.restore is not None:
        level, streams = handler.restore
        root.setLevel(level)
        for h, lenient in streams:
            h.lenient = lenient
        handler.restore = None


def json_object(line: str) -> dict[str, Any] | None:
    """A line holding one JSON object (as ``logs/daemon.log``'s lines do), parsed; None for
    any other line."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        ev = json.loads(text)
    except ValueError:
        return None
    return ev if isinstance(ev, dict) else None


def human_from_json(line: str) -> str | None:
    """A JSON event line (``logs/daemon.log``) in the human format (local time, the level
    when not info, the event, its fields); None when the line is not such an event."""
    ev = json_object(line)
    return None if ev is None or "event" not in ev else human_event(ev)


def human_event(event: dict[str, Any]) -> str:
    """An event (a parsed JSON event line, with its ``event`` key) in the human format."""
    ev = dict(event)
    name = str(ev.pop("level", "info")).upper()
    ev.pop("logger", None)
    levelno = LEVELS.get(name.lower(), logging.INFO)
    t = ev.get("t")
    record = logging.makeLogRecord(
        {
            "levelno": levelno,
            "levelname": logging.getLevelName(levelno),
            "created": t if isinstance(t, int | float) else time.time(),
            _PAYLOAD: ev,
        }
    )
    return HumanFormatter().format(record)
