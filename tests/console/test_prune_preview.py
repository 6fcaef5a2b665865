"""The Staging panel's line of what the next prune would free (Retention): read
through ``engine.api.prune_preview`` with the usage scan, drawn per area, and the same
numbers `skydeck-engine prune` then frees."""

from __future__ import annotations

import json
import time

import pytest
from rich.console import Console

from console.app import SkydeckApp
from console.widgets.staging import StagingPanel, prune_line, render
from engine.cli.main import main as engine_main
from engine.mock.delivery import MockSpec, deliver

from .conftest import make_ws, settle

pytestmark = pytest.mark.asyncio


async def test_staging_panel_shows_what_the_next_prune_frees(tmp_path, capsys):
    ws = make_ws(tmp_path / "ws")
    deliver(
        MockSpec(dlid="251125001", sources=2, events=60, event_bytes=400, runs=1, chunks=1, seed=1),
        "fcopy",
        ws.incoming_fcopy,
    )
    assert engine_main(["-w", str(ws.root), "run", "251125001"]) == 0
    ws = ws.with_overrides("retention", logs_days=0.00001, fcopy_days=0.00001)
    time.sleep(1.0)
    app = SkydeckApp(ws, poll_s=0.05, stage_every_s=0.2)
    async with app.run_test(size=(160, 45)) as pilot:
        panel = app.q(StagingPanel)
        await settle(pilot, lambda: panel.prune is not None)
        await pilot.press("2")
        shown = panel.prune
    assert shown is not None
    line = prune_line(shown).plain
    t = shown.totals()
    assert t["logs"].files and t["fcopy"].files == 2 and not t["events"].rows
    assert line.startswith("next prune frees ") and "logs " in line and "fcopy " in line
    assert "events" not in line  # events_days (90) keeps the rows
    rec = Console(width=160, record=True)
    assert panel.report is not None
    rec.print(render(panel.report, prune=shown))
    assert line in rec.export_text()

    capsys.readouterr()
    assert engine_main(["-w", str(ws.root), "prune", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["areas"] == {a: v.to_json() for a, v in t.items()}
    assert done["bytes"] == shown.bytes
