"""Rendering of the engine's hit summary for the Hits panel (no app needed)."""

from __future__ import annotations

from engine.core.workspace import ASSETS
from engine.propagate.event import Request, propagate

SCENE = ASSETS / "scenes" / "tboolean-box-detect.toml"


def test_hit_summary_rendering_has_flag_table_histograms_and_map(ws):
    """The Hits panel draws the engine's summary: flag table, histograms, a face hit map."""
    from rich.console import Console

    from console.widgets.hits import render_summary
    from engine.propagate.hits import summarize

    out = ws.events / SCENE.stem / "ev"
    propagate(Request(scene=SCENE, out=out, photons=20000, seed=3, workers=1))
    s = summarize(out)
    console = Console(width=120, record=True)
    console.print(render_summary(s))
    text = console.export_text()
    assert f"photons {s.photons:,}  hits {s.hits:,}" in text
    assert s.flagmasks[0].label in text and "hit time (ns)" in text and "hit wavelength" in text
    assert "hit map" in text and s.faces
