"""skydeck.toml's [build] keys reach the pipeline's makeEvt: they were validated but never
read, so a facility whose sources keep their payload under other dataset paths could not
run the pipeline at all. Here the sources are rewritten to non-default paths; the stream
succeeds only if the configured paths arrive on makeEvt's command line (the batch size
too, which the job log's command line shows)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py

from engine.store import Downlink, StateDB

from .conftest import cli, make_delivery, set_config

RENAMED = {"timestamp": "ts", "data": "payload", "smalldata": "small"}


def test_build_paths_and_batch_reach_makeevt(ws, capsys):
    ws = set_config(
        ws,
        '[build]\ntimestamp_path = "/ts"\ndata_path = "/payload"\n'
        'smalldata_path = "/small"\nbatch = 7\n',
    )
    level0 = make_delivery(ws, "251125001", events=60, event_bytes=200, runs=1, chunks=2)
    for src in level0.glob("*.h5"):
        with h5py.File(src, "r+") as h:
            for old, new in RENAMED.items():
                if old in h:
                    h.move(old, new)
    with StateDB(ws.state) as db:  # registered as intake would (the manifest no longer fits)
        db.register_downlink(Downlink("251125001", "level0", str(level0), 2, False, None, 0.0, 0.0))
    rc, out, err = cli(ws, "run", "251125001", capsys=capsys)
    assert rc == 0, err
    assert json.loads(out.splitlines()[-1])["event"] == "stream_success"
    with StateDB(ws.state) as db:
        st = db.latest_stream("251125001", "halfpipe")
        assert st is not None
        logs = [
            Path(pi.log_path)
            for pi in db.instances(st.id)
            if pi.process == "makeEvt" and pi.log_path
        ]
    assert len(logs) == 2
    for log in logs:
        first = log.read_text().splitlines()[0]
        assert (
            "--batch 7 --timestamp-path /ts --data-path /payload --smalldata-path /small" in first
        )
