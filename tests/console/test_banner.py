"""The global banner under the header: what `skydeck-engine health` finds wrong with the
workspace (no daemon beating, a global halt flag, launching paused, stuck streams), read
by the console every few seconds from the same checks."""

from __future__ import annotations

import pytest
from textual.widgets import Static

from console.app import SkydeckApp
from engine import api

from .conftest import settle

pytestmark = pytest.mark.asyncio


def banner(app: SkydeckApp) -> str:
    return str(app.q("#health", Static).render())


@pytest.mark.parametrize("size", [(120, 40), (160, 48)])
async def test_banner_names_a_missing_daemon_and_a_halt(ws, size) -> None:
    app = SkydeckApp(ws, poll_s=0.05, stage_every_s=3600)
    async with app.run_test(size=size) as pilot:
        await settle(pilot, lambda: "no daemon running here" in banner(app), timeout=20)
        assert app.q("#health").has_class("show")
        flag = api.HALT_FLAGS[0]
        api.set_halt(ws, flag)
        await settle(pilot, lambda: f"halt flag {flag} is set globally" in banner(app), timeout=20)
        api.clear_halt(ws, flag)
        await settle(pilot, lambda: "halt flag" not in banner(app), timeout=20)
