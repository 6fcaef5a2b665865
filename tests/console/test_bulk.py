"""Bulk actions: space marks downlinks; roll back, run or unlock the marked ones with one
confirmation that lists each with what will happen to it, and one result line each. A
real workspace written by the engine's StateDB; the engine's own rollback checks."""

from __future__ import annotations

import pytest
from textual.widgets import Static

from console.app import SkydeckApp
from console.screens.modals import ConfirmScreen, HaltScreen
from console.widgets.downlinks import DownlinksTable
from console.widgets.locks import LocksTable

from .conftest import FROZEN_NOW, fill_evil, fill_fixed, make_ws, settle

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("size", [(120, 40), (160, 48)])
async def test_marked_rollback_and_unlock(tmp_path, size) -> None:
    ws = make_ws(tmp_path / "ws")
    fill_fixed(ws)
    fill_evil(ws)
    app = SkydeckApp(ws, clock=lambda: FROZEN_NOW, poll_s=0.05, stage_every_s=3600)
    async with app.run_test(size=size) as pilot:
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: len(table.shown) == 4)
        assert table.keys == ["251126004", "251125003", "251124002", "251123001"]
        await pilot.press("space", "space", "down", "space")
        assert table.marked == {"251126004", "251125003", "251123001"}
        await pilot.press("b")
        await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        items = str(app.screen.query_one("#items", Static).render())
        assert "Roll back 1 of 3 marked streams" in app.screen.question
        assert "251126004: new executions of launchChunks e1" in items
        assert "251125003: skipped: makeEvt reads the delivery" in items
        assert "251123001: skipped: stream 251123001 has no failed instance" in items
        await pilot.press("y")
        await settle(pilot, lambda: any(t.startswith("roll back:") for _, t in app.toasts))
        sev, text = next(t for t in app.toasts if t[1].startswith("roll back:"))
        assert sev == "information"
        assert "251126004: rolled back launchChunks e1\n" in text  # one line each
        assert "251126004: runner: runner pid" in text
        assert not table.marked
        # unlock the marked downlinks' locks: one lock, held by another host
        await settle(pilot, lambda: "halfpipe-251124002" in app.q(LocksTable).infos)
        table.move_to_key("251124002")
        await pilot.press("space")
        await pilot.press("u")
        await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert app.screen.danger and "NOT provably stale" in app.screen.question
        items = str(app.screen.query_one("#items", Static).render())
        assert "halfpipe-251124002 (251124002): NOT provably stale" in items
        await pilot.press("y")
        # (the runner started above may end meanwhile: its toast can come after this one)
        await settle(pilot, lambda: any(t.startswith("unlock:") for _, t in app.toasts))
        text = next(t for _, t in app.toasts if t.startswith("unlock:"))
        assert "halfpipe-251124002: removed (owner ops-node-7:4242)" in text
        assert not (ws.lock / "halfpipe-251124002").exists()
        # nothing marked: the actions act on the selected row, as before
        await pilot.press("b")
        assert table.selected == "251123001"  # space marked the row above and moved on
        await settle(pilot, lambda: any("rollback 251123001" in t for _, t in app.toasts))


async def test_marked_halt_then_resume(tmp_path) -> None:
    """h with marked downlinks: the dialog offers their scope; one confirmation listing each;
    the flag is set for every marked one (then cleared the same way)."""
    ws = make_ws(tmp_path / "ws")
    fill_fixed(ws)
    app = SkydeckApp(ws, clock=lambda: FROZEN_NOW, poll_s=0.05, stage_every_s=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: len(table.shown) == 3)
        await pilot.press("space", "space")
        marked = sorted(table.marked)
        assert len(marked) == 2
        for clear in (False, True):
            await pilot.press("h")
            await settle(pilot, lambda: isinstance(app.screen, HaltScreen))
            await pilot.press("down", "enter")  # haltStage, the marked downlinks
            await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            items = str(app.screen.query_one("#items", Static).render())
            verb = "clear" if clear else "set"
            assert all(f"{d}: {verb} haltStage" in items for d in marked), items
            await pilot.press("y")
            await settle(
                pilot,
                lambda clear=clear: all(
                    (ws.downlinks / d / "haltStage").exists() != clear for d in marked
                ),
            )
            if not clear:  # the marks go with the bulk action's result: mark them again
                await settle(pilot, lambda: any(t.startswith("halt:") for _, t in app.toasts))
                for d in marked:
                    table.move_to_key(d)
                    await pilot.press("space")
        assert not (ws.path("flags") / "haltStage").exists()  # never the global one
