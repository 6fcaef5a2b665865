"""The downlinks table as an operator uses it: filters (field terms, globs, inverse, state
keys, errors), one selection that follows the visible rows, sorting from the header, newest
first, and text from outside shown literally. Real workspaces written by the engine's
StateDB; Pilot at 120x40 and 160x48."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Input, Static

from console.app import SkydeckApp
from console.widgets.downlinks import DownlinksTable, FilterError, parse_filter
from console.widgets.locks import LocksTable
from console.widgets.logview import LogPanel
from console.widgets.stream import StreamTree

from .conftest import EVIL_NOTE, FROZEN_NOW, fill_evil, fill_fixed, make_ws, settle

pytestmark = pytest.mark.asyncio
SIZES = [(120, 40), (160, 48)]


def app_on(tmp_path, evil: bool = False) -> SkydeckApp:
    ws = make_ws(tmp_path / "ws")
    fill_fixed(ws)
    if evil:
        fill_evil(ws)
    return SkydeckApp(ws, clock=lambda: FROZEN_NOW, poll_s=0.05, stage_every_s=3600)


def screen_text(app: SkydeckApp) -> str:
    """What the terminal shows, as plain text lines (the compositor's strips)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join(strip.text for strip in strips)


async def test_filter_terms_parse_and_bad_regex_is_an_error() -> None:
    assert [t.field for t in parse_filter("state:failed !note:md5 2612")] == [
        "state",
        "note",
        None,
    ]
    with pytest.raises(FilterError, match="bad regex"):
        parse_filter("note:([")
    with pytest.raises(FilterError, match="unknown field"):
        parse_filter("colour:red")


@pytest.mark.parametrize("size", SIZES)
async def test_filters_selection_and_title(tmp_path, size) -> None:
    app = app_on(tmp_path)
    async with app.run_test(size=size) as pilot:
        table, tree = app.q(DownlinksTable), app.q(StreamTree)
        await settle(pilot, lambda: len(table.shown) == 3 and tree.dlid == "251125003")
        # newest first, following: the newest is selected and drives the stream tree
        assert table.keys == ["251125003", "251124002", "251123001"]
        assert table.border_title.startswith("Downlinks 3/3")
        await pilot.press("down")
        await settle(pilot, lambda: tree.dlid == "251124002")
        # a filter hiding the selected row moves the selection to a visible row
        await pilot.press("slash", *"state:failed", "enter")
        await settle(pilot, lambda: list(table.shown) == ["251125003"])
        assert table.selected == "251125003"
        await settle(pilot, lambda: tree.dlid == "251125003")
        assert "Downlinks 1/3" in table.border_title and "failed 1/1" in table.border_title
        assert "staged 0/1" in table.border_title
        # Esc from anywhere (the stream tree has the focus) clears the filter
        tree.focus()
        await pilot.press("escape")
        await settle(pilot, lambda: len(table.shown) == 3)
        assert app.focused is table
        # glob over a field, an inverse term, free text per field
        for text, want in (
            ("dlid:2511*", {"251125003", "251124002", "251123001"}),
            ("dlid:25112?00?", {"251125003", "251124002", "251123001"}),
            ("dlid:251124*", {"251124002"}),
            ("!state:staged", {"251125003", "251124002"}),
            ("running RUNNING", {"251124002"}),
            ('"running RUNNING"', set()),  # one regex, per field: never across two fields
            ("state:^(failed|staged)$", {"251125003", "251123001"}),
        ):
            app.q("#filter", Input).value = text
            await settle(pilot, lambda want=want: set(table.shown) == want)
        # a bad regex: an error on the input, the rows stay as they were
        app.q("#filter", Input).value = "note:(["
        await pilot.pause()
        box = app.q("#filter", Input)
        assert box.has_class("error") and "bad regex" in str(box.border_title)
        assert set(table.shown) == {"251125003", "251123001"}
        app.q("#filter", Input).value = ""
        await settle(pilot, lambda: len(table.shown) == 3)
        # state keys: 5 failed, 8 staged, 0 all
        table.focus()
        await pilot.press("8")
        await settle(pilot, lambda: list(table.shown) == ["251123001"])
        assert app.q("#filter", Input).value == "state:staged"
        await pilot.press("0")
        await settle(pilot, lambda: len(table.shown) == 3)
        # a filter that hides everything: no selection, the tree says so, actions refuse
        app.q("#filter", Input).value = "state:rejected"
        await settle(pilot, lambda: table.selected is None and tree.dlid is None)
        app.main.action_rollback_stream()
        assert app.toasts[-1] == ("warning", "select a downlink first")


@pytest.mark.parametrize("size", SIZES)
async def test_sort_from_the_header_shows_the_indicator(tmp_path, size) -> None:
    app = app_on(tmp_path)
    async with app.run_test(size=size) as pilot:
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: len(table.shown) == 3)
        assert "Downlink▼" in screen_text(app)
        # the layout settles first (the health banner comes with the first check)
        await settle(pilot, lambda: app.q("#health").has_class("show"), timeout=20)
        await pilot.pause()
        # the State header: border 1 + mark 1 + Downlink 10+1 + Date 10+1 -> column 24
        await pilot.click("#downlinks", offset=(26, 1))
        await settle(pilot, lambda: table.sort_column == "state")
        assert not table.sort_reverse and "State▲" in screen_text(app)
        assert table.keys == ["251125003", "251124002", "251123001"]  # failed, running, staged
        await pilot.click("#downlinks", offset=(26, 1))  # again: the other way
        await settle(pilot, lambda: table.sort_reverse)
        assert "State▼" in screen_text(app) and table.keys[0] == "251123001"


