"""engine/core/log.py in-process: the two formats, the option and environment parsers (any
text gives a value or BadInput), setup called again, and daemon.log's handler."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.cli.main import LOG_FORMATS, LOG_LEVELS, command_in
from engine.core import log
from engine.core.errors import BadInput


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test configures the ``skydeck`` logger; the next test (any test) finds it as it was."""
    root = logging.getLogger(log.ROOT)
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    root.propagate = saved[2]


def _record(ev: dict | None, level: int = logging.INFO, msg: str = "x") -> logging.LogRecord:
    rec = logging.LogRecord("skydeck.pipeline", level, __file__, 1, msg, None, None)
    if ev is not None:
        rec.skydeck_event = ev
    return rec


EV = {
    "t": 1796165096.307,
    "event": "started",
    "dlid": "251114007",
    "stream": 3,
    "process": "makeEvt",
    "key": "00001",
    "pi": 14,
    "execution": 2,
    "pid": 16453,
    "log": "/ws/logs/251114007/makeEvt-00001-e2.log",
    "why": "two words",
    "none": None,
    "dirs": ["/a", "/b"],
    "polling": False,
    "latency_s": 0.49220001,
}


def test_json_keeps_the_events_fields_in_order_then_level_and_logger() -> None:
    line = log.JsonFormatter().format(_record(EV, logging.WARNING))
    assert line.startswith('{"t":1796165096.307,"event":"started","dlid":"251114007",')
    out = json.loads(line)
    assert list(out) == [*EV, "level", "logger"]
    assert out["level"] == "warning" and out["logger"] == "skydeck.pipeline" and out["none"] is None
    assert {k: out[k] for k in EV} == EV
    # a plain record: its message is the event, the time the record's
    plain = json.loads(log.JsonFormatter().format(_record(None, msg="something happened")))
    assert plain["event"] == "something happened" and isinstance(plain["t"], float)


def test_human_line_is_short_aligned_and_without_braces() -> None:
    line = log.HumanFormatter().format(_record(EV))
    assert line.endswith(
        'pid=16453 log=/ws/logs/251114007/makeEvt-00001-e2.log why="two words" '
        "dirs=/a,/b polling=no latency_s=0.492"
    )
    assert " started          251114007 makeEvt[00001] e2 " in line
    assert "{" not in line and "none=" not in line and "pi=" not in line
    short = log.HumanFormatter().format(_record({"t": EV["t"], "event": "once", "pid": 7}))
    assert short[8:] == " once                       pid=7"  # the dlid column kept
    err = log.HumanFormatter().format(_record({"event": "error", "error": "E: x"}, logging.ERROR))
    assert err[8:] == ' ERROR error                      error="E: x"'


_texts = st.text(max_size=40) | st.sampled_from(
    ["json", " Human ", "AUTO", "warn", "DEBUG", "critical", "", "info\n"]
)


@given(_texts)
def test_parse_format_is_total(text: str) -> None:
    try:
        assert log.parse_format(text) in log.FORMATS
    except BadInput as err:
        assert str(err).startswith("--log-format: ") and "\n" not in str(err)


@given(_texts)
def test_parse_level_is_total(text: str) -> None:
    try:
        assert log.parse_level(text) in log.LEVELS
    except BadInput as err:
        assert str(err).startswith("--log-level: ") and "\n" not in str(err)


@given(
    st.none() | _texts,
    st.none() | _texts,
    st.dictionaries(st.sampled_from([log.ENV_FORMAT, log.ENV_LEVEL, "OTHER"]), _texts),
    st.integers(0, 50),
    st.integers(0, 50),
)
def test_resolve_is_total_and_bounded(fmt, level, env, verbose, quiet) -> None:
    try:
        conf = log.resolve(fmt, level, verbose, quiet, env)
    except BadInput:
        return
    assert logging.DEBUG <= conf.level <= logging.CRITICAL
    assert conf.stdout in ("human", "json") and conf.stderr in ("human", "json")


