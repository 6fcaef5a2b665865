"""The README's console section keeps up with the console: every key the App binds, and
the main screen's own keys, are in its key table."""

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
