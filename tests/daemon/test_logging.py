"""Logging of `watch` and `run` (README, "Logs"), with the real CLI in real processes.

Human lines at a terminal (forced here with ``--log-format human``), JSON lines otherwise
with the fields the lines always carried (compared with the event dicts the daemon hands
its ``emit``), ``-q`` and ``--log-level``, one-line errors for bad values, and
``logs/daemon.log`` staying JSON lines whatever the terminal shows.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

from engine.core.log import EVENT_LEVELS
from engine.core.workspace import Workspace, init_workspace
from engine.daemon import run_daemon
from tests.pipeline.conftest import FAST, REPO, cli_proc, make_delivery, quick, set_config

DLID = "251126001"
HUMAN = re.compile(r"^\d\d:\d\d:\d\d (?:(DEBUG|WARNING|ERROR|CRITICAL) )?(\w+) +(\d{9})?")


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def _daemon_log(ws: Workspace) -> list[dict]:
    return _json_lines(ws.daemon_log.read_text(encoding="utf-8"))


def test_watch_once_human_lines_and_daemon_log_stays_json(ws):
    ws = quick(ws)
    make_delivery(ws, DLID, **FAST)
    r = cli_proc(ws, "--log-format", "human", "watch", "--once")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines and not any(line.lstrip().startswith("{") for line in lines), r.stdout
    parsed = [HUMAN.match(line) for line in lines]
    assert all(parsed), r.stdout
    events = [(m.group(2), m.group(3)) for m in parsed if m]
    assert ("registered", DLID) in events and events[-1] == ("stream_success", DLID)
    started = next(line for line in lines if " started " in line)
    assert f"{DLID} makeEvt[" in started and "pid=" in started and "log=" in started
    # the console's log: the same events as JSON lines, whatever the terminal got
    logged = _daemon_log(ws)
    assert [(e["event"], e.get("dlid")) for e in logged] == events
    assert all(e["logger"].startswith("skydeck.") for e in logged)


def test_run_human_lines(ws):
    ws = quick(ws)
    make_delivery(ws, DLID, **FAST)
    r = cli_proc(ws, "run", DLID, "--log-format", "human")  # the option after the command too
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(HUMAN.match(line) for line in lines), r.stdout
    assert re.match(rf"^\d\d:\d\d:\d\d stream_success +{DLID}", lines[-1]), lines[-1]
    assert not ws.daemon_log.exists()  # `run` is no daemon


def test_json_lines_carry_every_field_the_events_had(ws, tmp_path, monkeypatch):
    """The same delivery through the daemon twice: once in-process with an ``emit`` that
    keeps the event dicts as built (the fields the JSON lines always had), once as
    `watch --once` writing JSON lines (a pipe: the default). Every event keeps its fields,
    gains ``level`` and ``logger``, and the daemon's log has exactly the stdout lines. The
    reference workspace keeps its state in its own SQLite file (with the state in
    PostgreSQL, both workspaces would otherwise share one database and one downlink)."""
    ws = quick(ws)
    other = quick(set_config(init_workspace(tmp_path / "ws2"), "[disk]\nreserve_bytes = 0\n"))
    make_delivery(ws, DLID, **FAST)
    make_delivery(other, DLID, **FAST)
    raw: list[dict] = []
    with monkeypatch.context() as m:
        m.delenv("SKYDECK_STATE_URL", raising=False)
        res = run_daemon(other, once=True, emit=raw.append)
    assert res.succeeded == [DLID] and not other.daemon_log.exists()

    r = cli_proc(ws, "watch", "--once")
    assert r.returncode == 0, r.stderr
    lines = _json_lines(r.stdout)
    want = {e["event"]: set(e) for e in raw if e["event"] != "pending"}
    got = {e["event"]: set(e) - {"level", "logger"} for e in lines if e["event"] != "pending"}
    assert got == want
    for e in lines:
        assert list(e)[:2] == ["t", "event"] and list(e)[-2:] == ["level", "logger"]
        level = EVENT_LEVELS.get(e["event"], logging.INFO)
        assert e["level"] == logging.getLevelName(level).lower()
    assert {e["logger"] for e in lines} == {"skydeck.daemon", "skydeck.intake", "skydeck.pipeline"}
    assert _daemon_log(ws) == lines
    # --log-format json says the same as the default for a pipe
    make_delivery(ws, "251126002", **FAST)
    r = cli_proc(ws, "watch", "--once", "--log-format", "json")
    assert r.returncode == 0 and _json_lines(r.stdout)[-1]["event"] == "stream_success"


def test_quiet_keeps_errors_and_daemon_log_keeps_everything(ws):
    """A stream whose log directory is blocked by a file: an error line the daemon backs off
    from. With -q the terminal gets that error and no information line; daemon.log still
    has every event."""
    ws = quick(ws)
    ws.logs.mkdir(parents=True, exist_ok=True)
    (ws.logs / DLID).write_text("not a directory")
    make_delivery(ws, DLID, **FAST)
    r = cli_proc(ws, "-q", "watch", "--once")
    assert r.returncode == 1, r.stderr
    lines = _json_lines(r.stdout)
    assert lines and {e["level"] for e in lines} <= {"warning", "error"}
    assert any(e["event"] == "error" and e["dlid"] == DLID for e in lines)
    assert f"stream:{DLID}" in r.stderr  # the CLI's own closing line, as before
    logged = {e["event"] for e in _daemon_log(ws)}
    assert {"once", "registered", "stream_claimed", "error"} <= logged


def test_debug_level_shows_debug_lines_and_info_does_not(ws, monkeypatch):
    ws = quick(ws)
    make_delivery(ws, DLID, **FAST)
    r = cli_proc(ws, "watch", "--once", "--log-level", "debug")
    assert r.returncode == 0, r.stderr
    debug = [e for e in _json_lines(r.stdout) if e["level"] == "debug"]
    assert {"config", "scan"} <= {e["event"] for e in debug}
    assert any(e["event"] == "config" and e["workspace"] == str(ws.root) for e in debug)
    assert "debug" in {e["level"] for e in _daemon_log(ws)}  # the daemon's log has them too
    r = cli_proc(ws, "watch", "--once")  # info: the default
    assert r.returncode == 0 and {e["level"] for e in _json_lines(r.stdout)} == {"info"}
    # SKYDECK_LOG_LEVEL is the default an option overrides; -v is one level more
    monkeypatch.setenv("SKYDECK_LOG_LEVEL", "DEBUG")
    r = cli_proc(ws, "watch", "--once")
    assert r.returncode == 0 and "debug" in {e["level"] for e in _json_lines(r.stdout)}
    r = cli_proc(ws, "--log-level", "info", "watch", "--once")
    assert r.returncode == 0 and {e["level"] for e in _json_lines(r.stdout)} == {"info"}
    make_delivery(ws, "251126002", **FAST)
    monkeypatch.setenv("SKYDECK_LOG_LEVEL", "error")
    r = cli_proc(ws, "-v", "run", "251126002")  # warning: a clean run says nothing
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""


def test_bad_log_options_are_one_line_exit_2(ws, monkeypatch):
    for args in (["--log-format", "xml", "watch", "--once"], ["watch", "--log-level", "loud"]):
        r = cli_proc(ws, *args)
        assert r.returncode == 2 and r.stdout == ""
        assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("skydeck-engine: --log-")
    monkeypatch.setenv("SKYDECK_LOG_FORMAT", "yaml")
    r = cli_proc(ws, "watch", "--once")
    assert r.returncode == 2 and r.stderr == (
        "skydeck-engine: SKYDECK_LOG_FORMAT: 'yaml' is not one of auto, human, json\n"
    )


def test_unwritable_daemon_log_loses_lines_not_the_daemon(ws):
    """daemon.log cannot be opened (a directory is in its place): every event still reaches
    stdout, the stream succeeds, and stderr says once that the log lines are lost."""
    ws = quick(ws)
    ws.daemon_log.mkdir(parents=True)
    make_delivery(ws, DLID, **FAST)
    r = cli_proc(ws, "watch", "--once")
    assert r.returncode == 0, r.stderr
    assert _json_lines(r.stdout)[-1]["event"] == "stream_success"
    (warning,) = _json_lines(r.stderr)
    assert warning["event"] == "log_unwritable" and warning["level"] == "warning"
    assert warning["path"] == str(ws.daemon_log) and "IsADirectoryError" in warning["error"]


def test_auto_is_human_at_a_terminal_and_json_in_a_pipe(ws):
    """stdout a pseudo-terminal: human lines, while stderr (a pipe) would get JSON."""
    ws = quick(ws)
    make_delivery(ws, DLID, **FAST)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("SKYDECK_LOG_FORMAT", None)
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "-w", str(ws.root), "watch", "--once"],
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            chunks.append(chunk)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and err == b"", err
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = b"".join(chunks).decode().replace("\r\n", "\n").splitlines()
    assert lines and all(HUMAN.match(line) for line in lines), lines
    assert re.match(rf"^\d\d:\d\d:\d\d stream_success +{DLID}", lines[-1])