def test_resolve_precedence() -> None:
    env = {log.ENV_FORMAT: "human", log.ENV_LEVEL: "error"}
    assert log.resolve(env=env) == log.LogSetup(logging.ERROR, "human", "human")
    assert log.resolve("json", "info", env=env).level == logging.INFO
    assert log.resolve(env={}).stdout == "json"  # pytest's capture is no terminal
    assert log.resolve(verbose=3, env={}).level == logging.DEBUG
    assert log.resolve(quiet=1, env={}).level == logging.WARNING
    assert log.resolve(quiet=9, env={}).level == logging.CRITICAL
    with pytest.raises(BadInput, match="^SKYDECK_LOG_LEVEL: 'loud' is not one of"):
        log.resolve(env={log.ENV_LEVEL: "loud"})


def test_setup_again_replaces_its_handlers_and_follows_sys_stdout(capsys) -> None:
    log.setup("json", env={})
    log.setup("human", env={})
    log.emit_event(
        log.logger("pipeline"), {"t": 0.0, "event": "stream_success", "dlid": "251114005"}
    )
    log.emit_event(log.logger("pipeline"), {"t": 0.0, "event": "hidden"}, logging.DEBUG)
    log.logger("daemon").warning("a diagnostic")
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and "stream_success   251114005" in out
    assert err.count("\n") == 1 and " WARNING a diagnostic" in err


def test_a_broken_stdout_raises_unless_a_daemon_log_is_attached(
    monkeypatch, tmp_path: Path
) -> None:
    class Gone(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    root = logging.getLogger(log.ROOT)
    log.setup("json", "warning", env={})
    assert root.level == logging.INFO  # info reaches a daemon.log
    log.setup("json", env={})
    monkeypatch.setattr("sys.stdout", Gone())
    ev = {"t": 1.0, "event": "stream_success", "dlid": "251114005"}
    with pytest.raises(BrokenPipeError):  # `run | head`: as print did
        log.emit_event(log.logger("pipeline"), ev)
    handler = log.attach_file(tmp_path / "daemon.log")
    try:
        log.emit_event(log.logger("pipeline"), ev)  # lost on stdout, kept in the file
    finally:
        log.detach_file(handler)
    assert json.loads((tmp_path / "daemon.log").read_text())["event"] == "stream_success"
    with pytest.raises(BrokenPipeError):
        log.emit_event(log.logger("pipeline"), ev)
    assert handler not in root.handlers


def test_an_unwritable_file_warns_once_per_run_of_failures(tmp_path: Path, capsys) -> None:
    log.setup("json", env={})
    where = tmp_path / "gone" / "daemon.log"
    handler = log.attach_file(where)
    try:
        for _ in range(3):
            log.emit_event(log.logger("daemon"), {"event": "once"})
        where.parent.mkdir()
        log.emit_event(log.logger("daemon"), {"event": "once"})
        where.parent.rename(tmp_path / "moved")
        log.emit_event(log.logger("daemon"), {"event": "once"})
    finally:
        log.detach_file(handler)
    out, err = capsys.readouterr()
    assert out.count("\n") == 5
    warnings = [json.loads(line) for line in err.splitlines()]
    assert [w["event"] for w in warnings] == ["log_unwritable", "log_unwritable"]
    assert (tmp_path / "moved" / "daemon.log").read_text().count("\n") == 1


def test_command_in_skips_the_log_options_values() -> None:
    assert command_in(["--log-level", "debug", "watch", "--once"]) == "watch"
    assert command_in(["--log-format", "json", "-q", "run", "251114005"]) == "run"


def test_the_parsers_names_are_the_modules() -> None:
    """engine/cli/main.py lists them itself so that --help imports no logging."""
    assert LOG_FORMATS == log.FORMATS and list(LOG_LEVELS) == list(log.LEVELS)


def test_human_from_json_reads_a_daemon_log_line() -> None:
    """A JSON event line of logs/daemon.log in the human format (the console's Log pane)."""
    import json as _json
    import time as _time

    from engine.core.log import human_from_json

    t = 1795600000.5
    line = _json.dumps(
        {"t": t, "event": "stream_failed", "dlid": "251125001", "why": "x y", "level": "error"}
    )
    when = _time.strftime("%H:%M:%S", _time.localtime(t))
    assert human_from_json(line) == f'{when} ERROR stream_failed    251125001 why="x y"'
    info = human_from_json(_json.dumps({"t": t, "event": "registered", "logger": "skydeck.x"}))
    assert info == f"{when} registered"
    assert human_from_json("plain text") is None and human_from_json("{bad") is None
