"""The App / main screen split: global bindings on the App run the main screen's actions
(``screen.<action>``), from a key and from the command palette, through one read-only gate."""

from __future__ import annotations

import pytest

from console.app import SkydeckApp
from console.screens.main import MainScreen
from console.widgets.downlinks import DownlinksTable

from .conftest import mock, settle

pytestmark = pytest.mark.asyncio


async def test_palette_commands_run_the_main_screens_actions(ws):
    mock(ws, "251125001", events=60)
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        assert isinstance(app.main, MainScreen) and app.screen is app.main
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: table.selected == "251125001")
        sort = next(c for c in app.get_system_commands(app.screen) if c.title.startswith("Sort"))
        await sort.callback()
        assert table.sort_column == "date" and app.toasts[-1][1].startswith("sorted by Date")
        await pilot.press("s")  # the key runs the same screen action
        assert table.sort_column == "state"
        tab = next(c for c in app.get_system_commands(app.screen) if c.title.startswith("Hits"))
        await tab.callback()
        await pilot.pause()
        assert app.q("#tabs").active == "hits"


async def test_read_only_gate_covers_screen_bound_keys(ws):
    app = SkydeckApp(ws, read_only=True, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.pause()
        assert app.main.check_action("run_stream", ()) is False
        assert app.main.check_action("sort", ()) is True
        shown = {b.binding.key for b in app.screen.active_bindings.values()}
        assert "r" not in shown and "b" not in shown and "slash" in shown and "q" in shown
        app.main.action_run_stream()  # even called directly: refused
        assert app.toasts[-1] == ("warning", "read-only console: actions are disabled")
        assert not app.runners
