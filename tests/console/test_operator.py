"""The console as an operator at 3 a.m. meets it: what is on screen is what a key
acts on, every key works from every panel and shows at 120 columns, and nothing is offered
that cannot work; when something fails, the toast says why and the log can be opened.

Real parts throughout: mock deliveries registered by the engine, streams run by
``skydeck-engine run`` subprocesses, propagation events written by the engine, the daemon
run as ``skydeck-engine watch --once``. Waits are on the app's state (``settle``).
"""

from __future__ import annotations

import io
import subprocess

import pytest
from rich.console import Console
from textual.widgets import Static

from console.app import SkydeckApp
from console.screens.modals import ConfirmScreen, FormScreen, HelpScreen
from console.widgets.downlinks import DownlinksTable
from console.widgets.hits import HitsPanel
from console.widgets.logview import LogPanel
from console.widgets.stream import StreamTree
from engine import api
from engine.core.workspace import ASSETS
from engine.propagate.event import Request, propagate

from .conftest import mock, settle
from .test_app import latest, register, run_stream

pytestmark = pytest.mark.asyncio
SCENE = ASSETS / "scenes" / "tboolean-box-detect.toml"


def text_of(static: Static) -> str:
    """What a Static shows, as plain text."""
    con = Console(width=120, record=True, file=io.StringIO())
    con.print(static.content)
    return con.export_text()


def event(ws, tag: str, photons: int) -> str:  # type: ignore[no-untyped-def]
    out = ws.events / SCENE.stem / tag
    propagate(Request(scene=SCENE, out=out, photons=photons, seed=photons, workers=1))
    return str(out)


def warned(app: SkydeckApp, *words: str) -> bool:
    return any(
        sev == "warning" and all(w in text for w in words)
        for sev, text in getattr(app, "toasts", [])
    )


async def test_hits_detail_follows_the_cursor_by_event_when_events_arrive(ws):
    older = event(ws, "older", 2000)
    event(ws, "newer", 3000)
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        panel = app.q(HitsPanel)
        await settle(pilot, lambda: len(panel.summaries) == 2)
        await pilot.press("3")
        panel.table.focus()
        await pilot.press("down")  # the older event, second row
        await settle(pilot, lambda: panel.selected == older)
        detail = panel.query_one("#hit-summary", Static)
        assert "photons 2,000" in text_of(detail)
        event(ws, "newest", 4000)  # arrives on top: rows move down
        await settle(pilot, lambda: len(panel.summaries) == 3)
        await pilot.pause()
        assert panel.selected == older  # the cursor stayed on the event
        assert "photons 2,000" in text_of(detail)  # ... and the detail shows it
        await pilot.press("a")
        assert panel.mark_a == older  # `a` marks what is on screen


async def test_tab_keys_work_from_every_focused_panel(ws):
    event(ws, "one", 2000)
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        panel, tabs = app.q(HitsPanel), app.q("#tabs")
        await settle(pilot, lambda: len(panel.summaries) == 1)
        for key, tab in (("1", "locks"), ("2", "staging"), ("4", "log")):
            await pilot.press("3")
            panel.table.focus()  # focus inside the Hits tab
            await pilot.pause()
            await pilot.press(key)
            await pilot.pause()
            assert tabs.active == tab, (key, tabs.active)
        for widget in (app.q(StreamTree), app.q(DownlinksTable), app.q("#locks-table")):
            await pilot.press("1")
            widget.focus()
            await pilot.press("3")
            await pilot.pause()
            assert tabs.active == "hits", widget


async def test_every_footer_key_is_visible_at_120_columns(ws):
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        shown = {}
        for k in app.screen.query("FooterKey"):
            if k.region.width:
                shown[k.key] = k.region
        meant = {b.key for b in app.BINDINGS if b.show}
        assert meant <= set(shown), meant - set(shown)
        for key in meant:
            assert shown[key].right <= 120, (key, shown[key])
        labels = [str(lb.render()) for lb in app.screen.query("FooterLabel")]
        assert any("Tabs" in t for t in labels)  # 1-4 are one group
        # the keys hidden in the footer are still listed by `?`
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        listed = {k for k, _ in app.screen.rows}
        assert {app.get_key_display(b) for b in app.BINDINGS} <= listed


async def test_rejected_delivery_shows_its_reason_and_offers_no_run(ws):
    level0 = mock(ws, "251125001", events=60)
    src = sorted(level0.glob("*.h5"))[0]
    src.write_bytes(src.read_bytes()[:-10] + b"0123456789")  # no longer what MANIFEST says
    register(ws)
    kept = ws.rejected / "251125001"
    assert kept.is_dir()
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        table, tree = app.q(DownlinksTable), app.q(StreamTree)
        await settle(pilot, lambda: "251125001" in table.model)
        row = table.model["251125001"]
        assert row.state == "rejected"
        assert not row.note.startswith("/") and row.note.startswith(
            "checksum mismatch"
        )  # reason first
        assert str(table.get_cell("251125001", "note")).startswith(row.note[:20])
        await settle(pilot, lambda: "REJECTED" in str(tree.root.label))
        lines = [str(n.label) for n in tree.root.children]
        assert any(line.startswith("reason: checksum mismatch") for line in lines)
        assert any(str(kept) in line for line in lines)  # where the files were kept
        assert "press r" not in str(tree.root.label)
        await pilot.press("r")
        assert not app.runners  # nothing was started
        assert warned(app, "nothing to run", str(kept))


