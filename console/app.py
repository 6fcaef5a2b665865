"""`skydeck [-w WORKSPACE] [--read-only]`: the Textual operations console.

How it stays live without blocking (reference/ecosystem.md section 3):
- one long-running thread worker (``_poll_loop``) owns a state-database connection and an
  ``engine.api.ops.ChangeProbe``; every ``POLL_S`` it asks what changed (SQLite data_version,
  directory mtimes) and reads only that, then posts one ``Refreshed`` message;
- the usage scan is its own worker, re-armed by a timer after each completion (no overlap);
- every action (run, rollback, unlock, halt, launch) runs in a thread worker and calls the
  engine API; streams run in ``skydeck-engine run`` processes that claim the stream in the
  state database, so a daemon on the same workspace never runs a process twice;
- widgets update in place (diffed cells, relabelled tree nodes, appended log lines).
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import (
    DataTable,
    Footer,
    Header,
    Input,
    Label,
    ProgressBar,
    Static,
    TabbedContent,
    TabPane,
    Tree,
)
from textual.worker import get_current_worker

from console.screens.modals import (
    ConfirmScreen,
    FormScreen,
    HaltScreen,
    HelpScreen,
    LogPickerScreen,
)
from console.widgets.downlinks import DownlinksTable
from console.widgets.hits import HitsPanel
from console.widgets.locks import LocksTable
from console.widgets.logview import LogPanel
from console.widgets.staging import StagingPanel, pressure
from console.widgets.stream import StreamTree
from engine.api import ops
from engine.api.ops import DownlinkRow, EventDir
from engine.api.pipeline import rollback
from engine.core.errors import SkydeckError
from engine.core.workspace import ASSETS, Workspace
from engine.pipeline import locks
from engine.pipeline.halts import HALT_FLAGS
from engine.pipeline.locks import LockInfo
from engine.pipeline.usage import StageReport, stage_report
from engine.store import StreamView

if TYPE_CHECKING:
    from engine.propagate.hits import Comparison, HitSummary

POLL_S = 0.25
STAGE_EVERY_S = 10.0   # usage scan at least this often
STAGE_MIN_S = 1.0      # ... and within a second of a change that moves bytes
LOCK_RECHECK_S = 1.0
LOG_TAIL_BYTES = 1 << 20

# actions that change something: disabled (and hidden) in --read-only mode
WRITE_ACTIONS = frozenset({"run_stream", "rollback_stream", "rerun_process", "unlock",
                           "halts", "launch_build", "launch_propagate"})
PANELS = [
    ("Downlinks", "id, date (YYMMDD), state, stream status, chunks done/total, runs, bytes, age, "
                  "note (STUCK when the runner died); / filters (regex, ! inverts), s/S sort"),
    ("Stream", "the selected downlink's process instances as a tree: status (Pipeline-II colors),"
               " execution, retries, duration, host:pid, estimated progress of running jobs"),
    ("Locks", "lock files: kind, owner, process, age, stale verdict with its reason"),
    ("Staging", "usage bars per area and per downlink, free space against the reserve, alert "
                "under disk pressure"),
    ("Hits", "latest propagation events: photons, hits, efficiency, flag table, histograms; "
             "a marks A, v compares A with the selected event"),
    ("Log", "the selected instance's log, following, bounded to 5000 lines"),
]


TABS = Binding.Group("Tabs", compact=True)
GLOSSARY = [
    ("Downlink states", ""),
    ("arrived", "seen in incoming/ (pending: its files or manifest are not complete yet), or "
                "registered with no stream run yet"),
    ("running", "its stream is being run (STUCK: the runner died; r resumes it)"),
    ("staged", "its stream succeeded: built events merged into stage/"),
    ("failed", "its stream FAILED, was TERMINATED or CANCELED: b rolls back what failed"),
    ("rejected", "the delivery failed verification; its files are kept in incoming/rejected/ "
                 "with a .reason file; nothing to run: fix it and deliver it again"),
    ("Process statuses (Pipeline-II)", ""),
    ("WAITING", "created; waits for the processes it comes after"),
    ("READY", "may start; held until a slot is free or what the note says clears (a halt "
              "flag, the disk reserve, a lock)"),
    ("QUEUED", "handed to the batch system (Slurm), waiting there"),
    ("SUBMITTED", "accepted by the launcher, not running yet"),
    ("RUNNING", "the job runs (the bar is elapsed time against the usual duration, ~)"),
    ("SUCCESS", "the job exited 0"),
    ("FAILED", "the job failed and its automatic retries are used up, or its supervisor died"),
    ("TERMINATED", "stopped by a signal (daemon stopped, job killed); resumes as a new execution"),
    ("CANCELED", "cancelled by an operator"),
    ("SKIPPED", "its condition was false (e.g. no gensteps: no propagate); counts as done"),
    ("Notation", ""),
    ("e1 r0/1", "execution 1 (each retry, rollback or resume makes a new execution, +1); "
                "automatic retries used 0 of the 1 the task allows for that process"),
]

# ------------------------------------------------------------------------------ messages

@dataclass
class Refreshed(Message):
    """What the poll loop read this round; None means unchanged."""

    rows: dict[str, DownlinkRow] | None = None
    dlid: str | None = None
    stream: StreamView | None = None
    stream_read: bool = False
    typical: dict[str, float] = field(default_factory=dict)
    locks: list[LockInfo] | None = None
    events: dict[str, HitSummary | str] | None = None
    read_s: float = 0.0


@dataclass
class StageRead(Message):
    report: StageReport | None  # None: the scan failed (reported separately)


@dataclass
class LogLines(Message):
    path: str
    lines: list[str]


@dataclass
class ActionDone(Message):
    text: str
    severity: str = "information"


@dataclass
class Planned(Message):
    """A rollback checked in a worker: ask to confirm it, or say why it cannot succeed."""

    dlid: str
    targets: list[str] | None
    question: str
    plan: ops.RollbackPlan


@dataclass
class JobProgress(Message):
    job: str
    done: int
    total: int | None
    what: str
    exit: int | None = None
    log: str = ""


@dataclass
class Compared(Message):
    comparison: Comparison


# ------------------------------------------------------------------------------ widgets

class FilterInput(Input):
    BINDINGS: ClassVar = [Binding("escape", "clear_filter", "Clear filter", id="filter.clear")]

    def action_clear_filter(self) -> None:
        self.value = ""
        self.app.q(DownlinksTable).focus()  # type: ignore[attr-defined]


class MainScreen(Screen):
    def compose(self) -> ComposeResult:
        app: SkydeckApp = self.app  # type: ignore[assignment]
        yield Header(show_clock=False)
        yield Static("", id="alert")
        with Horizontal(id="top"):
            with Vertical(id="downlinks-box"):
                yield FilterInput(placeholder="filter downlinks (regex, ! inverts); esc clears",
                                  id="filter")
                yield DownlinksTable(clock=app.clock, id="downlinks")
            yield StreamTree(clock=app.clock, id="stream")
        with TabbedContent(id="tabs", initial="locks"):
            with TabPane("Locks [1]", id="locks"):
                yield LocksTable(clock=app.clock, id="locks-table")
            with TabPane("Staging [2]", id="staging"):
                yield StagingPanel(id="staging-panel")
            with TabPane("Hits [3]", id="hits"):
                yield HitsPanel(id="hits-panel")
            with TabPane("Log [4]", id="log"):
                yield LogPanel(id="log-panel")
        yield Vertical(id="jobs")
        yield Footer()

    def on_mount(self) -> None:
        self.app.start()  # type: ignore[attr-defined]


class SkydeckApp(App[None]):
    """The console on one workspace."""

    TITLE = "skydeck"
    CSS_PATH = "app.tcss"
    # The footer shows the keys an operator needs most (they fit in 120 columns, the tab keys
    # as one group); the rest are hidden there but listed by `?` and the command palette.
    BINDINGS: ClassVar = [
        Binding("question_mark", "help", "Help", id="help"),
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("r", "run_stream", "Run", id="run_stream"),
        Binding("b", "rollback_stream", "Roll back", id="rollback_stream"),
        Binding("p", "rerun_process", "Re-run", id="rerun_process"),
        Binding("u", "unlock", "Unlock", id="unlock"),
        Binding("h", "halts", "Halt", id="halts"),
        Binding("l", "open_log", "Log", id="open_log"),
        Binding("L", "pick_log", "Logs", id="pick_log"),
        Binding("1", "tab('locks')", "Locks", id="tab.locks", group=TABS),
        Binding("2", "tab('staging')", "Staging", id="tab.staging", group=TABS),
        Binding("3", "tab('hits')", "Hits", id="tab.hits", group=TABS),
        Binding("4", "tab('log')", "Log tab", id="tab.log", group=TABS),
        Binding("q", "quit", "Quit", id="quit"),
        Binding("s", "sort", "Sort", id="sort", show=False),
        Binding("S", "reverse", "Reverse", id="reverse", show=False),
        Binding("B", "launch_build", "Build", id="launch_build", show=False),
        Binding("P", "launch_propagate", "Propagate", id="launch_propagate", show=False),
        Binding("a", "mark_a", "Mark A", id="mark_a", show=False),
        Binding("v", "compare", "A/B", id="compare", show=False),
    ]
    COMMAND_HELP: ClassVar = {
        "run_stream": "Run the selected downlink's stream (skydeck-engine run; claims it)",
        "rollback_stream": "Roll back the failed instances of the selected stream, then run it",
        "rerun_process": "Roll back the selected process instance, or a whole group such as all "
                         "makeEvt (and what is downstream), then run; refused with the reason "
                         "when it cannot succeed",
        "unlock": "Remove the selected lock (asks first; a live one needs a second look)",
        "halts": "Set or clear halt flags (global or for the selected downlink)",
        "open_log": "Follow the selected process instance's log",
        "pick_log": "Open another log: the daemon's, console runs, builds and propagations",
        "launch_build": "Build events from files (skydeck-engine build), with progress",
        "launch_propagate": "Propagate photons through a scene, with progress",
        "mark_a": "Mark the selected propagation event as A for an A/B comparison",
        "compare": "Compare event A with the selected event (chi2 per flag category)",
        "filter": "Filter the downlinks (regex; a leading ! inverts)",
        "sort": "Sort the downlinks by the next column",
        "reverse": "Reverse the downlinks' sort order",
        "help": "Show keys, panels and a glossary of states",
    }

    def __init__(self, ws: Workspace, read_only: bool = False,
                 clock: Callable[[], float] = time.time, poll_s: float = POLL_S,
                 stage_every_s: float = STAGE_EVERY_S) -> None:
        super().__init__()
        self.ws = ws
        self.read_only = read_only
        self.clock = clock
        self.poll_s = poll_s
        self.stage_every_s = stage_every_s
        self.stage_busy = True          # the first scan starts with the poll loop
        self.stage_dirty = False
        self.stage_last = 0.0
        self.want_dlid: str | None = None
        self.wake = threading.Event()
        self.runners: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self.jobs: dict[str, subprocess.Popen[str]] = {}
        self.toasts: list[tuple[str, str]] = []
        self.refreshes = 0
        self.last_refresh_s = 0.0
        self.rows_timing = (0.0, 0.0)
        self.main = MainScreen()

    def notify(self, message: str, *, title: str = "", severity: Any = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Every toast is also kept in ``toasts`` (severity, text): the last ones are what an
        operator was told, and what tests check. Markup is off: paths and reasons are data."""
        self.toasts.append((str(severity), f"{title}: {message}" if title else message))
        del self.toasts[:-50]
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def q(self, selector: Any, expect: Any = None) -> Any:
        """Query the main screen (also while a modal screen is on top)."""
        return self.main.query_one(selector, expect) if expect else self.main.query_one(selector)

    # -------------------------------------------------------------------- lifecycle

    def on_mount(self) -> None:
        self.sub_title = f"{self.ws.root.name}{'  READ-ONLY' if self.read_only else ''}"
        self.push_screen(self.main)

    def start(self) -> None:
        """Called by the main screen once mounted: focus, start the poll loop and the timers."""
        self.q(DownlinksTable).focus()
        self._poll_loop()
        self._scan_stage()
        self.set_interval(STAGE_MIN_S, self._maybe_scan)
        self.set_interval(1.0, self._tick)

    @property
    def live(self) -> bool:
        """False while shutting down: late messages from workers are dropped then."""
        return self.is_running and self.main.is_attached and self.main.is_running

    def _tick(self) -> None:
        if not self.live:
            return
        with self.batch_update():
            self.q(DownlinksTable).tick()
            self.q(StreamTree).tick()
            self.q(LocksTable).tick()
        for dlid, (proc, log) in list(self.runners.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.runners[dlid]
            if code == 0:
                self.notify(f"stream {dlid} finished", title="run")
            elif code == 3:
                self.notify(f"stream {dlid}: already claimed by another runner or the daemon "
                            f"(nothing ran twice); L opens {log}", title="run", severity="warning")
            else:
                self.notify(f"stream {dlid} ended with exit {code}: "
                            f"{ops.last_line(log) or 'no output'}; L opens {log}", title="run",
                            severity="error", timeout=15)
        self.wake.set()

    # -------------------------------------------------------------------- polling

    @work(thread=True, group="poll", exclusive=True, exit_on_error=False)
    def _poll_loop(self) -> None:
        worker = get_current_worker()
        probe = ops.ChangeProbe(self.ws)
        self.rows_reader = ops.DownlinkRows(self.ws)
        shown_dlid: str | None = object()  # type: ignore[assignment]
        shown_events: dict[str, tuple[float, HitSummary | str]] = {}
        self.last_locks = 0.0
        try:
            while not worker.is_cancelled:
                try:
                    shown_dlid = self._poll_once(probe, shown_dlid, shown_events)
                except Exception as err:  # noqa: BLE001 - keep polling; tell the operator
                    self.post_message(ActionDone(f"refresh failed: {err!r}", "error"))
                    shown_dlid = object()  # type: ignore[assignment]
                    probe.forget()  # read everything again next round
                self.wake.wait(self.poll_s)
                self.wake.clear()
        finally:
            probe.close()

    def _poll_once(self, probe: ops.ChangeProbe, shown_dlid: str | None,
                   shown_events: dict[str, tuple[float, HitSummary | str]]) -> str | None:
        """One round: read what changed, post it; returns the downlink whose stream was read."""
        t0 = time.perf_counter()
        changed = probe.poll()
        dlid = self.want_dlid
        msg = Refreshed(dlid=dlid)
        if changed & {"db", "incoming"}:
            msg.rows = self.rows_reader.read(probe.db)
        if "db" in changed or dlid != shown_dlid:
            msg.stream_read = True
            msg.stream = _stream_view(probe, dlid)
            msg.typical = ops.typical_durations(probe.db)
            shown_dlid = dlid
        now = time.monotonic()
        if "locks" in changed or now - self.last_locks > LOCK_RECHECK_S:
            msg.locks = locks.list_locks(self.ws.lock)
            self.last_locks = now
        if "events" in changed:
            msg.events = _summaries(ops.list_events(self.ws, 10), shown_events)
        msg.read_s = time.perf_counter() - t0
        if (msg.rows is not None or msg.stream_read or msg.events is not None
                or msg.locks is not None):
            self.post_message(msg)
        return shown_dlid

    def on_refreshed(self, msg: Refreshed) -> None:
        if not self.live:
            return
        t0 = time.perf_counter()
        with self.batch_update():
            if msg.rows is not None or msg.events is not None:
                self.stage_dirty = True
            if msg.rows is not None:
                table = self.q(DownlinksTable)
                table.apply(msg.rows)
                counts: dict[str, int] = {}
                for r in msg.rows.values():
                    counts[r.state] = counts.get(r.state, 0) + 1
                table.border_title = "Downlinks " + " ".join(
                    f"{k} {v}" for k, v in sorted(counts.items()))
                if self.want_dlid is None and table.selected is not None:
                    self.want_dlid = table.selected
                    self.wake.set()
            if msg.stream_read and msg.dlid == self.want_dlid:
                self.q(StreamTree).show(msg.dlid, msg.stream, msg.typical,
                                        self._without_stream(msg.dlid))
            if msg.locks is not None:
                self.q(LocksTable).apply(msg.locks)
            if msg.events is not None:
                self.q(HitsPanel).apply(msg.events)
        self.refreshes += 1
        self.last_refresh_s = msg.read_s + time.perf_counter() - t0
        if msg.rows is not None:  # the downlinks part: (read in the worker, apply here)
            self.rows_timing = (msg.read_s, time.perf_counter() - t0)

    @work(thread=True, group="stage", exclusive=True, exit_on_error=False)
    def _scan_stage(self) -> None:
        try:
            rep = stage_report(self.ws, workers=1)  # no fork from a threaded app
        except OSError as err:
            self.post_message(ActionDone(f"usage scan failed: {err}", "error"))
            rep = None
        self.post_message(StageRead(rep))

    def on_stage_read(self, msg: StageRead) -> None:
        if not self.live:
            return
        if msg.report is None:
            self.stage_busy = False
            self.stage_last = time.monotonic()
            return
        self.q(StagingPanel).show(msg.report)
        alert = pressure(msg.report)
        banner = self.q("#alert", Static)
        banner.update(alert or "")
        banner.set_class(alert is not None, "show")
        self.stage_busy = False
        self.stage_last = time.monotonic()

    def _maybe_scan(self) -> None:
        """Rescan usage after changes (files come and go with db and directory changes), or
        every ``stage_every_s``; never two scans at once (a scan is re-armed after it ends)."""
        if self.stage_busy or not self.live:
            return
        if self.stage_dirty or time.monotonic() - self.stage_last >= self.stage_every_s:
            self.stage_dirty = False
            self.stage_busy = True
            self._scan_stage()

    # -------------------------------------------------------------------- selection

    @on(DataTable.RowHighlighted, "#downlinks")
    def _downlink_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key is not None else None
        if key != self.want_dlid:
            self.want_dlid = key
            self.wake.set()

    @on(DataTable.RowSelected, "#downlinks")
    def _downlink_selected(self) -> None:
        """Enter on a downlink: go to its stream tree (keyboard path: table -> tree -> log)."""
        self.q(StreamTree).focus()

    @on(Tree.NodeSelected, "#stream")
    def _instance_selected(self, event: Tree.NodeSelected) -> None:
        """Enter on a process instance opens its log."""
        pi = event.node.data
        if pi is not None and pi.log_path:
            self.open_log(pi.log_path)

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.q(DownlinksTable).set_filter(event.value)
        event.input.set_class(bool(event.value), "active")

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.q(DownlinksTable).focus()

    def on_action_done(self, msg: ActionDone) -> None:
        if not self.live:
            return
        self.notify(msg.text, severity=msg.severity)  # type: ignore[arg-type]
        self.wake.set()

    # -------------------------------------------------------------------- read-only

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (self.read_only and action in WRITE_ACTIONS)

    def _writable(self) -> bool:
        if self.read_only:
            self.notify("read-only console: actions are disabled", severity="warning")
            return False
        return True

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for b in self.BINDINGS:
            action = b.action.split("(")[0]
            if action == "quit" or (self.read_only and action in WRITE_ACTIONS):
                continue
            yield SystemCommand(f"{b.description} [{b.key}]",
                                self.COMMAND_HELP.get(action, b.description),
                                partial(self.run_action, b.action))

    # -------------------------------------------------------------------- view actions

    def action_help(self) -> None:
        rows = []
        for b in self.BINDINGS:
            action = b.action.split("(")[0]
            desc = self.COMMAND_HELP.get(action, b.description)
            if self.read_only and action in WRITE_ACTIONS:
                desc += " (disabled: read-only)"
            rows.append((self.get_key_display(b), desc))
        rows.append(("enter", "On a downlink: go to its stream; on an instance: open its log"))
        rows.append(("tab", "Next panel (1-4 switch the bottom panel from any panel)"))
        rows.append(("^p", "Command palette: every action by name"))
        self.push_screen(HelpScreen(rows, PANELS, self.read_only, GLOSSARY))

    def action_filter(self) -> None:
        self.q("#filter", Input).focus()

    def action_sort(self) -> None:
        self.notify(self.q(DownlinksTable).cycle_sort(), timeout=2)

    def action_reverse(self) -> None:
        self.notify(self.q(DownlinksTable).cycle_sort(reverse=True), timeout=2)

    def action_tab(self, tab: str) -> None:
        """Show a bottom panel. When the focus is inside the panel being hidden, it moves to
        the new one first: TabbedContent otherwise re-activates the pane holding the focus,
        and the key seemed to do nothing."""
        tabs = self.q(TabbedContent)
        focused = self.focused
        inside = focused is not None and tabs in focused.ancestors
        if inside:
            self.set_focus(None)
        tabs.active = tab
        if inside:
            pane = tabs.get_pane(tab)
            target = next((w for w in pane.query("*") if w.focusable), None)
            self.call_after_refresh(self.set_focus, target or self.q(DownlinksTable))

    # -------------------------------------------------------------------- pipeline actions

    def _dlid(self) -> str | None:
        dlid = self.q(DownlinksTable).selected
        if dlid is None:
            self.notify("select a downlink first", severity="warning")
        return dlid

    def action_run_stream(self) -> None:
        if self._writable() and (dlid := self._dlid()):
            why = self._cannot_run(dlid)
            if why:
                self.notify(why, title=f"run {dlid}", severity="warning", timeout=8)
                return
            self._start_runner(dlid, "run")

    def _without_stream(self, dlid: str | None) -> str:
        """The stream tree's line for a downlink without a stream, when `r` cannot help."""
        row = self.q(DownlinksTable).model.get(dlid) if dlid else None
        if row is None or row.state != "rejected":
            return ""
        return (f"{dlid}: REJECTED, nothing to run\nreason: {row.note}\n"
                f"files kept in {row.kept or self.ws.rejected}\n"
                "fix the delivery and deliver it again (r cannot help)")

    def _cannot_run(self, dlid: str) -> str | None:
        """Why `skydeck-engine run` would refuse this row (the CLI's own checks), or None."""
        row = self.q(DownlinksTable).model.get(dlid)
        if row is None:
            return None
        if row.state == "rejected":
            return (f"nothing to run: the delivery was rejected: {row.note}. Its files are kept "
                    f"in {row.kept or self.ws.rejected}; fix them and deliver it again")
        if row.stream == "FAILED":
            return "its stream FAILED: b rolls back what failed (then it runs again)"
        if row.stream in ("SUCCESS", "CANCELED"):
            return (f"its stream already ended {row.stream}: nothing to run; p re-runs a process "
                    "or a process group from the stream tree")
        return None

    def _start_runner(self, dlid: str, why: str) -> None:
        if dlid in self.runners and self.runners[dlid][0].poll() is None:
            self.notify(f"a runner for {dlid} started here is still running", severity="warning")
            return
        proc, log = ops.start_runner(self.ws, dlid)
        self.runners[dlid] = (proc, log)
        self.notify(f"{why}: runner pid {proc.pid} for {dlid}", title="run")

    def action_rollback_stream(self) -> None:
        if not self._writable() or not (dlid := self._dlid()):
            return
        self._plan(dlid, None, f"Roll back stream {dlid}?")

    def action_rerun_process(self) -> None:
        if not self._writable():
            return
        tree = self.q(StreamTree)
        target = tree.selected_target
        if target is None or tree.dlid is None:
            self.notify("select a process instance, or a group such as makeEvt, in the stream "
                        "tree first", severity="warning")
            return
        what = f"{target} (every instance)" if ":" not in target and target in tree.groups \
            else target
        self._plan(tree.dlid, [target], f"Re-run {what} of {tree.dlid}?")

    @work(thread=True, group="action", exit_on_error=False)
    def _plan(self, dlid: str, targets: list[str] | None, question: str) -> None:
        """Check the rollback first (off the UI thread): nothing is asked that cannot work."""
        try:
            plan = ops.rollback_plan(self.ws, dlid, targets)
        except Exception as err:  # noqa: BLE001 - a failed check is reported, never silent
            self.post_message(ActionDone(f"rollback {dlid}: could not check it: {err!r}",
                                         "error"))
            return
        self.post_message(Planned(dlid, targets, question, plan))

    def on_planned(self, msg: Planned) -> None:
        if not self.live:
            return
        what = " ".join(msg.targets) if msg.targets else "failed instances"
        if msg.plan.blocker:
            hint = "" if msg.targets else \
                "; to re-run something else, select it (or its group) in the stream tree, press p"
            self.notify(f"not rolled back ({what}): {msg.plan.blocker}{hint}",
                        severity="warning", title=f"rollback {msg.dlid}", timeout=10)
            return

        def done(yes: bool | None) -> None:
            if yes:
                self._rollback(msg.dlid, msg.targets)

        self.push_screen(ConfirmScreen(
            msg.question,
            f"New executions of: {', '.join(msg.plan.retired)}; then a runner starts "
            "(or the daemon picks it up)."), done)

    @work(thread=True, group="action", exit_on_error=False)
    def _rollback(self, dlid: str, targets: list[str] | None) -> None:
        try:
            res = rollback(self.ws, dlid, targets)
        except SkydeckError as err:
            self.post_message(ActionDone(f"rollback {dlid}: {err.message}", "error"))
            return
        self.post_message(ActionDone(f"rolled back {', '.join(res.retired) or 'nothing'}"))
        self.call_from_thread(self._start_runner, dlid, "rollback")

    def action_unlock(self) -> None:
        if not self._writable():
            return
        info = self.q(LocksTable).selected
        if info is None:
            self.action_tab("locks")
            self.notify("select a lock in the Locks tab first", severity="warning")
            return
        if info.stale:
            q = f"Remove stale lock {info.name}?"
            detail = f"{info.kind}, owner {info.owner}: {info.reason}"
        else:
            q = f"Lock {info.name} is NOT provably stale. Remove it anyway?"
            detail = (f"{info.reason}. Removing a live lock can let two jobs write the same "
                      "files: check that no instance still runs.")

        def done(yes: bool | None) -> None:
            if yes:
                self._unlock(info.name, not info.stale)

        self.push_screen(ConfirmScreen(q, detail, danger=not info.stale), done)

    @work(thread=True, group="action", exit_on_error=False)
    def _unlock(self, name: str, force: bool) -> None:
        try:
            info = locks.unlock(self.ws.lock, name, force=force)
        except SkydeckError as err:
            self.post_message(ActionDone(f"unlock {name}: {err.message}", "error"))
            return
        self.post_message(ActionDone(f"removed {info.name} (owner {info.owner}): {info.reason}"))

    def action_halts(self) -> None:
        if not self._writable():
            return
        dlid = self.q(DownlinksTable).selected
        self.push_screen(HaltScreen(HALT_FLAGS, dlid, ops.halts(self.ws, dlid)),
                         self._toggle_halt)

    @work(thread=True, group="action", exit_on_error=False)
    def _toggle_halt(self, choice: tuple[str, str | None] | None) -> None:
        if choice is None:
            return
        flag, dlid = choice
        scope = dlid or "global"
        try:
            if scope in ops.halts(self.ws, dlid).get(flag, []):
                ops.clear_halt(self.ws, flag, dlid)
                self.post_message(ActionDone(f"cleared {flag} ({scope})"))
            else:
                ops.set_halt(self.ws, flag, dlid)
                self.post_message(ActionDone(f"set {flag} ({scope}): its processes are held"))
        except (SkydeckError, OSError) as err:
            self.post_message(ActionDone(f"halt flag {flag}: {err}", "error"))

    # -------------------------------------------------------------------- logs

    def action_open_log(self) -> None:
        pi = self.q(StreamTree).selected
        if pi is None or not pi.log_path:
            self.notify("select a process instance that has a log", severity="warning")
            return
        self.open_log(pi.log_path)

    def action_pick_log(self) -> None:
        """Any log besides an instance's: the daemon's, console runs, builds, propagations."""
        files = ops.log_files(self.ws)
        if not files:
            self.notify(f"no logs in {self.ws.logs} yet (the daemon writes "
                        f"{self.ws.logs / ops.DAEMON_LOG})", severity="warning")
            return
        self.push_screen(LogPickerScreen(files),
                         lambda path: path and self.open_log(path))

    def open_log(self, path: str) -> None:
        self.q(LogPanel).start(path)
        self.action_tab("log")
        self._follow(path)

    @work(thread=True, group="log", exclusive=True, exit_on_error=False)
    def _follow(self, path: str) -> None:
        worker = get_current_worker()
        pos = 0
        partial_line = ""
        with contextlib.suppress(OSError):
            size = Path(path).stat().st_size
            pos = max(0, size - LOG_TAIL_BYTES)
        while not worker.is_cancelled:
            try:
                with open(path, "rb") as fh:
                    fh.seek(pos)
                    data = fh.read(LOG_TAIL_BYTES)
                    pos = fh.tell()
            except OSError:
                data = b""
            if data:
                text = partial_line + data.decode("utf-8", "replace")
                lines = text.split("\n")
                partial_line = lines.pop()
                if lines:
                    self.post_message(LogLines(path, lines))
            else:
                time.sleep(self.poll_s)

    def on_log_lines(self, msg: LogLines) -> None:
        if not self.live:
            return
        panel = self.q(LogPanel)
        if panel.path == msg.path:
            panel.add(msg.lines)

    # -------------------------------------------------------------------- launches

    def action_launch_build(self) -> None:
        if not self._writable():
            return
        dlid = self.q(DownlinksTable).selected or ""
        src = str(self.ws.incoming_level0 / dlid) if dlid else ""
        out = str(self.ws.root / "builds" / f"{dlid or 'build'}.h5")

        def done(values: list[str] | None) -> None:
            if values:
                inputs = values[0].split()
                with contextlib.suppress(OSError):  # the build reports a missing directory
                    Path(values[1]).parent.mkdir(parents=True, exist_ok=True)
                args = ["build", *inputs, "-o", values[1]]
                if values[2].strip():
                    args += ["--select", values[2].strip()]
                self._launch(f"build {Path(values[1]).name}", args)

        self.push_screen(FormScreen("Build events from files", [
            ("inputs", "input files or directories (space separated)", src),
            ("output", "output HDF5 file", out),
            ("select", "selection (optional, e.g. color == 'red')", ""),
        ]), done)

    def action_launch_propagate(self) -> None:
        if not self._writable():
            return
        scene = ASSETS / "scenes" / "tboolean-box-detect.toml"
        tag = time.strftime("console-%Y%m%dT%H%M%S")

        def done(values: list[str] | None) -> None:
            if values:
                scene_p = Path(values[0])
                out = self.ws.events / scene_p.stem / values[2]
                self._launch(f"propagate {scene_p.stem}",
                             ["propagate", str(scene_p), "-o", str(out), "--photons", values[1]])

        self.push_screen(FormScreen("Propagate photons through a scene", [
            ("scene", "scene TOML", str(scene)),
            ("photons", "photons", "200000"),
            ("tag", "event name (events/<scene>/<name>)", tag),
        ]), done)

    def _launch(self, name: str, args: list[str]) -> None:
        proc, log = ops.start_job(self.ws, args[0], args)
        job = f"{name} (pid {proc.pid})"
        self.jobs[job] = proc  # type: ignore[assignment]
        box = self.q("#jobs", Vertical)
        row = Horizontal(Label(job, classes="job-name"), ProgressBar(show_eta=True),
                         classes="job", id=f"job-{proc.pid}")
        box.mount(row)
        self._watch_job(job, proc, str(log))

    @work(thread=True, group="jobs", exit_on_error=False)
    def _watch_job(self, job: str, proc: subprocess.Popen[str], log: str) -> None:
        import json

        assert proc.stdout is not None
        last: tuple[int, int | None, str] = (0, None, "")
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and "progress" in ev:
                last = (int(ev["progress"]), ev.get("total"), str(ev.get("what", "")))
                self.post_message(JobProgress(job, *last))
        code = proc.wait()
        self.post_message(JobProgress(job, last[0], last[1], last[2], exit=code, log=log))

    def on_job_progress(self, msg: JobProgress) -> None:
        if not self.live:
            return
        proc = self.jobs.get(msg.job)
        if proc is None:
            return
        with contextlib.suppress(Exception):
            row = self.q(f"#job-{proc.pid}", Horizontal)
            bar = row.query_one(ProgressBar)
            bar.update(total=msg.total, progress=msg.done)
            if msg.exit is not None:
                row.remove()
        if msg.exit is not None:
            del self.jobs[msg.job]
            if msg.exit == 0:
                self.notify(f"{msg.job} done", title="job")
            else:
                self.notify(f"{msg.job} failed (exit {msg.exit}): "
                            f"{ops.last_line(msg.log) or 'no output'}; L opens {msg.log}",
                            title="job", severity="error", timeout=15)
            self.wake.set()

    # -------------------------------------------------------------------- hits

    def action_mark_a(self) -> None:
        path = self.q(HitsPanel).selected
        if path is None:
            self.notify("select a propagation event in the Hits tab", severity="warning")
            return
        self.q(HitsPanel).mark_a = path
        self.notify(f"A = {path}; select another event and press v", timeout=3)

    def action_compare(self) -> None:
        panel = self.q(HitsPanel)
        b = panel.selected
        if panel.mark_a is None or b is None:
            self.notify("mark an event with a, select another, then press v", severity="warning")
            return
        self._compare(panel.mark_a, b)

    @work(thread=True, group="hits", exclusive=True, exit_on_error=False)
    def _compare(self, a: str, b: str) -> None:
        from engine.propagate.hits import compare

        try:
            self.post_message(Compared(compare(a, b)))
        except SkydeckError as err:
            self.post_message(ActionDone(f"compare: {err}", "error"))

    def on_compared(self, msg: Compared) -> None:
        if not self.live:
            return
        self.action_tab("hits")
        self.q(HitsPanel).show_comparison(msg.comparison)


def _stream_view(probe: ops.ChangeProbe, dlid: str | None) -> StreamView | None:
    if dlid is None:
        return None
    st = probe.db.latest_stream(dlid)
    if st is None:
        return None
    return StreamView(st, probe.db.instances(st.id))


def _summaries(events: list[EventDir],
               cache: dict[str, tuple[float, HitSummary | str]]) -> dict[str, HitSummary | str]:
    """The engine's hit summary of each event, recomputed only when its meta.json changed."""
    from engine.propagate.hits import summarize  # numpy: imported on first use, not at start

    out: dict[str, HitSummary | str] = {}
    for e in events:
        hit = cache.get(e.path)
        if hit is None or hit[0] != e.mtime:
            try:
                s: HitSummary | str = summarize(e.path)
            except SkydeckError as err:
                s = err.message
            cache[e.path] = (e.mtime, s)
        out[e.path] = cache[e.path][1]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skydeck", description="skydeck operations console")
    p.add_argument("-w", "--workspace", default=None,
                   help="workspace root (default: $SKYDECK_WORKSPACE, else ./skydeck-workspace)")
    p.add_argument("--read-only", action="store_true", help="watch only: every action disabled")
    p.add_argument("--demo", action="store_true",
                   help="create the workspace if needed and feed it mock downlinks (make demo)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    feeder: Any = None
    try:
        if args.demo:
            from console.demo import Feeder

            feeder = Feeder.start(args.workspace)
            ws = feeder.ws
        else:
            ws = Workspace.open(args.workspace)
    except SkydeckError as err:
        print(f"skydeck: {err}", file=sys.stderr)
        return err.exit_code
    try:
        SkydeckApp(ws, read_only=args.read_only).run()
    finally:
        if feeder is not None:
            feeder.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
