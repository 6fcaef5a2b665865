"""The demo: feeder + watch daemon + console, and the console beside a daemon never runs a
process twice."""

from __future__ import annotations

import pytest

from console.app import SkydeckApp
from console.demo import Feeder
from console.widgets.downlinks import DownlinksTable
from console.widgets.hits import HitsPanel
from console.widgets.staging import StagingPanel
from console.widgets.stream import StreamTree
from engine.store import StateDB

from .conftest import settle

pytestmark = pytest.mark.asyncio


async def test_demo_feeds_every_panel_and_console_beside_daemon_never_runs_twice(tmp_path):
    feeder = Feeder.start(str(tmp_path / "demo-ws"), interval_s=2.0)
    try:
        ws = feeder.ws
        app = SkydeckApp(ws, poll_s=0.05, stage_every_s=0.5)
        async with app.run_test(size=(170, 45)) as pilot:
            table = app.q(DownlinksTable)
            await settle(pilot, lambda: bool(table.shown), timeout=30)
            first = next(iter(table.shown))
            await pilot.press("r")  # race the daemon for the same stream
            await settle(pilot, lambda: table.model[first].state == "staged", timeout=60)
            await settle(pilot, lambda: first not in app.runners, timeout=30)
            tree = app.q(StreamTree)
            await settle(
                pilot, lambda: tree.view is not None and tree.view.stream.status == "SUCCESS"
            )
            await settle(pilot, lambda: len(app.q(HitsPanel).summaries) == 2, timeout=60)
            # the second delivery carries gensteps: its stream's propagate process adds an event
            second = sorted(table.model)[0][:6] + "002"
            await settle(
                pilot,
                lambda: second in table.model and table.model[second].state == "staged",
                timeout=90,
            )
            await settle(pilot, lambda: any(p.endswith(second) for p in app.q(HitsPanel).summaries))
            await settle(
                pilot,
                lambda: (
                    app.q(StagingPanel).report is not None
                    and first in app.q(StagingPanel).report.downlinks
                ),
            )
        with StateDB(ws.state) as db:
            st = db.latest_stream(first)
            assert st.execution == 1 and st.status == "SUCCESS"
            dup = db.q(
                "SELECT process, key, COUNT(*) FROM process_instances WHERE stream_id=? "
                "GROUP BY process, key HAVING COUNT(*) > 1",
                (st.id,),
            )
            assert dup == [], [tuple(r) for r in dup]  # every process ran exactly once
    finally:
        feeder.stop()
    assert all(p.poll() is not None for p in feeder.procs)  # the daemon stopped on SIGTERM
