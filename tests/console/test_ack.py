"""Acknowledging an alarm from the console: `k` on a FAILED downlink asks why, records who
and why through the engine (the same `ack` event `skydeck-engine ack` writes), shows it on
the row's detail line, and health stops failing for it; an empty reason is refused on the
form; read-only mode offers nothing. A real workspace written by the engine's StateDB."""

from __future__ import annotations

import pytest
from textual.widgets import Input, Static

from console.app import SkydeckApp
from console.screens.modals import FormScreen
from console.widgets.downlinks import DownlinksTable
from engine import api
from engine.api.health import health

from .conftest import FROZEN_NOW, fill_fixed, make_ws, settle

pytestmark = pytest.mark.asyncio
FAILED_DLID = "251125003"  # fill_fixed's FAILED stream


def _failed_checks(ws) -> list[str]:  # type: ignore[no-untyped-def]
    return [c.name for c in health(ws, now=FROZEN_NOW) if not c.ok and "failed" in c.name]


@pytest.mark.parametrize("size", [(120, 40), (160, 48)])
async def test_acknowledge_a_failed_stream(tmp_path, size) -> None:
    ws = make_ws(tmp_path / "ws")
    fill_fixed(ws)
    assert any(FAILED_DLID in n for n in _failed_checks(ws))
    app = SkydeckApp(ws, clock=lambda: FROZEN_NOW, poll_s=0.05, stage_every_s=3600)
    async with app.run_test(size=size) as pilot:
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: FAILED_DLID in table.shown)
        table.move_to_key(FAILED_DLID)
        await settle(pilot, lambda: table.selected == FAILED_DLID)
        await pilot.press("k")
        await settle(pilot, lambda: isinstance(app.screen, FormScreen))
        await pilot.press("enter")  # no reason: refused on the form, nothing recorded
        error = str(app.screen.query_one("#form-error", Static).render())
        assert "say why" in error and isinstance(app.screen, FormScreen)
        assert not api.acknowledgements(ws, FAILED_DLID)
        app.screen.query_one(Input).value = "source file truncated; resend asked"
        await pilot.press("enter")
        await settle(pilot, lambda: bool(api.acknowledgements(ws, FAILED_DLID)))
        (acks,) = api.acknowledgements(ws, FAILED_DLID).values()
        assert acks[-1].why == "source file truncated; resend asked" and acks[-1].who
        await settle(pilot, lambda: any(t.startswith("acknowledged") for _, t in app.toasts))
        detail = app.screen.query_one("#row-detail", Static)
        await settle(pilot, lambda: "acknowledged by" in str(detail.render()))
        assert "source file truncated" in str(detail.render())
    assert not any(FAILED_DLID in n for n in _failed_checks(ws))


async def test_read_only_offers_no_acknowledgement(tmp_path) -> None:
    ws = make_ws(tmp_path / "ws")
    fill_fixed(ws)
    app = SkydeckApp(ws, read_only=True, clock=lambda: FROZEN_NOW, poll_s=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: FAILED_DLID in table.shown)
        table.move_to_key(FAILED_DLID)
        await pilot.press("k")
        assert app.screen is app.main
    assert not api.acknowledgements(ws, FAILED_DLID)


async def test_a_held_downlink_says_what_holds_it(tmp_path) -> None:
    """A downlink that waits for the global `halted` flag says so on its detail line."""
    import time

    from engine.store import Downlink, StateDB

    ws = make_ws(tmp_path / "ws")
    fill_fixed(ws)
    with StateDB(ws.state) as db:
        t = time.time()
        db.register_downlink(
            Downlink("251127005", "level0", str(ws.incoming_level0 / "x"), 1, False, None, t, t)
        )
    api.set_halt(ws, "halted")
    app = SkydeckApp(ws, clock=lambda: FROZEN_NOW, poll_s=0.05, stage_every_s=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: "251127005" in table.shown)
        table.move_to_key("251127005")
        detail = app.screen.query_one("#row-detail", Static)
        await settle(pilot, lambda: "held: halt flag halted set globally" in str(detail.render()))
