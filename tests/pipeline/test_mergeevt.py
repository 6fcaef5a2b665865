"""mergeEvt across downlinks: a run continued by a later downlink is staged once, numbered on."""

from __future__ import annotations

import json

import h5py
import numpy as np

from engine.pipeline.jobs import INDEX_NAME, merge_evt


def _chunk(ws, dlid: str, chunk: str, ts: np.ndarray, run: int) -> None:
    d = ws.downlinks / dlid
    d.mkdir(parents=True, exist_ok=True)
    with h5py.File(d / f"{dlid}-{chunk}.h5", "w") as f:
        f.create_dataset("timestamp", data=ts.astype(np.uint64))
        f.create_dataset("run", data=np.full(len(ts), run, dtype=np.int64))
        g = f.create_group("sources/cspad")
        g.create_dataset("row", data=np.arange(len(ts), dtype=np.int64))
        g.create_dataset("data", data=(ts[:, None] * 10 + np.arange(3)).astype(np.int32))
    (d / INDEX_NAME).write_text(json.dumps({"dlid": dlid, "runs": [run], "chunks": {chunk: [run]}}))


def _staged(ws, dlid: str, run: int) -> dict[str, np.ndarray]:
    out = {}
    for p in sorted((ws.stage / dlid / f"r{run:010d}").glob("*.h5")):
        with h5py.File(p, "r") as f:
            out[p.stem] = f["timestamp"][:]
            assert np.array_equal(f["sources/cspad/data"][:, 0], f["timestamp"][:] * 10)
    return out


def test_run_continued_by_a_later_downlink(ws):
    run = 700_000_000
    _chunk(ws, "251125001", "00001", np.arange(1000, 1010), run)  # events 0..9
    _chunk(ws, "251125002", "00001", np.arange(1005, 1015), run)  # overlaps 5..9, new 10..14
    merge_evt(ws, "251125001", run, max_events=4)
    first = _staged(ws, "251125001", run)
    assert list(first) == [f"r{run:010d}-e{e:020d}" for e in (0, 4, 8)]
    merge_evt(ws, "251125002", run, max_events=4)
    second = _staged(ws, "251125002", run)
    assert list(second) == [f"r{run:010d}-e{e:020d}" for e in (10, 14)]  # numbering goes on
    all_ts = np.concatenate([*first.values(), *second.values()])
    assert np.array_equal(np.sort(all_ts), np.arange(1000, 1015))  # each event exactly once
    tokens = sorted(p.name for p in (ws.stage / "chunktokens" / f"r{run:010d}").iterdir())
    assert tokens == sorted([*first, *second])
    # a rerun (e.g. after a kill) rewrites the same bytes and leaves nothing extra
    before = {p: p.read_bytes() for p in (ws.stage / "251125002").rglob("*.h5")}
    merge_evt(ws, "251125002", run, max_events=4)
    assert {p: p.read_bytes() for p in (ws.stage / "251125002").rglob("*.h5")} == before
    # another maxEvents replaces the plan: old files and tokens go
    merge_evt(ws, "251125002", run, max_events=100)
    assert list(_staged(ws, "251125002", run)) == [f"r{run:010d}-e{10:020d}"]
    tokens = sorted(p.name for p in (ws.stage / "chunktokens" / f"r{run:010d}").iterdir())
    assert tokens == sorted([*first, f"r{run:010d}-e{10:020d}"])
