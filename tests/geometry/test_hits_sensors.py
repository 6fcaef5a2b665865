"""`hits` and the console's Hits panel on a GDML detector: hits per sensor (copynumber) with
the most hit first, how many sensors were hit of how many there are, and the hit map unrolled
as seen from the origin; the counts are the event's own (ht.npy), not a fixture's."""

from __future__ import annotations

import json

import numpy as np
from rich.console import Console

from engine.propagate.geometry import examples as EX
from engine.propagate.hits import render_text, summarize
from tests.propagate.conftest import cli


def test_hits_lists_sensors_and_the_map(tmp_path):
    (tmp_path / "t.gdml").write_text(EX.tank(36))
    scene = tmp_path / "t.toml"
    scene.write_text(
        'name = "t"\n[geometry]\ngdml = "t.gdml"\n[source]\ntype = "point"\n'
        'position = [0.0, 0.0, 100.0]\nwavelength = 420.0\nphotons = 20000\n'
    )
    r = cli("propagate", scene, "-o", tmp_path / "ev", "--backend", "numpy", "--workers", "1")
    assert r.returncode == 0, r.stderr
    ht = np.load(tmp_path / "ev" / "ht.npy")
    ids, counts = np.unique(ht.view(np.int32)[:, 3, 1], return_counts=True)
    s = summarize(tmp_path / "ev")
    assert s.sensors_total == 36 and s.sensors_hit == len(ids)
    assert s.sensors[0][1] == counts.max() and sum(h for _, h in s.sensors) == min(
        len(ht), sum(sorted(counts)[::-1][:20])
    )
    text = render_text(s)
    assert f"sensors hit {len(ids)} of 36" in text and "seen from the origin" in text
    doc = json.loads(cli("hits", tmp_path / "ev", "--json").stdout)
    assert doc["sensors_total"] == 36 and len(doc["sensors"]) == min(20, len(ids))
    from console.widgets.hits import render_summary

    con = Console(width=120, record=True)
    con.print(render_summary(s))
    out = con.export_text()
    assert f"sensors hit {len(ids)} of 36" in out and "seen from the origin" in out
