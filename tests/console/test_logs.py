"""The Log pane: it names its file, shows the daemon's JSON event lines as a person reads
them (local time, level, event, fields), and searches with `/`, n and N. A real daemon
(`skydeck-engine watch --once`) writes logs/daemon.log."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from textual.widgets import Input

from console.app import SkydeckApp
from console.screens.modals import LogPickerScreen
from console.widgets.logview import LogPanel
from engine import api

from .conftest import mock, settle

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("size", [(120, 40), (160, 48)])
async def test_daemon_log_human_lines_and_search(ws, size) -> None:
    mock(ws, "251125001", events=60)
    mock(ws, "251125002", events=60)
    res = subprocess.run(api.engine_argv(ws, "watch", "--once"), capture_output=True, timeout=180)
    assert res.returncode == 0, res.stderr
    raw = ws.daemon_log.read_text().splitlines()
    assert raw and all(line.startswith("{") for line in raw)
    with ws.daemon_log.open("a") as fh:  # an event line carrying a terminal escape
        fh.write(json.dumps({"t": time.time(), "event": "note", "text": "a\x1b[2Jb"}) + "\n")
    app = SkydeckApp(ws, poll_s=0.05, stage_every_s=3600)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await pilot.press("L")
        await settle(pilot, lambda: isinstance(app.screen, LogPickerScreen))
        await pilot.press("enter")  # the daemon's log comes first
        panel = app.q(LogPanel)
        await settle(pilot, lambda: panel.line_count >= len(raw))
        assert "daemon.log" in str(panel.border_title)
        assert not any(line.lstrip().startswith("{") for line in panel.lines)
        first = json.loads(raw[0])
        want = time.strftime("%H:%M:%S", time.localtime(first["t"])) + " " + first["event"]
        assert panel.lines[0].startswith(want)
        assert any("stream_success" in line and "251125002" in line for line in panel.lines)
        note = next(line for line in panel.lines if " note " in line)
        assert "\\u001b[2J" in note and "\x1b" not in note  # escaped, shown
        # search: / in the pane, enter jumps to the first match line, n/N move
        panel.focus()
        await pilot.press("slash", *"251125002", "enter")
        hits = panel.match_lines()
        assert len(hits) >= 2 and panel.current in hits  # the first match below the view's top
        at = hits.index(panel.current)
        assert f"/251125002: {len(hits)} lines" in str(panel.border_title)
        await pilot.press("n")
        assert panel.current == hits[(at + 1) % len(hits)]
        await pilot.press("N")
        assert panel.current == hits[at]
        await pilot.press("home")
        panel.current = None
        await pilot.press("N")  # from the top, backwards: wraps around to the last
        assert panel.current == hits[-1]
        line = panel._render_line_strip(hits[-1], panel.rich_style)
        assert any(seg.style and seg.style.bgcolor for seg in line)  # highlighted
        # a bad regex is an error on the search input
        box = app.q("#log-search", Input)
        box.value = "(["
        await pilot.pause()
        assert box.has_class("error") and "bad regex" in str(box.border_title)
        await pilot.press("escape")
        assert box.value == "" and panel.search == ""
