"""Pilot tests of the console on real workspaces: panels, live updates, actions.

Every workspace is filled by the real engine (mock deliveries, delivery registration, the
stream runner, propagation); waits are on the app's state (``settle``), not sleeps.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from textual.widgets import OptionList

from console.app import JobProgress, SkydeckApp
from console.screens.modals import ConfirmScreen, FormScreen, HaltScreen, HelpScreen
from console.widgets.downlinks import DownlinksTable
from console.widgets.hits import HitsPanel
from console.widgets.locks import LocksTable
from console.widgets.logview import LogPanel
from console.widgets.staging import StagingPanel
from console.widgets.stream import StreamTree
from engine import api
from engine.core.workspace import ASSETS
from engine.intake import deliveries
from engine.propagate.event import Request, propagate
from engine.store import StateDB

from .conftest import make_ws, mock, settle

pytestmark = pytest.mark.asyncio
SCENE = ASSETS / "scenes" / "tboolean-box-detect.toml"


def register(ws) -> None:
    with StateDB(ws.state) as db:
        deliveries.process_all(ws, db, quiet_s=0.0)


def run_stream(ws, dlid: str) -> int:
    """`skydeck-engine run` as its own process (its locks die with it, as in production)."""
    return subprocess.run(
        api.engine_argv(ws, "run", dlid), capture_output=True, timeout=120
    ).returncode


def latest(ws, dlid: str) -> dict[tuple[str, str], object]:
    with StateDB(ws.state) as db:
        st = db.latest_stream(dlid)
        return {(p.process, p.key): p for p in db.instances(st.id)}


def tree_node(tree: StreamTree, process: str, key: str = ""):  # type: ignore[no-untyped-def]
    return tree._pi_nodes[(process, key)]


def job_messages(seen: list[JobProgress]):  # type: ignore[no-untyped-def]
    """A message hook collecting the job progress messages the app receives."""

    def hook(m: object) -> None:
        if isinstance(m, JobProgress):
            seen.append(m)

    return hook


def pi_of(tree: StreamTree, process: str, key: str = ""):  # type: ignore[no-untyped-def]
    """The instance shown for (process, key), None while it is not in the tree."""
    node = tree._pi_nodes.get((process, key))
    return None if node is None else node.data


async def test_downlinks_table_shows_incoming_then_registered(ws):
    mock(ws, "251125001")
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: "251125001" in table.shown)
        row = table.model["251125001"]
        assert (row.state, row.date, row.note) == ("arrived", "2025-11-25", "in incoming/level0")
        register(ws)  # as the daemon would: the row updates in place
        await settle(pilot, lambda: table.model["251125001"].note == "")
        assert table.row_count == 1
        assert app.q(StreamTree).dlid == "251125001"


async def test_filter_and_sort_with_keys(ws):
    for dlid in ("251125001", "251126002", "251127003"):
        mock(ws, dlid, events=60)
    register(ws)
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: len(table.shown) == 3)
        await pilot.press("slash", *"11-26")
        await settle(pilot, lambda: list(table.shown) == ["251126002"])
        await pilot.press("escape")  # clears the filter
        await settle(pilot, lambda: len(table.shown) == 3)
        await pilot.press("exclamation_mark")  # no-op outside the filter input
        await pilot.press("slash", "exclamation_mark", *"003", "enter")  # inverse filter
        await settle(pilot, lambda: set(table.shown) == {"251125001", "251126002"})
        assert app.focused is table
        await pilot.press("escape")
        app.q("#filter").value = ""
        await settle(pilot, lambda: len(table.shown) == 3)
        assert table.sort_reverse and table.keys[0] == "251127003"  # newest first
        await pilot.press("S")  # reverse: oldest id first
        assert not table.sort_reverse and table.keys[0] == "251125001"
        await pilot.press("s")  # next column: date
        assert table.sort_column == "date"


async def test_operator_finds_stuck_downlink_unlocks_and_watches_it_finish(ws):
    """Done means: find the stuck downlink, see the lock behind it, unlock, watch it finish."""
    mock(ws, "251125001", events=120)
    register(ws)
    # a stream lock left behind by a job on another host: never removed without an operator
    (ws.lock / "halfpipe-251125001").write_text(
        json.dumps(
            {
                "pid": 4242,
                "host": "ops-node-7",
                "start": 0,
                "stream": "251125001",
                "process": "makeEvt",
                "created": time.time() - 7200,
            }
        )
    )
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        table, tree, locks_t = app.q(DownlinksTable), app.q(StreamTree), app.q(LocksTable)
        await settle(pilot, lambda: "251125001" in table.shown)
        await pilot.press("r")  # run the stream
        await settle(
            pilot,
            lambda: (
                ("makeEvt", "00001") in tree._pi_nodes
                and (tree_node(tree, "makeEvt", "00001").data.note or "").startswith(
                    "waiting for stream lock"
                )
            ),
        )
        assert table.model["251125001"].state == "running"
        await settle(pilot, lambda: "halfpipe-251125001" in locks_t.infos)
        info = locks_t.infos["halfpipe-251125001"]
        assert not info.stale and "another host" in info.reason
        await pilot.press("1", "u")  # unlock: asks first
        assert isinstance(app.screen, ConfirmScreen) and "NOT provably stale" in app.screen.question
        await pilot.press("y")
        await settle(
            pilot,
            lambda: (
                not (ws.lock / "halfpipe-251125001").exists()
                or locks_t.infos.get("halfpipe-251125001", info).host != "ops-node-7"
            ),
        )
        await settle(pilot, lambda: table.model["251125001"].state == "staged", timeout=90)
        assert tree.view is not None and tree.view.stream.status == "SUCCESS"
        await settle(pilot, lambda: "251125001" not in app.runners)  # runner exit seen


async def test_rollback_failed_stream_then_rerun_process(ws):
    level0 = mock(ws, "251125001", events=120)
    register(ws)
    src = sorted(level0.glob("*.h5"))[0]
    keep = ws.root / "keep.h5"
    shutil.copy2(src, keep)
    src.write_bytes(b"not hdf5")  # a corrupt source: makeEvt fails, retries, fails
    assert run_stream(ws, "251125001") == 1
    shutil.move(keep, src)  # the operator fixed it
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        table, tree = app.q(DownlinksTable), app.q(StreamTree)
        await settle(
            pilot,
            lambda: (
                table.model.get("251125001") is not None
                and table.model["251125001"].state == "failed"
            ),
        )
        await settle(pilot, lambda: tree.view is not None)
        assert tree_node(tree, "makeEvt", "00001").data.status == "FAILED"
        await pilot.press("b")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot, lambda: table.model["251125001"].state == "staged", timeout=90)
        pis = latest(ws, "251125001")
        assert (
            pis[("makeEvt", "00001")].execution == 3
            and pis[("makeEvt", "00001")].status == "SUCCESS"
        )
        # re-run one process (cleanup) from the tree: a new execution, the stream finishes again
        await settle(pilot, lambda: tree_node(tree, "cleanup").data.status == "SUCCESS")
        tree.focus()
        tree.move_cursor(tree_node(tree, "cleanup"))
        await pilot.press("p")
        assert isinstance(app.screen, ConfirmScreen) and "cleanup" in app.screen.question
        await pilot.press("y")
        await settle(
            pilot,
            lambda: (
                pi_of(tree, "cleanup") is not None
                and (pi_of(tree, "cleanup").execution, pi_of(tree, "cleanup").status)
                == (2, "SUCCESS")
            ),
            timeout=60,
        )
        # its log opens in the Log tab and follows the file
        tree.move_cursor(tree_node(tree, "cleanup"))
        await pilot.press("l")
        log = app.q(LogPanel)
        await settle(pilot, lambda: log.line_count > 0)
        assert log.path == tree_node(tree, "cleanup").data.log_path
        assert app.q("#tabs").active == "log"
        # keyboard path: enter on the downlink focuses the tree, enter on an instance opens its log
        table.focus()
        await pilot.press("enter")
        assert app.focused is tree
        tree.move_cursor(tree_node(tree, "mergeIndices"))
        await pilot.press("enter")
        await settle(
            pilot,
            lambda: (
                log.path == tree_node(tree, "mergeIndices").data.log_path and log.line_count > 0
            ),
        )


async def test_halt_flags_set_and_clear(ws):
    mock(ws, "251125001", events=60)
    register(ws)
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: table.selected == "251125001")
        await pilot.press("h")
        assert isinstance(app.screen, HaltScreen)
        # each flag says what it holds, under its name
        shown = "\n".join(
            str(app.screen.query_one(OptionList).get_option_at_index(i).prompt)
            for i in range(app.screen.query_one(OptionList).option_count)
        )
        for flag, meaning in api.HALT_MEANING.items():
            assert flag in shown and meaning in shown, (flag, shown)
        await pilot.press("enter")  # first option: haltStage, global
        await settle(pilot, lambda: (ws.path("flags") / "haltStage").exists())
        assert api.halts(ws, "251125001") == {"haltStage": ["global"]}
        await pilot.press("h", "down", "enter")  # haltStage for this downlink
        await settle(pilot, lambda: (ws.downlinks / "251125001" / "haltStage").exists())
        await pilot.press("h", "enter")  # toggling again clears the global one
        await settle(pilot, lambda: not (ws.path("flags") / "haltStage").exists())


async def test_staging_panel_and_disk_pressure_alert(tmp_path):
    ws = make_ws(tmp_path / "ws", reserve=10**18)  # no disk has that much: pressure
    mock(ws, "251125001", events=60)
    register(ws)
    app = SkydeckApp(ws, poll_s=0.05, stage_every_s=0.2)
    async with app.run_test(size=(160, 45)) as pilot:
        panel = app.q(StagingPanel)
        await settle(pilot, lambda: panel.report is not None)
        assert panel.report.paused and panel.has_class("pressure")
        assert "251125001" in panel.report.downlinks
        banner = app.q("#alert")
        assert banner.has_class("show") and "launching is PAUSED" in str(banner.render())
        await pilot.press("2")
        assert app.q("#tabs").active == "staging"


async def test_hits_panel_summary_and_ab_view(ws):
    for seed in (0, 1):
        propagate(
            Request(
                scene=SCENE,
                out=ws.events / SCENE.stem / f"ev{seed}",
                photons=20000,
                seed=seed,
                workers=1,
            )
        )
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        panel = app.q(HitsPanel)
        await settle(pilot, lambda: len(panel.summaries) == 2)
        s = next(iter(panel.summaries.values()))
        assert s.photons == 20000 and s.hits > 0 and 0 < s.hit_fraction <= 1
        await pilot.press("3")
        panel.table.focus()
        await pilot.press("a", "down", "v")
        await settle(pilot, lambda: panel.comparison is not None)
        c = panel.comparison
        assert (c.a, c.b) == (panel.mark_a, panel.selected) and c.a != c.b
        assert c.photons_a == c.photons_b == 20000 and c.flagmask_ndf >= 0


async def test_launch_propagation_with_progress(ws):
    app = SkydeckApp(ws, poll_s=0.05)
    seen: list[JobProgress] = []
    async with app.run_test(size=(160, 45), message_hook=job_messages(seen)) as pilot:
        await pilot.press("P")
        assert isinstance(app.screen, FormScreen)
        app.screen.query_one("#f-photons").value = "30000"
        app.screen.query_one("#f-tag").value = "from-console"
        await pilot.press("enter")  # enter in any field launches
        panel = app.q(HitsPanel)
        await settle(
            pilot,
            lambda: (
                any(m.exit is not None for m in seen) and not app.jobs and len(panel.summaries) == 1
            ),
        )
        assert [m.exit for m in seen if m.exit is not None] == [0]
        assert any(m.total == 30000 and m.done == 30000 for m in seen)  # progress reached it
        path = next(iter(panel.summaries))
        assert Path(path).name == "from-console" and panel.summaries[path].photons == 30000
        sev, text = next(t for t in app.toasts if t[1].startswith("job done"))
        assert "30,000 photons in" in text and "photons/s); output " in text


async def test_read_only_disables_every_action(ws):
    mock(ws, "251125001", events=60)
    register(ws)
    app = SkydeckApp(ws, read_only=True, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: table.selected == "251125001")
        await pilot.press("r", "b", "h", "P", "B", "u")
        assert not app.runners and not app.jobs and app.screen is app.main
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert not any(
            t.startswith(("Run", "Roll back", "Unlock", "Build", "Propagate")) for t in titles
        )
        assert any(t.startswith("Filter") for t in titles)
        assert "READ-ONLY" in app.sub_title


async def test_help_and_palette_list_every_binding(ws):
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for b in app.BINDINGS:
            assert b.description, b
            if b.action != "quit":
                assert any(t.startswith(b.description) for t in titles), b.description
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert {k for k, _ in app.screen.rows} >= {app.get_key_display(b) for b in app.BINDINGS}
        assert len(app.screen.rows) >= len(app.BINDINGS)
        await pilot.press("escape")
        assert app.screen is app.main


async def test_launch_build_on_files_with_progress(ws):
    mock(ws, "251125001", events=300)
    app = SkydeckApp(ws, poll_s=0.05)
    seen: list[JobProgress] = []
    async with app.run_test(size=(160, 45), message_hook=job_messages(seen)) as pilot:
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: table.selected == "251125001")
        await pilot.press("B")
        assert isinstance(app.screen, FormScreen)
        form = app.screen
        assert form.query_one("#f-inputs").value.endswith("incoming/level0/251125001")
        form.query_one("#f-select").value = 'color == "red"'
        await pilot.press("enter")  # enter in any field launches
        await settle(pilot, lambda: any(m.exit is not None for m in seen) and not app.jobs)
        assert [m.exit for m in seen if m.exit is not None] == [0]
        assert (ws.root / "builds" / "251125001.h5").is_file()
        done = [m for m in seen if m.total]
        assert done and done[-1].done == done[-1].total > 0  # progress reached the total
        assert not app.query(".job")  # the bar went away
        sev, text = next(t for t in app.toasts if t[1].startswith("job done"))
        assert "events in" in text and str(ws.root / "builds" / "251125001.h5") in text
