"""The console's main screen: downlinks and stream on top, tabbed panels below, job bars.

Why this module exists: the screen owns what the operator looks at and acts on (the
selection, the panels, the actions on them); the App only holds what is global (bindings,
the command palette, the read-only gate). Every worker here is thin: one ``engine.api``
call, one message (console.messages) back to the UI thread:
- the poll worker owns an ``engine.api.Monitor`` (its own SQLite connection) and posts one
  ``Refreshed`` per round carrying the ``Snapshot`` of what changed; while the state
  database cannot be reached (a PostgreSQL restart) it posts ``StateReach`` once, a red
  banner says since when, the panels keep what they showed, and polling goes on: when
  the server answers again the banner goes, everything is read again, and a toast says
  how long it was away (no restart of the console);
- the usage scan is its own worker, due by ``engine.api.UsageCadence`` (no overlap);
- every action (run, rollback, unlock, halt, launch) runs in a thread worker; streams run
  in ``skydeck-engine run`` processes that claim the stream in the state database, so a
  daemon on the same workspace never runs a process twice;
- widgets update in place (diffed cells, relabelled tree nodes, appended log lines).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import (
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
from textual.worker import Worker, WorkerState, get_current_worker

from console.format import duration, printable
from console.messages import (
    ActionDone,
    BulkDone,
    BulkPlanned,
    Compared,
    EventsPage,
    HealthRead,
    HistoryRead,
    JobProgress,
    JobRecord,
    LogLines,
    Planned,
    Refreshed,
    StageRead,
    StateReach,
)
from console.screens.modals import (
    MARKED,
    ConfirmScreen,
    FormScreen,
    HaltScreen,
    JobsScreen,
    LogMatchesScreen,
    LogPickerScreen,
)
from console.screens.timeline import TimelineScreen
from console.widgets.downlinks import STATES, DownlinksTable, FilterError
from console.widgets.hits import PAGE, HitsPanel
from console.widgets.locks import LocksTable
from console.widgets.logview import LogPanel
from console.widgets.staging import StagingPanel, pressure
from console.widgets.stream import StreamTree, when
from console.widgets.vtable import VirtualTable
from engine import api

if TYPE_CHECKING:
    from engine.api import Job, Workspace

HEALTH_S = 5.0  # the global health banner is read this often
SELECT_SETTLE_S = 0.06  # a new selection's stream is read this long after the cursor stops
NO_DAEMON = "no daemon running here (skydeck-engine watch): new deliveries wait; r runs one"
STAGE_MIN_S = 1.0  # usage rescanned within a second of a change that moves bytes
LOG_TAIL_BYTES = 1 << 20
DEFAULT_SCENE = "tboolean-box-detect"  # the propagate form's default scene


class FilterInput(Input):
    BINDINGS: ClassVar = [Binding("escape", "clear_filter", "Clear filter", id="filter.clear")]

    def action_clear_filter(self) -> None:
        self.value = ""
        self.screen.query_one(DownlinksTable).focus()


FILTER_HELP = "state:failed dlid:2612* note:md5 text; ! inverts; esc clears"


def check_build(values: dict[str, str]) -> tuple[str | None, str | None]:
    """The build form before launching: (an error, or a question about overwriting)."""
    inputs = values["inputs"].split()
    if not inputs:
        return "name at least one input file or directory", None
    missing = [i for i in inputs if not Path(i).exists()]
    if missing:
        return f"no such input: {', '.join(missing)}", None
    out = Path(values["output"].strip() or ".")
    if not values["output"].strip() or out.is_dir():
        return "the output must be a file name (an HDF5 file)", None
    if any(Path(i).resolve() == out.resolve() for i in inputs):
        return f"the output {out} is one of the inputs", None
    if out.exists():
        return None, f"{out} exists ({human_size(out)}). Overwrite it?"
    return None, None


def check_propagate(events: Path, values: dict[str, str]) -> tuple[str | None, str | None]:
    """The propagate form before launching: the scene exists, photons are a positive
    number, the event name is one path component; an existing event is asked about."""
    scene = Path(values["scene"].strip())
    if not scene.is_file():
        return f"no such scene file: {scene}", None
    try:
        photons = int(values["photons"].replace("_", "").replace(",", ""))
    except ValueError:
        return f"photons must be a whole number, not {values['photons']!r}", None
    if photons <= 0:
        return "photons must be more than 0", None
    tag = values["tag"].strip()
    if not tag or "/" in tag or tag in (".", ".."):
        return "the event name must be one name (no /)", None
    out = events / scene.stem / tag
    if out.exists():
        return None, f"the event {out} exists ({human_size(out)}). Overwrite it?"
    return None, None


def human_size(path: Path) -> str:
    """A file's size, or the total of a directory's files."""
    try:
        if path.is_dir():
            total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        else:
            total = path.stat().st_size
    except OSError:
        return "size unknown"
    return api.human_bytes(total)


def job_result(job: str, done: int, unit: str, elapsed: float, output: str) -> str:
    """What a finished job made: how many, how fast, where, how big."""
    rate = done / elapsed if elapsed > 0 else 0.0
    return (
        f"{job}: {done:,} {unit} in {elapsed:.1f} s ({rate:,.0f} {unit}/s); "
        f"output {output} ({human_size(Path(output))})"
    )


class MainScreen(Screen[None]):
    """The operator's view of one workspace; its actions are bound as ``screen.<action>``."""

    # the first focus goes straight to the downlinks: Textual's default ("*") focused the
    # filter input first (the first focusable widget), which showed it and hid every key of
    # the footer (an input consumes them) until on_mount moved the focus, a visible flash
    AUTO_FOCUS = "#downlinks"
    BINDINGS: ClassVar = [
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("0", "state_filter('')", "All states", show=False),
        *(
            Binding(str(5 + i), f"state_filter('{state}')", state.title(), show=False)
            for i, state in enumerate(STATES)
        ),
    ]

    def __init__(
        self, ws: Workspace, clock: Callable[[], float], poll_s: float, stage_every_s: float
    ) -> None:
        super().__init__()
        self.ws = ws
        self.clock = clock
        self.poll_s = poll_s
        self.stage = api.UsageCadence(stage_every_s)
        self.stage.busy = True  # the first scan starts with the poll loop
        self.want_dlid: str | None = None
        self.wake = threading.Event()
        self.runners: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        self.jobs: dict[str, Job] = {}
        self.refreshes = 0
        self.last_refresh_s = 0.0
        self.state_down: StateReach | None = None  # the state database is unreachable
        self.rows_timing = (0.0, 0.0)
        self.job_outputs: dict[str, tuple[str, str, float]] = {}  # title -> output, unit, t0
        self.job_records: list[JobRecord] = []  # every job this console launched (`j`)
        self.latest_events: dict[str, Any] = {}  # the poll's newest events (the Hits page 0)
        self._wake_timer: Timer | None = None  # the pending read of a new selection
        self.acks: dict[str, tuple[str, ...]] = {}  # dlid -> its stream's acknowledgements
        self.held: dict[str, str | None] = {}  # dlid -> what holds it back, if anything

    def compose(self) -> ComposeResult:
        yield Header(show_clock=False)
        yield Static("", id="state-alert", markup=False)  # the error is data
        yield Static("", id="health", markup=False)  # daemon, halts, pause, stuck streams
        yield Static("", id="alert")
        with Horizontal(id="top"):
            with Vertical(id="downlinks-box"):
                yield FilterInput(placeholder=FILTER_HELP, id="filter")
                yield DownlinksTable(clock=self.clock, id="downlinks")
                yield Static("", id="row-detail", markup=False)  # the selected row, in full
            yield StreamTree(clock=self.clock, id="stream")
        with TabbedContent(id="tabs", initial="locks"):
            with TabPane("Locks [1]", id="locks"):
                yield LocksTable(clock=self.clock, id="locks-table")
            with TabPane("Staging [2]", id="staging"):
                yield StagingPanel(id="staging-panel")
            with TabPane("Hits [3]", id="hits"):
                yield HitsPanel(id="hits-panel")
            with TabPane("Log [4]", id="log"):
                yield Input(
                    placeholder="search the log (regex); enter: next match, n/N next/previous",
                    id="log-search",
                )
                yield LogPanel(id="log-panel")
        yield Vertical(id="jobs")
        yield Footer()

    def on_mount(self) -> None:
        """Focus the downlinks, start the poll loop, the first usage scan and the timers."""
        self.query_one(DownlinksTable).focus()
        self._poll_loop()
        self._scan_stage()
        self.set_interval(STAGE_MIN_S, self._maybe_scan)
        self.set_interval(1.0, self._tick)
        self.set_interval(HEALTH_S, self._check_health)
        self.call_later(self._check_health)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Any = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Toasts go through the App (it keeps them; markup off: paths are data)."""
        self.app.notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.app.check_action(action, parameters)

    def _writable(self) -> bool:
        return self.app.writable()  # type: ignore[attr-defined, no-any-return]

    @property
    def live(self) -> bool:
        """False while shutting down: late messages from workers are dropped then."""
        return self.app.is_running and self.is_attached and self.is_running

    def _tick(self) -> None:
        if not self.live:
            return
        with self.app.batch_update():
            self.query_one(DownlinksTable).tick()
            self.query_one(StreamTree).tick()
            self.query_one(LocksTable).tick()
            self._show_state()
        for dlid, (proc, log) in list(self.runners.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.runners[dlid]
            if code == 0:
                self.notify(f"stream {dlid} finished", title="run")
            elif code == api.EXIT_BUSY:  # not a problem: the daemon (or a runner) has it
                self.notify(
                    f"stream {dlid}: already claimed by another runner or the daemon "
                    f"(nothing ran twice); L opens {log}",
                    title="run",
                    severity="information",
                )
            else:
                self.notify(
                    f"stream {dlid} ended with exit {code}: "
                    f"{api.last_line(log) or 'no output'}; L opens {log}",
                    title="run",
                    severity="error",
                    timeout=15,
                )
        self.wake.set()

    # -------------------------------------------------------------------- polling

    @work(thread=True, group="poll", exclusive=True, exit_on_error=False)
    def _poll_loop(self) -> None:
        worker = get_current_worker()
        down: float | None = None  # since when the state database is unreachable
        with api.Monitor(self.ws) as monitor:
            while not worker.is_cancelled:
                try:
                    snapshot = monitor.poll(self.want_dlid)
                except api.StateUnavailable as err:  # a banner, once; polling goes on
                    if down is None:
                        down = err.since or monitor.outage.since or time.time()
                        self.post_message(StateReach(down, monitor.outage.error or err.message))
                except Exception as err:  # noqa: BLE001 - keep polling; tell the operator
                    self.post_message(ActionDone(f"refresh failed: {err!r}", "error"))
                else:
                    if down is not None:
                        self.post_message(StateReach(None, down_s=time.time() - down))
                        down = None
                    if snapshot.changed:
                        self.post_message(Refreshed(snapshot))
                self.wake.wait(self.poll_s)
                self.wake.clear()

    def on_state_reach(self, msg: StateReach) -> None:
        if not self.live:
            return
        if msg.since is None:
            self.state_down = None
            self.notify(
                f"state database reachable again after {msg.down_s:.0f} s; everything read again",
                title="state",
            )
        else:
            self.state_down = msg
        self._show_state()

    def _show_state(self) -> None:
        """The banner while the state database is unreachable (its age moves each second)."""
        banner = self.query_one("#state-alert", Static)
        down = self.state_down
        if down is None or down.since is None:
            banner.set_class(False, "show")
            return
        age = max(0.0, time.time() - down.since)
        when = time.strftime("%H:%M:%S", time.localtime(down.since))
        banner.update(
            f"state database unreachable since {when} ({age:.0f} s): "
            f"{down.error}; showing what was read before, retrying"
        )
        banner.set_class(True, "show")

    def on_refreshed(self, msg: Refreshed) -> None:
        if not self.live:
            return
        snap = msg.snapshot
        t0 = time.perf_counter()
        with self.app.batch_update():
            self.stage.saw(snap)
            if snap.rows is not None:
                table = self.query_one(DownlinksTable)
                table.apply(snap.rows)
                self._show_detail()
            if snap.stream_read and snap.dlid == self.want_dlid:
                self.query_one(StreamTree).show(
                    snap.dlid,
                    snap.stream,
                    snap.typical,
                    self._without_stream(snap.dlid),
                    snap.groups,
                )
                if snap.dlid is not None and snap.stream is not None:
                    self._read_history(snap.dlid)
            if snap.locks is not None:
                self.query_one(LocksTable).apply(snap.locks)
            if snap.events is not None:
                self.latest_events = snap.events
                if self.query_one(HitsPanel).page == 0:  # the newest page follows them
                    self.query_one(HitsPanel).apply(snap.events)
        self.refreshes += 1
        self.last_refresh_s = snap.read_s + time.perf_counter() - t0
        if snap.rows is not None:  # the downlinks part: (read in the worker, apply here)
            self.rows_timing = (snap.read_s, time.perf_counter() - t0)

    @work(thread=True, group="health", exclusive=True, exit_on_error=False)
    def _check_health(self) -> None:
        """The same checks as `skydeck-engine health`; the failed ones make the banner."""
        from engine.api.health import health

        checks = health(self.ws, now=self.clock())
        self.post_message(HealthRead([(c.name, c.detail) for c in checks if not c.ok]))

    def on_health_read(self, msg: HealthRead) -> None:
        if not self.live:
            return
        banner = self.query_one("#health", Static)
        failed = [(n, d) for n, d in msg.failed if n != "state" or self.state_down is None]
        stuck = [d for n, d in failed if n.startswith("stuck:")]
        parts = [
            NO_DAEMON if n == "daemon" and d.startswith("no daemon heartbeat") else d
            for n, d in failed
            if not n.startswith("stuck:")
        ]
        if stuck:
            parts.append(f"{len(stuck)} stuck stream(s): {stuck[0]}")
        banner.update(printable(" | ".join(parts)))
        banner.set_class(bool(parts), "show")
        severe = any(n in ("state", "disk") or n.startswith("stuck:") for n, _ in failed)
        banner.set_class(severe, "severe")

    @work(thread=True, group="history", exclusive=True, exit_on_error=False)
    def _read_history(self, dlid: str, show: bool = False) -> None:
        view = api.stream_history(self.ws, dlid)
        acks: tuple[str, ...] = ()
        if view is not None:
            acks = tuple(
                a.line() for a in api.acknowledgements(self.ws, dlid).get(view.stream.id, [])
            )
        held = api.downlink_note(self.ws, dlid, view.stream if view is not None else None)
        self.post_message(HistoryRead(dlid, view, show, acks, held))

    def on_history_read(self, msg: HistoryRead) -> None:
        if not self.live:
            return
        tree = self.query_one(StreamTree)
        self.acks[msg.dlid] = msg.acks
        self.held[msg.dlid] = msg.held
        if msg.view is not None and tree.dlid == msg.dlid:
            tree.set_history(msg.view.instances)
            self._show_detail()
        if not msg.show:
            return
        if msg.view is None or not msg.view.instances:
            self.notify(f"{msg.dlid} has no stream to draw yet", severity="warning")
            return
        self.app.push_screen(TimelineScreen(msg.view, int(self.app.size.width * 0.95) - 4))

    def action_timeline(self) -> None:
        """The selected downlink's stream as spans per host (queued and run times)."""
        if dlid := self._dlid():
            self._read_history(dlid, show=True)

    @work(thread=True, group="stage", exclusive=True, exit_on_error=False)
    def _scan_stage(self) -> None:
        try:
            rep = api.usage(self.ws, workers=1)  # no fork from a threaded app
        except OSError as err:
            self.post_message(ActionDone(f"usage scan failed: {err}", "error"))
            rep = None
        prune = None
        if rep is not None:
            try:
                prune = api.prune_preview(self.ws)
            except Exception as err:  # the panel then lacks the line; the usage still shows
                self.post_message(ActionDone(f"prune preview failed: {err}", "error"))
        self.post_message(StageRead(rep, prune))

    def on_stage_read(self, msg: StageRead) -> None:
        if not self.live:
            return
        if msg.report is not None:
            self.query_one(StagingPanel).show(msg.report, msg.prune)
            alert = pressure(msg.report)
            banner = self.query_one("#alert", Static)
            banner.update(alert or "")
            banner.set_class(alert is not None, "show")
        self.stage.done()

    def _maybe_scan(self) -> None:
        """Rescan usage when ``UsageCadence`` says so (never two scans at once)."""
        if self.live and self.stage.start():
            self._scan_stage()

    # -------------------------------------------------------------------- selection

    @on(VirtualTable.Highlighted, "#downlinks")
    def _downlink_highlighted(self, event: VirtualTable.Highlighted) -> None:
        """One selection: the highlighted visible row drives the stream tree, the detail
        line, the Log pane and every action (a filter that hides it moved the cursor)."""
        if isinstance(event, VirtualTable.Selected):
            return
        key = event.key
        if key != self.want_dlid:
            self.want_dlid = key
            # the stream is read a moment later: the table's own frame (a filter, a held
            # arrow key) paints first, and rows the cursor only passes are never read
            if self._wake_timer is not None:
                self._wake_timer.stop()
            self._wake_timer = self.set_timer(SELECT_SETTLE_S, self.wake.set)
            if key is None:
                self.query_one(StreamTree).show(
                    None, None, {}, "no downlink selected (the filter hides every row: esc clears)"
                )
            log = self.query_one(LogPanel)
            if log.dlid is not None and log.dlid != key:
                log.drop(
                    f"the selection moved to {key or 'no downlink'}: l follows an instance log"
                )
        self._show_detail()

    @on(VirtualTable.Selected, "#downlinks")
    def _downlink_selected(self) -> None:
        """Enter on a downlink: go to its stream tree (keyboard path: table -> tree -> log)."""
        self.query_one(StreamTree).focus()

    @on(VirtualTable.HeaderClicked, "#downlinks")
    def _header_clicked(self, event: VirtualTable.HeaderClicked) -> None:
        self.notify(self.query_one(DownlinksTable).set_sort(event.column), timeout=2)

    def _show_detail(self) -> None:
        """The selected row's note (the reason of a failure or a rejection) in full."""
        table = self.query_one(DownlinksTable)
        detail = self.query_one("#row-detail", Static)
        tree = self.query_one(StreamTree)
        pi = tree.selected if tree.has_focus else None
        if pi is not None:  # the stream tree has the focus: its instance, note in full
            where = f" on {pi.host}:{pi.pid}" if pi.pid is not None else ""
            text = f"{tree.dlid} {pi.process}{' ' + pi.key if pi.key else ''} {pi.status}"
            text += f" e{pi.execution}{where}" + (f": {pi.note}" if pi.note else "")
            for p in tree._earlier(pi):
                took = duration(p.ended - p.started) if p.started and p.ended else "-"
                text += f"; before: e{p.execution} {p.status} {when(p.started or p.created)}"
                text += f" ({took})" + (f" {p.note}" if p.note else "")
            detail.update(printable(text), layout=False)
            return
        row = table.model.get(table.selected) if table.selected else None
        if row is None:
            detail.update("", layout=False)
            return
        text = f"{row.dlid} {row.state} {row.stream}"
        if row.note:
            text += f": {row.note}"
        elif held := self.held.get(row.dlid):  # a halt flag, another owner's lock
            text += f": {held}"
        if row.kept:
            text += f" (files kept in {row.kept})"
        if acks := self.acks.get(row.dlid):  # the latest acknowledgement of its alarm
            text += f"; {acks[-1]}"
        detail.update(printable(text), layout=False)  # a fixed height: no layout

    @on(Tree.NodeHighlighted, "#stream")
    def _instance_highlighted(self) -> None:
        self._show_detail()

    def on_descendant_focus(self) -> None:
        """The detail line follows the focus (the downlink's row, or the tree's instance)."""
        if self.live:
            self._show_detail()

    @on(Tree.NodeSelected, "#stream")
    def _instance_selected(self, event: Tree.NodeSelected) -> None:
        """Enter on a process instance opens its log."""
        pi = event.node.data
        if pi is not None and pi.log_path:
            self.open_log(pi.log_path, self.query_one(StreamTree).dlid)

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        """A bad filter is an error on the input (the rows stay as they were)."""
        try:
            self.query_one(DownlinksTable).set_filter(event.value)
        except FilterError as err:
            event.input.border_title = printable(str(err))
            event.input.set_class(True, "error")
        else:
            event.input.border_title = ""
            event.input.set_class(False, "error")
        event.input.set_class(bool(event.value), "active")

    def action_clear_filter(self) -> None:
        """Esc from anywhere on the main screen: no filter, the downlinks focused (in the
        log's search: no search, the log focused)."""
        search = self.query_one("#log-search", Input)
        if self.focused is search or (search.value and self.focused is self.query_one(LogPanel)):
            search.value = ""
            self.query_one(LogPanel).focus()
            return
        self.query_one(FilterInput).action_clear_filter()

    def action_state_filter(self, state: str) -> None:
        """0, 5-9: show one state (replacing a state: term of the filter), or all."""
        box = self.query_one(FilterInput)
        words = [w for w in box.value.split() if not w.lstrip("!").startswith("state:")]
        if state:
            words.insert(0, f"state:{state}")
        box.value = " ".join(words)

    @on(Input.Changed, "#log-search")
    def _log_search_changed(self, event: Input.Changed) -> None:
        try:
            self.query_one(LogPanel).set_search(event.value)
        except re.error as err:
            event.input.border_title = printable(f"bad regex: {err}")
            event.input.set_class(True, "error")
        else:
            event.input.border_title = ""
            event.input.set_class(False, "error")
        event.input.set_class(bool(event.value), "active")

    @on(Input.Submitted, "#log-search")
    def _log_search_submitted(self) -> None:
        panel = self.query_one(LogPanel)
        panel.focus()
        panel.action_next_match(1)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.query_one(DownlinksTable).focus()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that raised (an engine call failing in a way its worker did not
        expect) is a red toast with the error line, never a silent stop."""
        if event.state != WorkerState.ERROR or not self.live:
            return
        err = event.worker.error
        line = (str(err).strip().splitlines() or [type(err).__name__])[-1]
        what = event.worker.name.strip("_").replace("_", " ")
        self.notify(f"{what} failed: {type(err).__name__}: {line}", title="error", severity="error")

    def on_action_done(self, msg: ActionDone) -> None:
        if not self.live:
            return
        self.notify(msg.text, severity=msg.severity)
        self.wake.set()

    # -------------------------------------------------------------------- view actions

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_sort(self) -> None:
        self.notify(self.query_one(DownlinksTable).cycle_sort(), timeout=2)

    def action_reverse(self) -> None:
        self.notify(self.query_one(DownlinksTable).cycle_sort(reverse=True), timeout=2)

    def action_tab(self, tab: str) -> None:
        """Show a bottom panel. When the focus is inside the panel being hidden, it moves to
        the new one first: TabbedContent otherwise re-activates the pane holding the focus,
        and the key seemed to do nothing."""
        tabs = self.query_one(TabbedContent)
        focused = self.focused
        inside = focused is not None and tabs in focused.ancestors
        if inside:
            self.set_focus(None)
        tabs.active = tab
        if inside:
            pane = tabs.get_pane(tab)
            target = next((w for w in pane.query("*") if w.focusable), None)
            self.call_after_refresh(self.set_focus, target or self.query_one(DownlinksTable))

    # -------------------------------------------------------------------- pipeline actions

    def _dlid(self) -> str | None:
        dlid = self.query_one(DownlinksTable).selected
        if dlid is None:
            self.notify("select a downlink first", severity="warning")
        return dlid

    def _marked(self) -> list[str]:
        """The marked downlinks (space), in the order shown; hidden ones are unmarked."""
        table = self.query_one(DownlinksTable)
        return [k for k in table.keys if k in table.marked]

    def _bulk_confirm(self, question: str, lines: list[str], go: Callable[[], object]) -> None:
        """One confirmation listing every marked downlink and what will happen to it."""

        def done(yes: bool | None) -> None:
            if yes:
                go()

        self.app.push_screen(ConfirmScreen(question, "", items=lines), done)

    def on_bulk_done(self, msg: BulkDone) -> None:
        if not self.live:
            return
        for dlid in msg.start:
            msg.lines.append(self._start_runner(dlid, "runner", quiet=True))
        self.query_one(DownlinksTable).clear_marks()
        self.notify(
            "\n".join(msg.lines),
            title=msg.title,
            severity="error" if msg.failed else "information",
        )
        self.wake.set()

    def action_run_stream(self) -> None:
        if self._writable() and (marked := self._marked()):
            lines, go = [], []
            for one in marked:
                skip = self._cannot_run(one)
                lines.append(f"{one}: skipped: {skip}" if skip else f"{one}: start a runner")
                if not skip:
                    go.append(one)
            self._bulk_confirm(
                f"Run {len(go)} of {len(marked)} marked streams?",
                lines,
                lambda: self.post_message(BulkDone("run", [], 0, go)),
            )
            return
        if self._writable() and (dlid := self._dlid()):
            why = self._cannot_run(dlid)
            if why:
                self.notify(why, title=f"run {dlid}", severity="warning", timeout=8)
                return
            self._start_runner(dlid, "run")

    def _without_stream(self, dlid: str | None) -> str:
        """The stream tree's line for a downlink without a stream, when `r` cannot help."""
        row = self.query_one(DownlinksTable).model.get(dlid) if dlid else None
        if row is None or row.state != "rejected":
            return ""
        return (
            f"{dlid}: REJECTED, nothing to run\nreason: {row.note}\n"
            f"files kept in {row.kept or self.ws.rejected}\n"
            "fix the delivery and deliver it again (r cannot help)"
        )

    def _cannot_run(self, dlid: str) -> str | None:
        """Why `skydeck-engine run` would refuse this row (the CLI's own checks), or None."""
        row = self.query_one(DownlinksTable).model.get(dlid)
        if row is None:
            return None
        if row.state == "rejected":
            return (
                f"nothing to run: the delivery was rejected: {row.note}. Its files are kept "
                f"in {row.kept or self.ws.rejected}; fix them and deliver it again"
            )
        if row.stream == "FAILED":
            return "its stream FAILED: b rolls back what failed (then it runs again)"
        if row.stream in ("SUCCESS", "CANCELED"):
            return (
                f"its stream already ended {row.stream}: nothing to run; p re-runs a process "
                "or a process group from the stream tree"
            )
        return None

    def _start_runner(self, dlid: str, why: str, quiet: bool = False) -> str:
        """Start ``skydeck-engine run DLID``; returns the result line (and toasts it
        unless ``quiet``: a bulk action gathers the lines into one toast)."""
        if dlid in self.runners and self.runners[dlid][0].poll() is None:
            line, severity = f"{dlid}: a runner started here is still running", "warning"
        else:
            try:
                proc, log = api.start_runner(self.ws, dlid)
            except (api.SkydeckError, OSError) as err:
                line, severity = f"{dlid}: could not start a runner: {err}", "error"
            else:
                self.runners[dlid] = (proc, log)
                line, severity = f"{dlid}: {why}: runner pid {proc.pid}", "information"
        if not quiet:
            self.notify(line, title="run", severity=severity)
        return line

    def action_rollback_stream(self) -> None:
        if self._writable() and (marked := self._marked()):
            self._plan_bulk(marked)
            return
        if not self._writable() or not (dlid := self._dlid()):
            return
        self._plan(dlid, None, f"Roll back stream {dlid}?")

    @work(thread=True, group="action", exit_on_error=False)
    def _plan_bulk(self, dlids: list[str]) -> None:
        plans = []
        for dlid in dlids:
            try:
                plan = api.rollback_plan(self.ws, dlid, None)
            except api.SkydeckError as err:
                plan = api.RollbackPlan((), f"could not check it: {err.message}")
            plans.append((dlid, plan))
        self.post_message(BulkPlanned(plans))

    def on_bulk_planned(self, msg: BulkPlanned) -> None:
        if not self.live:
            return
        lines, go = [], []
        for dlid, plan in msg.plans:
            if plan.blocker:
                lines.append(f"{dlid}: skipped: {plan.blocker}")
            else:
                lines.append(f"{dlid}: new executions of {', '.join(plan.retired)}")
                go.append(dlid)
        if not go:
            self.notify("\n".join(lines), title="roll back: nothing to do", severity="warning")
            return
        self._bulk_confirm(
            f"Roll back {len(go)} of {len(msg.plans)} marked streams, then run them?",
            lines,
            lambda: self._rollback_bulk(go),
        )

    @work(thread=True, group="action", exit_on_error=False)
    def _rollback_bulk(self, dlids: list[str]) -> None:
        lines, failed, start = [], 0, []
        for dlid in dlids:
            try:
                res = api.rollback(self.ws, dlid, None)
            except api.SkydeckError as err:
                lines.append(f"{dlid}: not rolled back: {err.message}")
                failed += 1
                continue
            lines.append(f"{dlid}: rolled back {', '.join(res.retired) or 'nothing'}")
            start.append(dlid)
        self.post_message(BulkDone("roll back", lines, failed, start))

    def action_rerun_process(self) -> None:
        if not self._writable():
            return
        tree = self.query_one(StreamTree)
        target = tree.selected_target
        if target is None or tree.dlid is None:
            group = self.app.example_group  # type: ignore[attr-defined]
            self.notify(
                f"select a process instance, or a group such as {group}, in the stream tree first",
                severity="warning",
            )
            return
        what = (
            f"{target} (every instance)" if ":" not in target and target in tree.groups else target
        )
        self._plan(tree.dlid, [target], f"Re-run {what} of {tree.dlid}?")

    @work(thread=True, group="action", exit_on_error=False)
    def _plan(self, dlid: str, targets: list[str] | None, question: str) -> None:
        """Check the rollback first (off the UI thread): nothing is asked that cannot work."""
        try:
            plan = api.rollback_plan(self.ws, dlid, targets)
        except Exception as err:  # noqa: BLE001 - a failed check is reported, never silent
            self.post_message(ActionDone(f"rollback {dlid}: could not check it: {err!r}", "error"))
            return
        self.post_message(Planned(dlid, targets, question, plan))

    def on_planned(self, msg: Planned) -> None:
        if not self.live:
            return
        what = " ".join(msg.targets) if msg.targets else "failed instances"
        if msg.plan.blocker:
            hint = (
                ""
                if msg.targets
                else "; to re-run something else, select it (or its group) in the stream tree, press p"
            )
            self.notify(
                f"not rolled back ({what}): {msg.plan.blocker}{hint}",
                severity="warning",
                title=f"rollback {msg.dlid}",
                timeout=10,
            )
            return

        def done(yes: bool | None) -> None:
            if yes:
                self._rollback(msg.dlid, msg.targets)

        self.app.push_screen(
            ConfirmScreen(
                msg.question,
                f"New executions of: {', '.join(msg.plan.retired)}; then a runner starts "
                "(or the daemon picks it up).",
            ),
            done,
        )

    @work(thread=True, group="action", exit_on_error=False)
    def _rollback(self, dlid: str, targets: list[str] | None) -> None:
        try:
            res = api.rollback(self.ws, dlid, targets)
        except api.SkydeckError as err:
            self.post_message(ActionDone(f"rollback {dlid}: {err.message}", "error"))
            return
        self.post_message(ActionDone(f"rolled back {', '.join(res.retired) or 'nothing'}"))
        self.app.call_from_thread(self._start_runner, dlid, "rollback")

    def action_unlock(self) -> None:
        if not self._writable():
            return
        if marked := self._marked():
            self._unlock_marked(marked)
            return
        info = self.query_one(LocksTable).selected
        if info is None:
            self.action_tab("locks")
            self.notify("select a lock in the Locks tab first", severity="warning")
            return
        if info.stale:
            q = f"Remove stale lock {info.name}?"
            detail = f"{info.kind}, owner {info.owner}: {info.reason}"
        else:
            q = f"Lock {info.name} is NOT provably stale. Remove it anyway?"
            detail = (
                f"{info.reason}. Removing a live lock can let two jobs write the same "
                "files: check that no instance still runs."
            )

        def done(yes: bool | None) -> None:
            if yes:
                self._unlock(info.name, not info.stale)

        self.app.push_screen(ConfirmScreen(q, detail, danger=not info.stale), done)

    def _unlock_marked(self, marked: list[str]) -> None:
        """The locks of the marked downlinks (their streams'), with each one's verdict."""
        infos = [i for i in self.query_one(LocksTable).infos.values() if i.stream in marked]
        if not infos:
            self.notify(f"no locks held for the {len(marked)} marked downlinks", severity="warning")
            return
        live = [i for i in infos if not i.stale]
        lines = [
            f"{i.name} ({i.stream}): {'STALE' if i.stale else 'NOT provably stale'}: {i.reason}"
            for i in infos
        ]
        question = f"Remove {len(infos)} locks of marked downlinks?"
        if live:
            question += f" {len(live)} are NOT provably stale: check no instance still runs."

        def done(yes: bool | None) -> None:
            if yes:
                self._unlock_bulk([(i.name, not i.stale) for i in infos])

        self.app.push_screen(ConfirmScreen(question, "", danger=bool(live), items=lines), done)

    @work(thread=True, group="action", exit_on_error=False)
    def _unlock_bulk(self, names: list[tuple[str, bool]]) -> None:
        lines, failed = [], 0
        for name, force in names:
            try:
                info = api.unlock(self.ws, name, force=force)
            except api.SkydeckError as err:
                lines.append(f"{name}: not removed: {err.message}")
                failed += 1
            else:
                lines.append(f"{name}: removed (owner {info.owner})")
        self.post_message(BulkDone("unlock", lines, failed, []))

    @work(thread=True, group="action", exit_on_error=False)
    def _unlock(self, name: str, force: bool) -> None:
        try:
            info = api.unlock(self.ws, name, force=force)
        except api.SkydeckError as err:
            self.post_message(ActionDone(f"unlock {name}: {err.message}", "error"))
            return
        self.post_message(ActionDone(f"removed {info.name} (owner {info.owner}): {info.reason}"))

    def action_halts(self) -> None:
        if not self._writable():
            return
        dlid = self.query_one(DownlinksTable).selected
        active = api.halts(self.ws, dlid)
        marked = self._marked()
        if marked:  # a flag is "set" for the marked ones when every one has it
            per = [api.halts(self.ws, one) for one in marked]
            active = {f: [s for s in w if s == "global"] for f, w in active.items()}
            for flag in api.HALT_FLAGS:
                if all(one in p.get(flag, []) for one, p in zip(marked, per, strict=True)):
                    active.setdefault(flag, []).append(MARKED)
        self.app.push_screen(
            HaltScreen(api.HALT_FLAGS, dlid, active, api.HALT_MEANING, marked),
            lambda choice: self._halt_chosen(choice, marked, active),
        )

    def _halt_chosen(
        self,
        choice: tuple[str, str | None] | None,
        marked: list[str] | None = None,
        active: dict[str, list[str]] | None = None,
    ) -> None:
        if choice is None or choice[1] != MARKED or not marked:
            self._toggle_halt(choice)
            return
        flag = choice[0]
        clear = MARKED in (active or {}).get(flag, [])
        verb = "clear" if clear else "set"
        self._bulk_confirm(
            f"{verb.title()} {flag} for {len(marked)} marked downlinks? "
            f"({api.HALT_MEANING.get(flag, '')})",
            [f"{one}: {verb} {flag}" for one in marked],
            lambda: self._halt_bulk(flag, marked, clear),
        )

    @work(thread=True, group="action", exit_on_error=False)
    def _halt_bulk(self, flag: str, marked: list[str], clear: bool) -> None:
        lines, failed = [], 0
        for one in marked:
            try:
                if clear:
                    api.clear_halt(self.ws, flag, one)
                else:
                    api.set_halt(self.ws, flag, one)
            except (api.SkydeckError, OSError) as err:
                lines.append(f"{one}: {flag} not {'cleared' if clear else 'set'}: {err}")
                failed += 1
            else:
                lines.append(f"{one}: {flag} {'cleared' if clear else 'set'}")
        self.post_message(BulkDone("halt", lines, failed, []))

    @work(thread=True, group="action", exit_on_error=False)
    def _toggle_halt(self, choice: tuple[str, str | None] | None) -> None:
        if choice is None:
            return
        flag, dlid = choice
        scope = dlid or "global"
        try:
            if scope in api.halts(self.ws, dlid).get(flag, []):
                api.clear_halt(self.ws, flag, dlid)
                self.post_message(ActionDone(f"cleared {flag} ({scope})"))
            else:
                api.set_halt(self.ws, flag, dlid)
                self.post_message(ActionDone(f"set {flag} ({scope}): its processes are held"))
        except (api.SkydeckError, OSError) as err:
            self.post_message(ActionDone(f"halt flag {flag}: {err}", "error"))

    def action_acknowledge(self) -> None:
        """Acknowledge the selected downlink's alarm (a FAILED or STUCK stream): who (this
        user) and why are recorded as an event; health stops failing for it."""
        if not self._writable():
            return
        dlid = self._dlid()
        if dlid is None:
            return

        def check(values: dict[str, str]) -> tuple[str | None, str | None]:
            return (
                ("say why it needs no further action", None)
                if not values["reason"].strip()
                else (None, None)
            )

        def done(values: dict[str, str] | None) -> None:
            if values is not None:
                self._acknowledge(dlid, values["reason"].strip())

        self.app.push_screen(
            FormScreen(
                f"Acknowledge the alarm of {dlid}'s stream (recorded with your user name)",
                [("reason", "why it needs no further action", "")],
                check,
            ),
            done,
        )

    @work(thread=True, group="action", exit_on_error=False)
    def _acknowledge(self, dlid: str, reason: str) -> None:
        try:
            sid, status = api.acknowledge(self.ws, dlid, reason=reason)
        except (api.SkydeckError, OSError) as err:
            self.post_message(ActionDone(f"acknowledge {dlid}: {err}", "error"))
            return
        self.post_message(ActionDone(f"acknowledged stream {sid} of {dlid} ({status}): {reason}"))
        self._read_history(dlid)

    # -------------------------------------------------------------------- logs

    def action_open_log(self) -> None:
        pi = self.query_one(StreamTree).selected
        if pi is None or not pi.log_path:
            self.notify("select a process instance that has a log", severity="warning")
            return
        self.open_log(pi.log_path, self.query_one(StreamTree).dlid)

    def action_pick_log(self) -> None:
        """Any log besides an instance's: the daemon's, console runs, builds, propagations."""
        files = api.log_files(self.ws)
        if not files:
            self.notify(
                f"no logs in {self.ws.logs} yet (the daemon writes {self.ws.daemon_log})",
                severity="warning",
            )
            return
        self.app.push_screen(
            LogPickerScreen(files), lambda path: self.open_log(path) if path else None
        )

    def action_search_logs(self) -> None:
        """Search across logs: the selected downlink's (its jobs' logs and its daemon
        events), or every log, in a time window (engine.api.search_logs)."""
        dlid = self.query_one(DownlinksTable).selected or ""

        def check(values: dict[str, str]) -> tuple[str | None, str | None]:
            try:
                re.compile(values["pattern"])
                if values["since"].strip():
                    api.parse_when(values["since"].strip())
            except re.error as err:
                return f"bad pattern: {err}", None
            except api.BadInput as err:
                return str(err), None
            if not values["pattern"]:
                return "a pattern to look for", None
            return None, None

        def done(values: dict[str, str] | None) -> None:
            if values is not None:
                self._search_logs(
                    values["pattern"], values["dlid"].strip() or None, values["since"].strip()
                )

        self.app.push_screen(
            FormScreen(
                "Search the logs (the daemon's events, process and console-job logs)",
                [
                    ("pattern", "pattern (a regular expression, any case)", ""),
                    ("dlid", "downlink (empty: every log)", dlid),
                    ("since", "since (30m, 2h, 1d, YYYY-MM-DD HH:MM; empty: all)", "1d"),
                ],
                check,
            ),
            done,
        )

    @work(thread=True, group="log-search", exclusive=True, exit_on_error=False)
    def _search_logs(self, pattern: str, dlid: str | None, since: str) -> None:
        try:
            found = api.search_logs(
                self.ws, pattern, dlid=dlid, since=api.parse_when(since) if since else None
            )
        except (api.SkydeckError, OSError) as err:
            self.post_message(ActionDone(f"search the logs: {err}", "error"))
            return
        where = f"{dlid}'s logs" if dlid else "the logs"
        window = f" since {since}" if since else ""
        if not found:
            self.post_message(ActionDone(f"nothing matches {pattern!r} in {where}{window}"))
            return
        count = "1 line matches" if len(found) == 1 else f"{len(found)} lines match"
        title = f"{count} {pattern!r} in {where}{window}: enter opens one"

        def open_match(path: str | None) -> None:
            if path:
                self.open_log(path, dlid)
                self.query_one("#log-search", Input).value = pattern

        self.app.call_from_thread(self.app.push_screen, LogMatchesScreen(title, found), open_match)

    def open_log(self, path: str, dlid: str | None = None) -> None:
        self.query_one(LogPanel).start(path, dlid)
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
                if lines:  # JSON event lines as a person reads them
                    self.post_message(LogLines(path, api.human_log_lines(lines)))
            else:
                time.sleep(self.poll_s)

    def on_log_lines(self, msg: LogLines) -> None:
        if not self.live:
            return
        panel = self.query_one(LogPanel)
        if panel.path == msg.path:
            panel.add(msg.lines)

    # -------------------------------------------------------------------- launches

    def action_launch_build(self) -> None:
        if not self._writable():
            return
        dlid = self.query_one(DownlinksTable).selected or ""
        src = str(self.ws.incoming_level0 / dlid) if dlid else ""
        out = str(self.ws.root / "builds" / f"{dlid or 'build'}.h5")

        def done(values: dict[str, str] | None) -> None:
            if values:
                inputs, output = values["inputs"].split(), values["output"]
                with contextlib.suppress(OSError):  # the build reports a missing directory
                    Path(output).parent.mkdir(parents=True, exist_ok=True)
                args = ["build", *inputs, "-o", output]
                if values["select"].strip():
                    args += ["--select", values["select"].strip()]
                self._launch(f"build {Path(output).name}", args, output, "events")

        self.app.push_screen(
            FormScreen(
                "Build events from files",
                [
                    ("inputs", "input files or directories (space separated)", src),
                    ("output", "output HDF5 file", out),
                    ("select", "selection (optional, e.g. color == 'red')", ""),
                ],
                check_build,
            ),
            done,
        )

    def action_launch_propagate(self) -> None:
        if not self._writable():
            return
        scene = api.SCENES / f"{DEFAULT_SCENE}.toml"
        tag = time.strftime("console-%Y%m%dT%H%M%S")

        def done(values: dict[str, str] | None) -> None:
            if values:
                scene_p = Path(values["scene"])
                out = self.ws.events / scene_p.stem / values["tag"]
                self._launch(
                    f"propagate {scene_p.stem}",
                    ["propagate", str(scene_p), "-o", str(out), "--photons", values["photons"]],
                    str(out),
                    "photons",
                )

        self.app.push_screen(
            FormScreen(
                "Propagate photons through a scene",
                [
                    ("scene", "scene TOML", str(scene)),
                    ("photons", "photons", "200000"),
                    ("tag", "event name (events/<scene>/<name>)", tag),
                ],
                lambda values: check_propagate(self.ws.events, values),
            ),
            done,
        )

    def _launch(self, name: str, args: list[str], output: str, unit: str) -> None:
        try:
            job = api.start_job(self.ws, name, args)
        except (api.SkydeckError, OSError) as err:
            self.notify(f"{name} did not start: {err}", title="job", severity="error")
            return
        self.jobs[job.title] = job
        self.job_outputs[job.title] = (output, unit, time.monotonic())
        self.job_records.append(JobRecord(job.title, time.time(), str(job.log), output))
        box = self.query_one("#jobs", Vertical)
        row = Horizontal(
            Label(job.title, classes="job-name"),
            ProgressBar(show_eta=True),
            classes="job",
            id=f"job-{job.pid}",
        )
        box.mount(row)
        self._watch_job(job)

    @work(thread=True, group="jobs", exit_on_error=False)
    def _watch_job(self, job: Job) -> None:
        for p in job.progress():
            self.post_message(JobProgress(job.title, p.done, p.total, p.what))
        code = job.wait()
        last = job.last
        self.post_message(
            JobProgress(job.title, last.done, last.total, last.what, exit=code, log=str(job.log))
        )

    def on_job_progress(self, msg: JobProgress) -> None:
        if not self.live:
            return
        job = self.jobs.get(msg.job)
        if job is None:
            return
        with contextlib.suppress(Exception):
            row = self.query_one(f"#job-{job.pid}", Horizontal)
            bar = row.query_one(ProgressBar)
            bar.update(total=msg.total, progress=msg.done)
            if msg.exit is not None:
                row.remove()
        rec = next((r for r in reversed(self.job_records) if r.title == msg.job), None)
        if rec is not None:
            rec.done, rec.total = msg.done, msg.total or 0
        if msg.exit is not None:
            del self.jobs[msg.job]
            output, unit, t0 = self.job_outputs.pop(msg.job, ("", "", time.monotonic()))
            if msg.exit == 0:
                result = job_result(msg.job, msg.done, unit, time.monotonic() - t0, output)
                self.notify(result, title="job done", timeout=30)
            else:
                result = api.last_line(msg.log) or "no output"
                self.notify(
                    f"{msg.job} failed (exit {msg.exit}): {result}; L opens {msg.log}",
                    title="job",
                    severity="error",
                    timeout=15,
                )
            if rec is not None:
                rec.ended, rec.exit, rec.outcome = time.time(), msg.exit, result
            self.wake.set()

    def action_jobs(self) -> None:
        """The console's jobs, running and finished; enter opens one's log."""
        self.app.push_screen(
            JobsScreen(self.job_records), lambda log: self.open_log(log) if log else None
        )

    # -------------------------------------------------------------------- hits

    def action_mark_a(self) -> None:
        """Mark the selected event as A (it stays marked); on A itself: unmark the pair."""
        panel = self.query_one(HitsPanel)
        path = panel.selected
        if path is None:
            self.notify("select a propagation event in the Hits tab", severity="warning")
            return
        if path == panel.mark_a:
            panel.unmark()
            self.notify("A/B pair unmarked", timeout=3)
            return
        panel.unmark()
        panel.mark_a = path
        panel.remark()
        self.notify(f"A = {path}; select another event and press v", timeout=3)

    def action_events_page(self, step: int) -> None:
        """Older (1) or newer (-1) propagation events, a page at a time."""
        panel = self.query_one(HitsPanel)
        page = max(0, panel.page + step)
        self.action_tab("hits")
        if page == 0:
            panel.page = 0
            panel.apply(self.latest_events)
            return
        self._read_events_page(page)

    @work(thread=True, group="hits-page", exclusive=True, exit_on_error=False)
    def _read_events_page(self, page: int) -> None:
        events = api.list_events(self.ws, 1 << 20)
        out: dict[str, Any] = {}
        for e in events[page * PAGE : (page + 1) * PAGE]:
            try:
                out[e.path] = api.summarize_event(e.path)
            except api.SkydeckError as err:
                out[e.path] = err.message
        self.post_message(EventsPage(page, len(events), out))

    def on_events_page(self, msg: EventsPage) -> None:
        if not self.live:
            return
        panel = self.query_one(HitsPanel)
        if not msg.summaries:
            self.notify(f"no older events: {msg.total} in all", severity="warning", timeout=3)
            return
        panel.page, panel.total = msg.page, msg.total
        panel.apply(msg.summaries)

    def action_compare(self) -> None:
        panel = self.query_one(HitsPanel)
        b = panel.selected
        if panel.mark_a is None or b is None:
            self.notify("mark an event with a, select another, then press v", severity="warning")
            return
        self._compare(panel.mark_a, b)

    @work(thread=True, group="hits", exclusive=True, exit_on_error=False)
    def _compare(self, a: str, b: str) -> None:
        try:
            self.post_message(Compared(api.compare_events(a, b)))
        except api.SkydeckError as err:
            self.post_message(ActionDone(f"compare: {err}", "error"))

    def on_compared(self, msg: Compared) -> None:
        if not self.live:
            return
        self.action_tab("hits")
        self.query_one(HitsPanel).show_comparison(msg.comparison)
