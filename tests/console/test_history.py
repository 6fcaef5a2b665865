"""History: earlier executions stay visible in the stream tree with their dates, and `t`
draws the stream's timeline (waiting and running spans per host). The rollback is the
engine's own (``engine.api.rollback``) on a workspace written by its StateDB."""

from __future__ import annotations

import subprocess
import time

import pytest
from textual.widgets import Static

from console.app import SkydeckApp
from console.screens.timeline import TimelineScreen
from console.widgets.stream import StreamTree
from engine import api

from .conftest import FROZEN_NOW, fill_evil, fill_fixed, make_ws, settle

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("size", [(120, 40), (160, 48)])
async def test_earlier_executions_and_the_timeline(tmp_path, size) -> None:
    ws = make_ws(tmp_path / "ws")
    fill_fixed(ws)
    fill_evil(ws)
    api.rollback(ws, "251126004", None)  # launchChunks e1 FAILED, retired
    app = SkydeckApp(ws, clock=lambda: FROZEN_NOW, poll_s=0.05, stage_every_s=3600)
    async with app.run_test(size=size) as pilot:
        tree = app.q(StreamTree)
        await settle(pilot, lambda: tree.dlid == "251126004" and bool(tree.history))
        # rolled back, not run again yet: the retired execution is still in the tree
        retired = tree._retired[("launchChunks", "")]
        assert "e1" in retired.label.plain and "FAILED" in retired.label.plain
        assert "rolled back" in retired.label.plain
        # the runner runs it again (and it fails again: the delivery's files are not there)
        subprocess.run(api.engine_argv(ws, "run", "251126004"), capture_output=True, timeout=120)
        await settle(pilot, lambda: ("launchChunks", "") in tree._pi_nodes and bool(tree.history))
        await settle(pilot, lambda: not tree._retired)
        node = tree._pi_nodes[("launchChunks", "")]
        label = node.label.plain
        day = time.strftime("%m-%d %H:%M", time.localtime(FROZEN_NOW))
        assert "e2" in label and f"(e1 FAILED {day})" in label
        # the detail line, focus in the tree: the earlier execution with its note
        tree.focus()
        tree.move_cursor(node)
        await pilot.pause()
        detail = str(app.q("#row-detail", Static).render())
        assert "before: e1 FAILED" in detail and "[link=https://evil.example]" in detail
        # the timeline of the selected downlink: both executions, per host, escaped
        app.q("#downlinks").focus()
        await pilot.press("t")
        await settle(pilot, lambda: isinstance(app.screen, TimelineScreen))
        body = app.screen.query_one("#timeline-body", Static).render()
        text = str(body)
        assert "launchChunks e1" in text and "launchChunks e2" in text
        assert "node\\x1b[2J01" in text and "\x1b" not in text  # the host, escaped
        assert "█" in text and "FAILED" in text
        await pilot.press("escape")
        assert app.screen is app.main
