"""Errors reach the operator: a worker that raises is a red toast with the error line; a
stream another runner or the daemon already took is information, not a warning; each kind
of toast stays for its own time. Real workspaces; the engine's own failures."""

from __future__ import annotations

import pytest

from console.app import TOAST_S, SkydeckApp
from console.screens.modals import MessagesScreen
from console.widgets.downlinks import DownlinksTable
from engine import api
from engine.store import StateDB

from .conftest import FROZEN_NOW, fill_fixed, make_ws, mock, settle

pytestmark = pytest.mark.asyncio


async def test_a_worker_that_raises_is_an_error_toast_with_its_line(tmp_path) -> None:
    ws = make_ws(tmp_path / "ws")
    fill_fixed(ws)
    app = SkydeckApp(ws, clock=lambda: FROZEN_NOW, poll_s=0.05, stage_every_s=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, lambda: len(app.q(DownlinksTable).shown) == 3)
        # an engine call its worker does not guard: the engine's own refusal
        app.main.run_worker(
            lambda: api.rollback(ws, "not-a-dlid", None),
            thread=True,
            name="_rollback",
            exit_on_error=False,
        )
        await settle(pilot, lambda: any(s == "error" for s, _ in app.toasts))
        sev, text = next(t for t in app.toasts if t[0] == "error")
        assert text.startswith("error: rollback failed: BadInput: invalid downlink id")
        # a rollback the engine refuses inside the action worker: an error toast too
        app.main._rollback("251123001", ["noSuchProcess"])
        await settle(pilot, lambda: any(t.startswith("rollback 251123001:") for _, t in app.toasts))
        assert next(t for t in app.toasts if t[1].startswith("rollback 251123001:"))[0] == "error"
        # m lists what was said, kind by kind: the errors first, kept apart
        app.notify("a warning to keep apart", severity="warning")
        await pilot.press("m")
        await settle(pilot, lambda: isinstance(app.screen, MessagesScreen))
        body = app.screen.body().plain
        errors, rest = body.split("Warnings (", 1)
        warnings, info = rest.split("Information (", 1)
        assert errors.startswith("Errors (2)") and "rollback failed: BadInput" in errors
        assert "a warning to keep apart" in warnings and "BadInput" not in warnings
        await pilot.press("escape")
        assert app.screen is app.main
    assert TOAST_S["error"] > TOAST_S["warning"] > TOAST_S["information"]


async def test_a_stream_already_taken_is_information(ws) -> None:
    mock(ws, "251125001", events=60)
    from engine.intake import deliveries

    with StateDB(ws.state) as db:
        deliveries.process_all(ws, db, quiet_s=0.0)
        st, why = db.claim_stream("251125001", "halfpipe")  # this live process owns it
        assert st is not None, why
        app = SkydeckApp(ws, poll_s=0.05)
        async with app.run_test(size=(160, 48)) as pilot:
            table = app.q(DownlinksTable)
            await settle(pilot, lambda: table.selected == "251125001")
            await pilot.press("r")
            await settle(
                pilot, lambda: any("already claimed" in t for _, t in app.toasts), timeout=60
            )
            assert next(t for t in app.toasts if "already claimed" in t[1])[0] == "information"
