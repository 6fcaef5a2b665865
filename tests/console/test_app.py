"""Pilot tests of the console on real workspaces: panels, live updates, actions."""

from __future__ import annotations

import pytest

from console.app import SkydeckApp
from console.widgets.downlinks import DownlinksTable
from console.widgets.stream import StreamTree
from engine.state import StateDB

from .conftest import mock, settle

pytestmark = pytest.mark.asyncio


async def test_downlinks_table_shows_incoming_then_registered(ws):
    mock(ws, "251125001")
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: "251125001" in table.shown)
        row = table.model["251125001"]
        assert (row.state, row.date, row.note) == ("arrived", "2025-11-25", "in incoming/level0")
        # register it through the engine (as the daemon would): the row updates in place
        from engine import deliveries
        with StateDB(ws.state_db) as db:
            deliveries.process_all(ws, db, quiet_s=0.0)
        await settle(pilot, lambda: table.model["251125001"].note == "")
        assert table.row_count == 1
        assert app.q(StreamTree).dlid == "251125001"
