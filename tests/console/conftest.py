"""Fixtures for console tests: real workspaces filled by the real engine, and app helpers.

Waits are on messages and workers (``settle``), never fixed sleeps: ``settle`` pauses the
pilot until a condition on the app holds, with a deadline that only matters on failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.core.workspace import Workspace, init_workspace
from engine.mock.delivery import MockSpec, deliver

FROZEN_NOW = 1795600000.0  # 2026-11-25 06:26:40 UTC: "now" for deterministic ages


def make_ws(root: Path, reserve: int = 0) -> Workspace:
    return init_workspace(root).with_overrides("disk", reserve_bytes=reserve)


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_ws(tmp_path / "ws")


def mock(ws: Workspace, dlid: str, events: int = 200, chunks: int = 2, runs: int = 2) -> Path:
    spec = MockSpec(
        dlid=dlid,
        sources=2,
        events=events,
        event_bytes=400,
        runs=runs,
        chunks=chunks,
        seed=int(dlid[-3:]),
    )
    return deliver(spec, "level0", ws.incoming_level0)


async def settle(pilot, cond: Callable[[], bool], timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Process messages until ``cond()`` holds (fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await pilot.pause(0.05)


def fill_fixed(ws: Workspace, now: float = FROZEN_NOW) -> None:
    """A state database with fixed times, written through the engine's StateDB API.

    Three downlinks: one staged, one running (a mergeEvt job mid-way), one failed; and a
    stream lock from another host. Everything the main screen shows is then a function of
    ``now`` alone, so a snapshot does not change from run to run.
    """
    import json as _json

    from engine.store import Downlink, StateDB

    plan = [
        ("251123001", "SUCCESS", 7200.0),
        ("251124002", "RUNNING", 600.0),
        ("251125003", "FAILED", 300.0),
    ]
    with StateDB(ws.state) as db:
        for dlid, status, ago in plan:
            db.register_downlink(
                Downlink(
                    dlid,
                    "level0",
                    str(ws.incoming_level0 / dlid),
                    2,
                    False,
                    None,
                    now - ago,
                    now - ago + 1,
                )
            )
            st, _ = db.claim_stream(dlid, "halfpipe")
            assert st is not None
            db.set_stream_vars(st.id, chunks=["00001", "00002"], runs=["785721600", "785721601"])
            t = now - ago + 2

            def pi(
                process: str,
                key: str,
                status: str,
                dur: float | None,
                retries: int = 1,
                t0: float = 0.0,
                note: str | None = None,
                _st=st,
                _dl=dlid,
            ) -> None:
                p = db.create_instance(_st.id, process, key, retries)
                db.update_instance(
                    p.id,
                    status=status,
                    started=t0,
                    host="node01",
                    pid=4000 + p.id,
                    pid_start=t0,
                    ended=None if dur is None else t0 + dur,
                    exit_code=None if dur is None else (0 if status == "SUCCESS" else 1),
                    note=note,
                    log_path=str(ws.logs / _dl / f"{process}-{key}.log"),
                )

            pi("launchChunks", "", "SUCCESS", 0.02, 0, t)
            if status == "FAILED":
                pi("makeEvt", "00001", "SUCCESS", 12.0, t0=t)
                pi("makeEvt", "00002", "FAILED", 3.0, t0=t, note="exit 2: source unreadable")
                db.release_stream(st.id, "FAILED", "failed: makeEvt")
                continue
            pi("makeEvt", "00001", "SUCCESS", 12.0, t0=t)
            pi("makeEvt", "00002", "SUCCESS", 14.0, t0=t)
            pi("mergeIndices", "", "SUCCESS", 1.5, t0=t + 15)
            if status == "RUNNING":
                pi("mergeEvt", "785721600", "SUCCESS", 40.0, t0=t + 17)
                pi("mergeEvt", "785721601", "RUNNING", None, t0=now - 20.0)
                db.release_stream(st.id, "RUNNING", None)  # no live owner in a fixed picture
                continue
            pi("mergeEvt", "785721600", "SUCCESS", 40.0, t0=t + 17)
            pi("mergeEvt", "785721601", "SUCCESS", 38.0, t0=t + 17)
            pi("propagate", "", "SKIPPED", None, 0, t + 60, note="delivery carries no gensteps")
            pi("cleanup", "", "SUCCESS", 0.4, 0, t + 60)
            db.release_stream(st.id, "SUCCESS", None)
    (ws.lock / "halfpipe-251124002").write_text(
        _json.dumps(
            {
                "pid": 4242,
                "host": "ops-node-7",
                "start": 0,
                "stream": "251124002",
                "process": "makeEvt",
                "created": now - 5400,
            }
        )
    )


EVIL_NOTE = "[link=https://evil.example]click[/link] [bold red]\x1b[31mred\x1b[0m\x07 done"


def fill_evil(ws: Workspace, dlid: str = "251126004", now: float = FROZEN_NOW) -> None:
    """A failed downlink whose stream note carries Rich markup and terminal escapes, as text
    from outside (a job's error line) can: the console must show it literally."""
    from engine.store import Downlink, StateDB

    with StateDB(ws.state) as db:
        db.register_downlink(
            Downlink(dlid, "level0", str(ws.incoming_level0 / dlid), 2, False, None, now, now + 1)
        )
        st, _ = db.claim_stream(dlid, "halfpipe")
        assert st is not None
        p = db.create_instance(st.id, "launchChunks", "", 0)
        db.update_instance(
            p.id,
            status="FAILED",
            started=now,
            host="node\x1b[2J01",
            pid=77,
            pid_start=now,
            ended=now + 1,
            exit_code=2,
            note=EVIL_NOTE,
            log_path=str(ws.logs / dlid / "x.log"),
        )
        db.release_stream(st.id, "FAILED", EVIL_NOTE)
