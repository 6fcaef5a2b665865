"""Snapshot of the main screen on fixed data (pytest-textual-snapshot; `--snapshot-update`
after inspecting the report to accept a deliberate change)."""

from __future__ import annotations

import pytest
from textual.widgets import Input

from console.app import SkydeckApp
from console.widgets.downlinks import DownlinksTable
from console.widgets.locks import LocksTable
from console.widgets.stream import StreamTree

from .conftest import FROZEN_NOW, fill_fixed, make_ws, settle


@pytest.fixture(autouse=True)
def no_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    """The input cursor blinks on a wall-clock timer: one cell of difference between runs."""
    monkeypatch.setattr(Input, "cursor_blink", False)


def test_main_screen_snapshot(tmp_path, snap_compare) -> None:
    ws = make_ws(tmp_path / "ws")
    fill_fixed(ws)
    app = SkydeckApp(ws, clock=lambda: FROZEN_NOW, poll_s=0.05, stage_every_s=3600)

    async def ready(pilot) -> None:  # type: ignore[no-untyped-def]
        table, tree = app.q(DownlinksTable), app.q(StreamTree)
        await settle(
            pilot,
            lambda: (
                len(table.shown) == 3
                and tree.view is not None
                and "halfpipe-251124002" in app.q(LocksTable).infos
                and app.q("#health").has_class("show")  # no daemon here: the banner says so
            ),
        )
        await pilot.press("down")  # the running downlink: its stream, with a progress bar
        await settle(
            pilot,
            lambda: (
                tree.dlid == "251124002"
                and tree.view is not None
                and tree.view.stream.dlid == "251124002"
            ),
        )
        await pilot.pause()

    assert snap_compare(app, terminal_size=(180, 42), run_before=ready)
