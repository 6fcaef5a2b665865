"""Fixtures for console tests: real workspaces filled by the real engine, and app helpers.

Waits are on messages and workers (``settle``), never fixed sleeps: ``settle`` pauses the
pilot until a condition on the app holds, with a deadline that only matters on failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.mock import MockSpec, deliver
from engine.workspace import Workspace, init_workspace

FROZEN_NOW = 1795600000.0  # 2026-11-25 06:26:40 UTC: "now" for deterministic ages


def make_ws(root: Path, reserve: int = 0) -> Workspace:
    w = init_workspace(root)
    cfg = w.root / "skydeck.toml"
    cfg.write_text(cfg.read_text().replace("reserve_bytes = 1_000_000_000",
                                           f"reserve_bytes = {reserve}"))
    return Workspace.open(w.root)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_ws(tmp_path / "ws")


def mock(ws: Workspace, dlid: str, events: int = 200, chunks: int = 2, runs: int = 2) -> Path:
    spec = MockSpec(dlid=dlid, sources=2, events=events, event_bytes=400, runs=runs,
                    chunks=chunks, seed=int(dlid[-3:]))
    return deliver(spec, "level0", ws.incoming_level0)


async def settle(pilot, cond: Callable[[], bool], timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    """Process messages until ``cond()`` holds (fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await pilot.pause(0.05)
