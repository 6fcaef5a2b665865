"""Launch forms: enter launches from any field, prefilled text stays until edited, the
form is checked before anything starts, an existing output is never overwritten without
a yes. Real mock deliveries and the real build job."""

from __future__ import annotations

import pytest
from textual.widgets import Input, OptionList, Static

from console.app import SkydeckApp
from console.screens.modals import ConfirmScreen, FormScreen, JobsScreen
from console.widgets.downlinks import DownlinksTable
from console.widgets.logview import LogPanel

from .conftest import mock, settle

pytestmark = pytest.mark.asyncio


@pytest.mark.parametrize("size", [(120, 40), (160, 48)])
async def test_build_form_checks_keeps_text_and_asks_before_overwriting(ws, size) -> None:
    mock(ws, "251125001", events=60)
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=size) as pilot:
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: table.selected == "251125001")
        await pilot.press("B")
        form = app.screen
        assert isinstance(form, FormScreen)
        out = form.query_one("#f-output", Input)
        prefilled = out.value
        out.focus()
        await pilot.press("end", *"x")  # typing edits the prefilled text, never replaces it
        assert out.value == prefilled + "x"
        out.value = prefilled
        # a missing input: an error on the form, nothing starts
        form.query_one("#f-inputs", Input).value = str(ws.root / "nowhere")
        form.query_one("#f-select", Input).focus()
        await pilot.press("enter")
        err = form.query_one("#form-error", Static)
        assert err.has_class("show") and "no such input" in str(err.render())
        assert app.screen is form and not app.jobs
        form.query_one("#f-inputs", Input).value = str(ws.incoming_level0 / "251125001")
        # the output exists: asked first; no keeps the form and the file
        target = ws.root / "builds" / "251125001.h5"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"earlier output")
        await pilot.press("enter")
        await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "exists" in app.screen.question and "Overwrite" in app.screen.question
        await pilot.press("n")
        await settle(pilot, lambda: app.screen is form)
        assert target.read_bytes() == b"earlier output" and not app.jobs
        # yes: the build runs and the result says what it made
        await pilot.press("enter")
        await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await settle(pilot, lambda: any(t.startswith("job done") for _, t in app.toasts))
        text = next(t for _, t in app.toasts if t.startswith("job done"))
        assert "events in" in text and str(target) in text
        assert target.read_bytes() != b"earlier output"
        # j lists the console's jobs: this one, finished, with what it made; enter: its log
        await pilot.press("j")
        await settle(pilot, lambda: isinstance(app.screen, JobsScreen))
        (rec,) = app.screen.jobs
        assert rec.exit == 0 and str(target) in (rec.outcome or "")
        options = app.screen.query_one(OptionList)
        line = str(options.get_option_at_index(0).prompt)
        assert "DONE" in line and "build" in line, line
        await pilot.press("enter")
        await settle(pilot, lambda: app.screen is app.main and app.q(LogPanel).path == rec.log)


async def test_propagate_form_rejects_bad_photons(ws) -> None:
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("P")
        form = app.screen
        assert isinstance(form, FormScreen)
        form.query_one("#f-photons", Input).value = "lots"
        await pilot.press("enter")
        assert "photons must be a whole number" in str(form.query_one("#form-error").render())
        form.query_one("#f-photons", Input).value = "1000"
        form.query_one("#f-tag", Input).value = "a/b"
        await pilot.press("enter")
        assert "one name" in str(form.query_one("#form-error").render())
        assert app.screen is form and not app.jobs
