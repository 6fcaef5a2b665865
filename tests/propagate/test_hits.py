"""Hit summaries: the pure function, its text rendering, --json, and A/B --vs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine.propagate.event import Request, propagate
from engine.propagate.hits import compare, render_comparison, render_text, summarize
from tests.propagate.conftest import TBOX, TBOX_DETECT, cli


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    root = tmp_path_factory.mktemp("events")
    out = {}
    for name, scene, mode, seed in (
        ("prod", TBOX_DETECT, "production", 1),
        ("prod2", TBOX_DETECT, "production", 2),
        ("dev", TBOX_DETECT, "development", 1),
        ("absorb", TBOX, "production", 1),
    ):
        propagate(
            Request(
                scene, root / name, photons=50_000, seed=seed, mode=mode, backend="numpy", workers=1
            )
        )
        out[name] = root / name
    return out


def test_summary_production(events):
    s = summarize(events["prod"])
    ht = np.load(events["prod"] / "ht.npy")
    assert s.photons == 50_000 and s.hits == len(ht) and s.mode == "production"
    assert s.hit_fraction == s.hits / s.photons
    assert s.hit_fraction_err == pytest.approx(
        math.sqrt(s.hit_fraction * (1 - s.hit_fraction) / s.photons)
    )
    assert s.hit_fraction_upper95 is None
    assert sum(r.count for r in s.flagmasks) == s.photons
    assert sum(r.hits for r in s.flagmasks) == s.hits
    assert s.flagmasks[0].label == "SD|BT|TO"  # the dominant TO BT BT SD
    assert s.seqhis == []  # production keeps no histories
    assert sum(s.time.counts) == s.hits and sum(s.wavelength.counts) == s.hits
    faces = {f.name: f for f in s.faces}
    assert set(faces) == {"container -z", "container +z"}
    assert sum(f.hits for f in s.faces) == s.hits
    assert all(sum(map(sum, f.counts)) == f.hits for f in s.faces)
    # the beam is centred: the middle of the +z map holds the hits
    grid = np.array(faces["container +z"].counts)
    assert grid[4:8, 12:20].sum() == grid.sum()
    text = render_text(s)
    assert "hit map container +z" in text and "SD|BT|TO" in text and "hit fraction" in text
    json.dumps(s.to_dict())  # JSON-serializable for the console and --json


def test_summary_development_seqhis(events):
    s = summarize(events["dev"])
    labels = [r.label for r in s.seqhis]
    assert labels[:3] == ["TO BT BT SD", "TO BR SD", "TO BT BR BT SD"]
    assert s.seqhis[0].key == "7ccd"
    assert "TO BT BT SD" in render_text(s)


def test_summary_no_hits(events):
    s = summarize(events["absorb"])
    assert s.hits == 0 and s.hit_fraction == 0 and s.faces == [] and s.time is None
    assert s.terminal["SA"] == 50_000
    assert s.hit_fraction_upper95 == 3.0 / 50_000  # zero hits: an upper limit, not "+- 0"
    assert "no hits" in render_text(s) and "(95 % CL)" in render_text(s)


def test_compare_chi2(events):
    same = compare(events["prod"], events["prod2"])  # same physics, other seed
    assert same.flagmask_ndf >= 1
    assert same.flagmask_chi2 < same.flagmask_ndf + 5 * math.sqrt(2 * same.flagmask_ndf) + 5
    self_ = compare(events["prod"], events["prod"])
    assert self_.flagmask_chi2 == 0
    diff = compare(events["prod"], events["absorb"])  # SD vs SA: nothing in common
    assert diff.flagmask_chi2 > 1000
    assert "chi2/ndf" in render_comparison(diff)
    dd = compare(events["dev"], events["dev"])
    assert dd.seqhis and dd.seqhis_chi2 == 0


def test_hits_cli(events, tmp_path):
    r = cli("hits", events["dev"])
    assert r.returncode == 0, r.stderr
    assert "TO BT BT SD" in r.stdout and "hit map container +z" in r.stdout
    r = cli("hits", events["prod"], "--json")
    doc = json.loads(r.stdout)
    assert doc["photons"] == 50_000 and doc["hits"] == summarize(events["prod"]).hits
    r = cli("hits", events["prod"], "--vs", events["prod2"], "--json")
    doc = json.loads(r.stdout)
    assert "comparison" in doc and doc["comparison"]["photons_b"] == 50_000
    r = cli("hits", events["prod"], "--vs", events["absorb"])
    assert r.returncode == 0 and "chi2/ndf" in r.stdout
    r = cli("hits", tmp_path)
    assert (
        r.returncode == 2 and "no meta.json" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    )
