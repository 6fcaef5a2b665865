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


def test_hits_of_cerenkov_and_scintillation_gensteps_show_their_sources(ws, tmp_path):
    """A scintillator event (electrons' scintillation and Cerenkov gensteps): the panel
    names the light's sources with their photons and hits, and the CK/SI flag rows."""
    import numpy as np
    from rich.console import Console

    from console.widgets.hits import render_summary
    from engine.mock.gensteps import scintillation_tracks
    from engine.propagate.hits import summarize
    from engine.propagate.scene import load_scene

    scene = ASSETS / "scenes" / "scint-tank.toml"
    gs_path = tmp_path / "gensteps.npy"
    np.save(gs_path, scintillation_tracks(load_scene(scene), 20000, seed=2))
    out = ws.events / "scint-tank" / "ev"
    propagate(Request(scene=scene, out=out, gensteps=gs_path, seed=1, workers=1))
    s = summarize(out)
    console = Console(width=120, record=True)
    console.print(render_summary(s))
    text = console.export_text()
    (ck, ck_hits), (si, si_hits) = s.sources["CK"], s.sources["SI"]
    assert ck + si == s.photons and ck_hits + si_hits == s.hits > 0
    assert f"SI {si:,} ({si_hits:,} hits)" in text and f"CK {ck:,} ({ck_hits:,} hits)" in text
    assert "SI|SD" in text