@pytest.mark.parametrize("size", SIZES)
async def test_text_from_outside_is_shown_literally(tmp_path, size) -> None:
    app = app_on(tmp_path, evil=True)
    # a lock whose owner's host carries markup and an escape (a lock file is data too)
    (app.ws.lock / "halfpipe-251126004").write_text(
        json.dumps(
            {
                "pid": 4243,
                "host": "[b]evil\x1b[5m",
                "start": 0,
                "stream": "251126004",
                "process": "launchChunks",
                "created": FROZEN_NOW - 60,
            }
        )
    )
    async with app.run_test(size=size) as pilot:
        table, tree = app.q(DownlinksTable), app.q(StreamTree)
        await settle(pilot, lambda: "251126004" in table.shown and tree.view is not None)
        assert table.selected == "251126004"  # the newest
        cell = table.get_cell("251126004", "note")
        assert "[link=https://evil.example]" in cell.plain and "\\x1b[31m" in cell.plain
        assert not cell.spans or all(s.style == "dim" for s in cell.spans)
        assert "\x1b" not in cell.plain and "\x07" not in cell.plain
        detail = str(app.q("#row-detail", Static).render())
        assert "[link=https://evil.example]click[/link] [bold red]\\x1b[31mred" in detail
        assert "\\x07 done" in detail  # the whole note, to its end
        text = screen_text(app)
        assert "[link=https://evil.example]" in text and "\x1b" not in text
        label = tree.root.label
        assert "\\x1b[31m" in label.plain and "[bold red]" in label.plain
        assert EVIL_NOTE not in text
        locks = app.q(LocksTable)
        await settle(pilot, lambda: "halfpipe-251126004" in locks.infos)
        owner = locks.get_cell("halfpipe-251126004", "owner")
        assert owner.plain == "[b]evil\\x1b[5m:4243" and not owner.spans


