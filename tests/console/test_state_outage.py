"""The console (and its engine.api.Monitor) on a PostgreSQL state server that goes away:
it keeps what it showed, says in a banner since when the state
database is unreachable, never waits for it, and recovers live when the server is back
(restarted, or its sessions terminated: the probe LISTENs again and everything is read
again). Each test has a server of its own (``own_pg``); the console runs under Pilot.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from console.app import SkydeckApp
from console.widgets.downlinks import DownlinksTable
from engine import api
from engine.core.workspace import Workspace
from engine.intake import deliveries
from engine.store import StateDB

from .conftest import make_ws, mock, settle

pytest.importorskip("psycopg")
pytestmark = pytest.mark.slow


@pytest.fixture
def pg_ws(tmp_path: Path, own_pg: Any, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    monkeypatch.setenv("SKYDECK_STATE_URL", own_pg.new_database())
    return make_ws(tmp_path / "ws")


def register(ws: Workspace, dlid: str) -> None:
    mock(ws, dlid)
    with StateDB(ws.state) as db:
        deliveries.process_all(ws, db, quiet_s=0.0)


def test_the_monitor_never_waits_and_reads_everything_when_back(
    own_pg: Any, pg_ws: Workspace
) -> None:
    register(pg_ws, "251125001")
    with api.Monitor(pg_ws) as mon:
        assert set(mon.poll(None).rows or {}) == {"251125001"}
        own_pg.stop()
        t0 = time.monotonic()
        for _ in range(5):
            with pytest.raises(api.StateUnavailable):
                mon.poll(None)
        assert time.monotonic() - t0 < 5  # no poll waited for the server
        assert not mon.outage.reachable and mon.outage.since is not None
        own_pg.start()
        register(pg_ws, "251125002")  # committed while the probe was away
        snap = mon.poll("251125002")
        assert set(snap.rows or {}) == {"251125001", "251125002"}
        assert snap.stream_read and mon.outage.reachable
        own_pg.terminate()  # the probe's session, and LISTEN, gone
        register(pg_ws, "251125003")
        snap = mon.poll(None)
        assert snap.rows is not None and "251125003" in snap.rows
        quiet = mon.poll(None)
        assert quiet.rows is None  # listening again: no change, no read


@pytest.mark.asyncio
async def test_the_console_shows_an_outage_and_recovers_live(own_pg: Any, pg_ws: Workspace) -> None:
    register(pg_ws, "251125001")
    app = SkydeckApp(pg_ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        table = app.q(DownlinksTable)
        banner = app.screen.query_one("#state-alert", Static)
        await settle(pilot, lambda: "251125001" in table.shown)
        assert not banner.has_class("show")
        own_pg.stop()
        await settle(pilot, lambda: banner.has_class("show"))
        text = str(banner.render())
        assert "state database unreachable since" in text and "retrying" in text
        assert "251125001" in table.shown  # what was read stays
        own_pg.start()
        register(pg_ws, "251125002")
        await settle(pilot, lambda: not banner.has_class("show") and "251125002" in table.shown)
        assert table.model["251125002"].state == "arrived"
        own_pg.terminate()
        register(pg_ws, "251125003")
        await settle(pilot, lambda: "251125003" in table.shown)
        assert not banner.has_class("show")


@pytest.mark.asyncio
async def test_the_console_starts_while_the_server_is_down(own_pg: Any, pg_ws: Workspace) -> None:
    register(pg_ws, "251125001")
    own_pg.stop()
    app = SkydeckApp(pg_ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        table = app.q(DownlinksTable)
        banner = app.screen.query_one("#state-alert", Static)
        await settle(pilot, lambda: banner.has_class("show"))
        assert "251125001" not in table.shown
        own_pg.start()
        await settle(pilot, lambda: "251125001" in table.shown and not banner.has_class("show"))
