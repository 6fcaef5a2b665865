"""Search across logs from the console: `g` asks for a pattern, the downlink (the selected
one) and a window; the matches list their time, log and line; enter opens that log in the
Log tab with the pattern highlighted. A bad pattern stays on the form. The search is the
engine's (engine.api.search_logs) over a real workspace's logs area."""

from __future__ import annotations

import json
import time

import pytest
from textual.widgets import Input, OptionList, Static

from console.app import SkydeckApp
from console.screens.modals import FormScreen, LogMatchesScreen
from console.widgets.downlinks import DownlinksTable
from console.widgets.logview import LogPanel

from .conftest import FROZEN_NOW, fill_fixed, make_ws, settle

pytestmark = pytest.mark.asyncio
DLID = "251125003"


@pytest.mark.parametrize("size", [(120, 40), (160, 48)])
async def test_search_the_selected_downlink_s_logs(tmp_path, size) -> None:
    ws = make_ws(tmp_path / "ws")
    fill_fixed(ws)
    job = ws.logs / DLID / "makeEvt-00001-e1.log"
    job.parent.mkdir(parents=True, exist_ok=True)
    job.write_text("reading epix.h5\nskydeck-engine: epix.h5: truncated HDF5 file\n")
    other = ws.logs / "251124002" / "makeEvt-00001-e1.log"
    other.parent.mkdir(parents=True, exist_ok=True)
    other.write_text("skydeck-engine: cspad.h5: truncated HDF5 file\n")
    event = {"t": time.time(), "event": "failed", "dlid": DLID, "note": "truncated HDF5 file"}
    ws.daemon_log.parent.mkdir(parents=True, exist_ok=True)
    ws.daemon_log.write_text(json.dumps(event) + "\n")
    app = SkydeckApp(ws, clock=lambda: FROZEN_NOW, poll_s=0.05, stage_every_s=3600)
    async with app.run_test(size=size) as pilot:
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: DLID in table.shown)
        table.move_to_key(DLID)
        await settle(pilot, lambda: table.selected == DLID)
        await pilot.press("g")
        await settle(pilot, lambda: isinstance(app.screen, FormScreen))
        form = app.screen
        form.query_one("#f-pattern", Input).value = "trunc(("
        await pilot.press("enter")
        assert "bad pattern" in str(form.query_one("#form-error", Static).render())
        assert form.query_one("#f-dlid", Input).value == DLID  # the selected downlink
        form.query_one("#f-pattern", Input).value = "truncated hdf5"
        await pilot.press("enter")
        await settle(pilot, lambda: isinstance(app.screen, LogMatchesScreen))
        matches = app.screen.matches
        assert {m.path for m in matches} == {str(ws.daemon_log), str(job)}  # not the other's
        options = app.screen.query_one(OptionList)
        shown = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert any(f"{DLID}/makeEvt-00001-e1.log:2" in s for s in shown), shown
        assert any("logs/daemon.log:1" in s and "failed" in s for s in shown), shown
        index = next(i for i, m in enumerate(matches) if m.path == str(job))
        options.highlighted = index
        await pilot.press("enter")
        panel = app.q(LogPanel)
        await settle(pilot, lambda: app.screen is app.main and panel.path == str(job))
        await settle(pilot, lambda: panel.match_lines() == [1])
        assert app.q("#tabs").active == "log"
