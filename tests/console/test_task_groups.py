"""The stream tree groups per-substream processes as the task file says, not by name.

A workspace running its own task file (other process names than halfpipe's) shows each
``foreach`` process as a group node with one child per key, counted in what the task's
stream variable holds; the help names one of its groups.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from console.app import SkydeckApp
from console.widgets.stream import StreamTree
from engine import api
from engine.store import Downlink, StateDB

from .conftest import FROZEN_NOW, make_ws, settle

# engine.api reads the state database: on SQLite and on PostgreSQL (tests/postgres/plugin.py)
pytestmark = pytest.mark.usefixtures("state_backend")

TINY = """
[task]
name = "tiny"

[[process]]
name = "split"
scriptlet = "launch_chunks"

[[process]]
name = "crunch"
after = ["split"]
foreach = "chunks"
command = ["{python}", "-c", "pass"]

[[process]]
name = "publish"
after = ["crunch"]
command = ["{python}", "-c", "pass"]
"""


def tiny_ws(root: Path) -> api.Workspace:
    ws = make_ws(root)
    (ws.root / "tiny.toml").write_text(TINY)
    ws = ws.with_overrides("pipeline", task="tiny.toml")
    now = FROZEN_NOW
    with StateDB(ws.state) as db:
        db.register_downlink(
            Downlink(
                "251125001",
                "level0",
                str(ws.incoming_level0 / "x"),
                3,
                False,
                None,
                now - 60,
                now - 59,
            )
        )
        st, _ = db.claim_stream("251125001", "tiny")
        assert st is not None
        db.set_stream_vars(st.id, chunks=["00001", "00002", "00003"])
        for process, key, status in [
            ("split", "", "SUCCESS"),
            ("crunch", "00001", "SUCCESS"),
            ("crunch", "00002", "FAILED"),
            ("crunch", "00003", "SUCCESS"),
        ]:
            p = db.create_instance(st.id, process, key, 1)
            db.update_instance(p.id, status=status, started=now - 50, ended=now - 40)
        db.release_stream(st.id, "FAILED", "failed: crunch")
    return ws


def test_task_groups_come_from_the_task_file(tmp_path: Path) -> None:
    assert api.task_groups(make_ws(tmp_path / "plain")) == {"makeEvt": "chunk", "mergeEvt": "run"}
    ws = tiny_ws(tmp_path / "tiny")
    assert api.task_groups(ws) == {"crunch": "chunk"}
    assert api.task_groups(ws, "tiny") == {"crunch": "chunk"}
    assert api.task_groups(ws, "halfpipe") == {"makeEvt": "chunk", "mergeEvt": "run"}
    with api.Monitor(ws) as monitor:
        snap = monitor.poll("251125001")
    assert snap.stream is not None and snap.stream.stream.task == "tiny"
    assert snap.groups == {"crunch": "chunk"}
    # the downlinks table counts the task's chunk process: 2 of its 3 chunks succeeded
    assert snap.rows is not None and snap.rows["251125001"].chunks_done == 2
    assert snap.rows["251125001"].chunks_total == 3


@pytest.mark.asyncio
async def test_stream_tree_groups_a_custom_task(tmp_path: Path) -> None:
    ws = tiny_ws(tmp_path / "ws")
    app = SkydeckApp(ws, poll_s=0.05, clock=lambda: FROZEN_NOW)
    async with app.run_test(size=(160, 45)) as pilot:
        tree = app.q(StreamTree)
        await settle(pilot, lambda: tree.groups == {"crunch"})
        group = next(n for n in tree.root.children if n.data is None)
        assert str(group.label).startswith("crunch") and "(3 chunks)" in str(group.label)
        assert "FAILED 1" in str(group.label) and "SUCCESS 2" in str(group.label)
        keys = [str(n.label).split()[0] for n in group.children]
        assert keys == ["00001", "00002", "00003"]  # children named by their key
        tops = [str(n.label).split()[0] for n in tree.root.children if n.data is not None]
        assert tops == ["split"]  # a single instance: its name
        assert "crunch" in app.command_help["rerun_process"]
        assert "makeEvt" not in app.command_help["rerun_process"]
