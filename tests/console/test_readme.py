"""The README's console section keeps up with the console: every key the App binds and
the main screen's own keys are in its key table, and its capture's frame (columns, tabs,
footer keys) is what the console draws today."""

from __future__ import annotations

from pathlib import Path

import pytest

from console.app import SkydeckApp

pytestmark = pytest.mark.asyncio
README = Path(__file__).resolve().parents[2] / "README.md"


def key_table() -> str:
    text = README.read_text()
    start = text.index("| key | action |")
    return text[start : text.index("\n\n", start)]


async def test_every_binding_is_in_the_readme_key_table(ws) -> None:
    table = key_table()
    app = SkydeckApp(ws, poll_s=0.05, stage_every_s=3600)
    async with app.run_test(size=(120, 40)):
        for b in app.BINDINGS:
            shown = app.get_key_display(b)
            if shown in "1234":
                assert "`1`-`4`" in table
                continue
            assert f"`{shown}`" in table, f"{shown} ({b.description}) is not in the README"
        for key in ("esc", "space", "enter", "n", "N", "0", "5"):
            assert f"`{key}`" in table


def demo_capture() -> list[str]:
    """The README's capture of `make demo` (160x42), line by line."""
    text = README.read_text()
    start = text.index("```\n", text.index("## What `make demo` shows")) + 4
    return text[start : text.index("```", start)].splitlines()


async def test_the_readme_capture_is_what_the_console_shows_today(tmp_path) -> None:
    """The capture's data changes with every demo run (ids, sizes, ages, pids); its frame does
    not: the table's columns and sort mark, the panel tabs and the footer's keys. Rendered
    now at the capture's size, on a fixed workspace, they must be the capture's own lines."""
    from console.widgets.downlinks import DownlinksTable

    from .conftest import FROZEN_NOW, fill_fixed, make_ws, settle

    captured = demo_capture()
    assert len(captured) == 42 and all(len(line) <= 160 for line in captured)
    ws = make_ws(tmp_path / "ws")
    fill_fixed(ws)
    app = SkydeckApp(ws, clock=lambda: FROZEN_NOW, poll_s=0.05, stage_every_s=3600)
    async with app.run_test(size=(160, 42)) as pilot:
        await settle(pilot, lambda: len(app.q(DownlinksTable).shown) == 3)
        await pilot.pause(0.2)
        shown = [s.text.rstrip() for s in app.screen._compositor.render_strips()]

    def frame(lines: list[str]) -> list[str]:
        out = []
        for line in lines:
            if "Downlink▼" in line:  # the table's header, without the stream pane beside it
                out.append(line.split("││")[0].rstrip())
            elif line.startswith((" Locks [1]", " ? Help")):  # the tabs and the footer
                out.append(line.rstrip())
        return out

    assert frame(shown) and frame(captured) == frame(shown)
