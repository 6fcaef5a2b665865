"""The Hits tab: the detail names its event, an A/B pair stays marked (and its view stays)
until A is unmarked, and events beyond the newest 10 are reached a page at a time. Real
propagation events (``engine.propagate``) of two scenes that differ."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from textual.widgets import Static

from console.app import SkydeckApp
from console.widgets.hits import HitsPanel
from engine.core.workspace import ASSETS
from engine.propagate.event import Request, propagate

from .conftest import settle

pytestmark = pytest.mark.asyncio
DETECT = ASSETS / "scenes" / "tboolean-box-detect.toml"
ABSORB = ASSETS / "scenes" / "tboolean-box.toml"


def detail_text(app: SkydeckApp) -> str:
    """The Hits detail as plain text (a Rich group, printed wide)."""
    console = Console(width=400, record=True, file=io.StringIO())
    console.print(app.q("#hit-summary", Static).content)
    return console.export_text()


@pytest.mark.parametrize("size", [(120, 40), (160, 48)])
async def test_named_detail_ab_pair_and_paging(ws, size) -> None:
    for i in range(12):
        scene = DETECT if i % 2 else ABSORB
        out = ws.events / scene.stem / f"ev{i:02d}"
        propagate(Request(scene=scene, out=out, photons=2000, seed=i, workers=1))
    app = SkydeckApp(ws, poll_s=0.05, stage_every_s=3600)
    async with app.run_test(size=size) as pilot:
        panel = app.q(HitsPanel)
        await settle(pilot, lambda: len(panel.summaries) == 10)
        await pilot.press("3")
        panel.table.focus()
        await pilot.pause()
        first = panel.selected
        assert detail_text(app).startswith(f"event {first}")
        # A on the first, B on the next (the other scene): the pair stays while moving
        await pilot.press("a", "down", "v")
        await settle(pilot, lambda: panel.comparison is not None)
        b = panel.selected
        assert (panel.mark_a, panel.mark_b) == (first, b)
        await pilot.press("down", "down")
        assert panel.comparison is not None and panel.mark_a == first
        assert str(panel.table.get_cell(first, "event")).startswith("A ")
        assert str(panel.table.get_cell(b, "event")).startswith("B ")
        assert "A ev" in str(panel.table.border_title)
        # the two scenes differ: the comparison says so
        c = panel.comparison
        assert c.hits_a != c.hits_b
        # older events: the next page has the last two
        await pilot.press("right_square_bracket")
        await settle(pilot, lambda: panel.page == 1)
        assert len(panel.summaries) == 2 and panel.total == 12
        assert "events 11-12 of 12" in str(panel.table.border_title)
        await pilot.press("right_square_bracket")  # nothing older
        await settle(pilot, lambda: any("no older events" in t for _, t in app.toasts))
        await pilot.press("left_square_bracket")
        await settle(pilot, lambda: panel.page == 0 and len(panel.summaries) == 10)
        # a on A unmarks the pair; the detail shows the selected event again
        panel.table.move_cursor(row=panel.table.get_row_index(first))
        await pilot.press("a")
        assert panel.mark_a is None and panel.mark_b is None and panel.comparison is None
        assert detail_text(app).startswith(f"event {first}")