async def test_reasons_readable_at_120_columns(tmp_path) -> None:
    """The failed downlink's reason in full under the table; with the focus in the stream
    tree, the selected instance's note; the tree shows the note's start, not nothing."""
    app = app_on(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        table, tree = app.q(DownlinksTable), app.q(StreamTree)
        await settle(pilot, lambda: tree.dlid == "251125003" and tree.view is not None)
        assert table.selected == "251125003"
        await pilot.pause()
        assert "251125003 failed FAILED: failed: makeEvt" in screen_text(app)
        await pilot.press("enter")  # into the stream tree
        assert app.focused is tree
        while tree.selected is None or tree.selected.key != "00002":
            await pilot.press("down")
        await pilot.pause()
        text = screen_text(app)
        assert "251125003 makeEvt 00002 FAILED e1 on node01:" in text
        assert "exit 2: source" in text and "unreadable" in text  # wrapped, whole
        # the tree line itself shows the note's start at 120 columns
        line = next(x for x in text.splitlines() if "00002" in x and "FAILED" in x and "└" in x)
        assert "exit 2" in line


async def test_newest_first_follows_arrivals_until_the_operator_moves(tmp_path) -> None:
    app = app_on(tmp_path)
    ws = app.ws
    async with app.run_test(size=(160, 48)) as pilot:
        table, tree = app.q(DownlinksTable), app.q(StreamTree)
        await settle(pilot, lambda: table.selected == "251125003")
        fill_evil(ws, "251126004")  # a new downlink arrives: the cursor follows it
        await settle(pilot, lambda: table.keys[:1] == ["251126004"])
        assert table.selected == "251126004"
        await settle(pilot, lambda: tree.dlid == "251126004")
        await pilot.press("down")  # the operator moved: arrivals no longer take the cursor
        assert table.selected == "251125003"
        fill_evil(ws, "251127005")
        await settle(pilot, lambda: table.keys[:1] == ["251127005"])
        assert table.selected == "251125003" and table.cursor_row == 2
        await pilot.press("home")  # back on top: following again
        fill_evil(ws, "251128006")
        await settle(pilot, lambda: table.selected == "251128006")


async def test_the_log_pane_follows_the_selection(tmp_path) -> None:
    """An instance's log stays on screen while its downlink is selected; moving to another
    downlink (a key, or a filter hiding the row) drops it with a line saying why."""
    app = app_on(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        table, tree = app.q(DownlinksTable), app.q(StreamTree)
        await settle(pilot, lambda: tree.dlid == "251125003" and tree.view is not None)
        log = tree.view.instances[0].log_path
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(log).write_text("line one\n")
        await pilot.press("enter")  # into the tree, on the stream's first instance
        while tree.selected is None:
            await pilot.press("down")
        await pilot.press("l")
        panel = app.q(LogPanel)
        await settle(pilot, lambda: panel.path is not None and panel.dlid == "251125003")
        assert Path(panel.path).name in str(panel.border_title)
        app.q("#filter", Input).value = "state:staged"  # hides 251125003
        await settle(pilot, lambda: table.selected == "251123001")
        await settle(pilot, lambda: panel.path is None)
        assert "the selection moved to 251123001" in panel.lines[-1]


@pytest.mark.parametrize("size", SIZES)
async def test_many_rows_scroll_with_the_cursor(tmp_path, size) -> None:
    """More downlinks than lines: end, home, page keys and a filter keep the cursor's row on
    screen (the header stays on top)."""
    ws = make_ws(tmp_path / "ws")
    for i in range(60):
        fill_evil(ws, f"2511{10 + i // 30:02d}{i % 30 + 1:03d}", now=FROZEN_NOW - i)
    app = SkydeckApp(ws, clock=lambda: FROZEN_NOW, poll_s=0.05, stage_every_s=3600)
    async with app.run_test(size=size) as pilot:
        table = app.q(DownlinksTable)
        await settle(pilot, lambda: len(table.shown) == 60)
        await pilot.press("end")
        last = table.keys[-1]
        assert table.selected == last
        await pilot.pause()
        text = screen_text(app)
        assert last in text and "Downlink▼" in text
        await pilot.press("pageup")
        assert table.cursor_row < 59 and table.selected in screen_text(app)
        await pilot.press("home")
        assert table.selected == table.keys[0]
        await pilot.pause()
        assert table.keys[0] in screen_text(app)
        # a filter keeps only the last few rows: the cursor moves onto one, on screen
        await pilot.press("end")
        app.q("#filter", Input).value = f"dlid:{last[:-1]}*"
        await settle(pilot, lambda: len(table.shown) < 60)
        await pilot.pause()
        assert table.selected in table.shown and table.selected in screen_text(app)