async def test_rerun_that_cannot_work_is_refused_and_a_group_rolls_back(ws):
    mock(ws, "251125001", events=120)
    register(ws)
    assert run_stream(ws, "251125001") == 0  # staged, then cleaned up
    before = latest(ws, "251125001")
    run = next(k for p, k in before if p == "mergeEvt")
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        table, tree = app.q(DownlinksTable), app.q(StreamTree)
        await settle(pilot, lambda: tree.view is not None and ("mergeEvt", run) in tree._pi_nodes)
        tree.focus()
        tree.move_cursor(tree._pi_nodes[("mergeEvt", run)])
        await pilot.press("p")
        await settle(
            pilot,
            lambda: warned(app, "not rolled back", "gone") or isinstance(app.screen, ConfirmScreen),
        )
        assert app.screen is app.main  # nothing asked, nothing done
        assert warned(app, "makeEvt")  # ... and what would work
        after = latest(ws, "251125001")
        assert {k: (p.execution, p.status) for k, p in after.items()} == {
            k: (p.execution, p.status) for k, p in before.items()
        }
        assert table.model["251125001"].state == "staged" and not app.runners
        await pilot.press("b")  # nothing failed: nothing to ask
        await settle(pilot, lambda: warned(app, "no failed instance", "press p"))
        assert app.screen is app.main
        # the makeEvt group can be selected and rolled back as a whole
        tree.move_cursor(tree._groups["makeEvt"])
        await pilot.press("p")
        await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "makeEvt" in app.screen.question and "makeEvt[00002]" in app.screen.detail
        await pilot.press("y")
        await settle(
            pilot,
            lambda: (
                table.model["251125001"].state == "staged"
                and table.model["251125001"].stream == "SUCCESS"
                and latest(ws, "251125001")[("makeEvt", "00001")].execution == 2
                and "251125001" not in app.runners
            ),
            timeout=120,
        )
        pis = latest(ws, "251125001")
        assert all(p.status in ("SUCCESS", "SKIPPED") for p in pis.values())
        assert pis[("mergeEvt", run)].execution == 2


async def test_daemon_log_opens_from_the_console(ws):
    from console.screens.modals import LogPickerScreen

    mock(ws, "251125001", events=60)
    subprocess.run(
        api.engine_argv(ws, "watch", "--once"), capture_output=True, timeout=120, check=True
    )
    daemon = ws.daemon_log
    assert daemon.is_file() and "stream_success" in daemon.read_text()
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("L")
        assert isinstance(app.screen, LogPickerScreen)
        assert app.screen.files[0].path == str(daemon)
        await pilot.press("enter")
        log = app.q(LogPanel)
        await settle(pilot, lambda: log.path == str(daemon) and log.line_count > 0)
        assert app.q("#tabs").active == "log"


async def test_failed_job_toast_says_why_and_its_log_opens(ws):
    from console.screens.modals import LogPickerScreen

    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("B")
        assert isinstance(app.screen, FormScreen)
        # an input the form cannot judge (it exists) but the build refuses: no sources
        empty = ws.root / "no-such-input"
        empty.mkdir()
        app.screen.query_one("#f-inputs").value = str(empty)
        await pilot.press("enter")
        await settle(pilot, lambda: any(sev == "error" for sev, _ in app.toasts))
        text = next(t for sev, t in app.toasts if sev == "error")
        job_log = next((ws.logs / "console").glob("build-*.log"))
        reason = api.last_line(job_log)
        assert reason and reason in text and "no-such-input" in text  # the one-line reason
        await pilot.press("L")
        assert isinstance(app.screen, LogPickerScreen)
        assert str(job_log) in [f.path for f in app.screen.files]
        await pilot.press("enter")  # the newest console job's log
        log = app.q(LogPanel)
        await settle(pilot, lambda: log.path == str(job_log) and log.line_count > 0)


async def test_help_has_a_glossary_of_states_and_the_execution_notation(ws):
    app = SkydeckApp(ws, poll_s=0.05)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = text_of(app.screen.query_one("#glossary", Static))
        for term in (
            "arrived",
            "running",
            "staged",
            "failed",
            "rejected",
            "WAITING",
            "READY",
            "QUEUED",
            "SUBMITTED",
            "RUNNING",
            "SUCCESS",
            "FAILED",
            "TERMINATED",
            "CANCELED",
            "SKIPPED",
            "e1 r0/1",
        ):
            assert term in text, term
        assert "execution" in text and "retries" in text
