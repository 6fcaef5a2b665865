"""`skydeck [-w WORKSPACE] [--read-only]`: the Textual operations console.

Why this module exists: it is the App, what is global to the console: the key bindings (the
footer and the help list them in this order), the command palette, the read-only gate that
every action passes, the help screen, and ``main``. What the operator looks at and acts on
is the main screen (console.screens.main): the bindings of its actions are namespaced
``screen.<action>``. The console talks to the engine only through ``engine.api``
(tests/console/test_console_boundary.py).

How it stays live without blocking (docs/ecosystem.md, "Textual live refresh"): the main screen's
poll worker asks ``engine.api.Monitor`` every ``POLL_S`` what changed and posts one message
with the snapshot; every engine call runs in a thread worker.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from importlib import metadata
from typing import Any, ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from console.format import printable
from console.messages import JobProgress
from console.screens.main import MainScreen
from console.screens.modals import HelpScreen, MessagesScreen
from engine import api

__all__ = ["JobProgress", "MainScreen", "SkydeckApp", "build_parser", "main"]

POLL_S = 0.25
TOAST_S = {"information": 4.0, "warning": 10.0, "error": 30.0}  # how long each kind stays
STAGE_EVERY_S = 10.0  # usage scan at least this often

# actions that change something: disabled (and hidden) in --read-only mode
WRITE_ACTIONS = frozenset(
    {
        "run_stream",
        "rollback_stream",
        "rerun_process",
        "unlock",
        "halts",
        "acknowledge",
        "launch_build",
        "launch_propagate",
    }
)
PANELS = [
    (
        "Downlinks",
        "newest first: id, date (YYMMDD), state, stream status, chunks done/total, runs, "
        "bytes, age, note (STUCK when the runner died); the title counts visible/total per "
        "state; the line under it shows the selected row's note in full; / filters "
        "(state:failed dlid:2612* note:regex text, ! inverts a term), 0 and 5-9 pick a "
        "state, esc clears; s/S or a click on a header sorts (▲/▼); space marks rows "
        "for r, b and u",
    ),
    (
        "Stream",
        "the selected downlink's process instances as a tree: status (Pipeline-II colors),"
        " execution, retries, duration, note, host:pid, estimated progress of running "
        "jobs, earlier executions with their dates (e1 FAILED 12-05 10:31); t draws the "
        "stream's timeline per host",
    ),
    ("Locks", "lock files: kind, owner, process, age, stale verdict with its reason"),
    (
        "Staging",
        "usage bars per area and per downlink, free space against the reserve, alert "
        "under disk pressure, what the next prune would free per area",
    ),
    (
        "Hits",
        "propagation events, 10 a page (] older, [ newer): photons, hits, efficiency, "
        "flag table, histograms, the event named; a marks A (a on A unmarks), v compares "
        "A with the selected event (the pair stays marked)",
    ),
    (
        "Log",
        "the selected instance's log (or one picked with L), following, bounded to 5000 "
        "lines, its file named; daemon JSON lines shown as human lines; / searches, n/N "
        "next/previous match",
    ),
]


TABS = Binding.Group("Tabs", compact=True)
GLOSSARY = [
    ("Downlink states", ""),
    (
        "arrived",
        "seen in incoming/ (pending: its files or manifest are not complete yet), or "
        "registered with no stream run yet",
    ),
    ("running", "its stream is being run (STUCK: the runner died; r resumes it)"),
    ("staged", "its stream succeeded: built events merged into stage/"),
    (
        "stopped",
        "its stream was TERMINATED (a daemon or run stopped cleanly): resumes when a daemon "
        "claims it again; not a failure",
    ),
    ("failed", "its stream FAILED or was CANCELED: b rolls back what failed"),
    (
        "rejected",
        "the delivery failed verification; its files are kept in incoming/rejected/ "
        "with a .reason file; nothing to run: fix it and deliver it again",
    ),
    ("Process statuses (Pipeline-II)", ""),
    ("WAITING", "created; waits for the processes it comes after"),
    (
        "READY",
        "may start; held until a slot is free or what the note says clears (a halt "
        "flag, the disk reserve, a lock)",
    ),
    ("QUEUED", "handed to the batch system (Slurm), waiting there"),
    ("SUBMITTED", "accepted by the launcher, not running yet"),
    ("RUNNING", "the job runs (the bar is elapsed time against the usual duration, ~)"),
    ("SUCCESS", "the job exited 0"),
    ("FAILED", "the job failed and its automatic retries are used up, or its supervisor died"),
    ("TERMINATED", "stopped by a signal (daemon stopped, job killed); resumes as a new execution"),
    ("CANCELED", "cancelled by an operator"),
    ("SKIPPED", "its condition was false (e.g. no gensteps: no propagate); counts as done"),
    ("Notation", ""),
    (
        "e1 r0/1",
        "execution 1 (each retry, rollback or resume makes a new execution, +1); "
        "automatic retries used 0 of the 1 the task allows for that process",
    ),
]


def _action_name(action: str) -> str:
    """``screen.tab('locks')`` -> ``tab``: the action a binding runs, without namespace."""
    return action.split("(")[0].rpartition(".")[2]


class SkydeckApp(App[None]):
    """The console on one workspace."""

    TITLE = "skydeck"
    CSS_PATH = "app.tcss"
    # The footer shows the keys an operator needs most (they fit in 120 columns, the tab keys
    # as one group); the rest are hidden there but listed by `?` and the command palette.
    BINDINGS: ClassVar = [
        Binding("question_mark", "help", "Help", id="help"),
        Binding("slash", "screen.filter", "Filter", id="filter"),
        Binding("r", "screen.run_stream", "Run", id="run_stream"),
        Binding("b", "screen.rollback_stream", "Roll back", id="rollback_stream"),
        Binding("p", "screen.rerun_process", "Re-run", id="rerun_process"),
        Binding("u", "screen.unlock", "Unlock", id="unlock"),
        Binding("h", "screen.halts", "Halt", id="halts"),
        Binding("k", "screen.acknowledge", "Acknowledge", id="acknowledge", show=False),
        Binding("l", "screen.open_log", "Log", id="open_log"),
        Binding("L", "screen.pick_log", "Logs", id="pick_log"),
        Binding("g", "screen.search_logs", "Search logs", id="search_logs", show=False),
        Binding("j", "screen.jobs", "Jobs", id="jobs", show=False),
        Binding("1", "screen.tab('locks')", "Locks", id="tab.locks", group=TABS),
        Binding("2", "screen.tab('staging')", "Staging", id="tab.staging", group=TABS),
        Binding("3", "screen.tab('hits')", "Hits", id="tab.hits", group=TABS),
        Binding("4", "screen.tab('log')", "Log tab", id="tab.log", group=TABS),
        Binding("q", "quit", "Quit", id="quit"),
        Binding("s", "screen.sort", "Sort", id="sort", show=False),
        Binding("S", "screen.reverse", "Reverse", id="reverse", show=False),
        Binding("B", "screen.launch_build", "Build", id="launch_build", show=False),
        Binding("P", "screen.launch_propagate", "Propagate", id="launch_propagate", show=False),
        Binding("t", "screen.timeline", "Timeline", id="timeline", show=False),
        Binding("m", "messages", "Messages", id="messages", show=False),
        Binding("a", "screen.mark_a", "Mark A", id="mark_a", show=False),
        Binding("v", "screen.compare", "A/B", id="compare", show=False),
        Binding(
            "right_square_bracket",
            "screen.events_page(1)",
            "Older events",
            id="events_older",
            show=False,
        ),
        Binding(
            "left_square_bracket",
            "screen.events_page(-1)",
            "Newer events",
            id="events_newer",
            show=False,
        ),
    ]
    COMMAND_HELP: ClassVar = {
        "run_stream": "Run the selected downlink's stream (skydeck-engine run; claims it)",
        "rollback_stream": "Roll back the failed instances of the selected stream, then run it",
        "rerun_process": "Roll back the selected process instance, or a whole group such as all "
        "{group} (and what is downstream), then run; refused with the reason "
        "when it cannot succeed",
        "unlock": "Remove the selected lock (asks first; a live one needs a second look)",
        "halts": "Set or clear halt flags (global or for the selected downlink)",
        "acknowledge": "Acknowledge the selected downlink's alarm (FAILED or STUCK): who and "
        "why are recorded, health stops failing for it",
        "open_log": "Follow the selected process instance's log",
        "pick_log": "Open another log: the daemon's, console runs, builds and propagations",
        "jobs": "The console's jobs (builds, propagations), running and finished: what each "
        "made, how fast, or why it failed; enter opens its log",
        "search_logs": "Search across logs: the selected downlink's (or every log) in a time "
        "window; enter on a match opens its log with the pattern highlighted",
        "launch_build": "Build events from files (skydeck-engine build), with progress",
        "launch_propagate": "Propagate photons through a scene, with progress",
        "messages": "What the console said, kept apart: errors, warnings, information",
        "timeline": "The selected downlink's stream on a time axis: every execution of every "
        "process, waiting and running, per host",
        "mark_a": "Mark the selected propagation event as A for an A/B comparison (on A: "
        "unmark the pair)",
        "events_page": "Page through the propagation events in the Hits tab (] older, [ newer)",
        "compare": "Compare event A with the selected event (chi2 per flag category)",
        "filter": "Filter the downlinks: field terms (state:failed, dlid:2612*, note:regex), "
        "free text per field, ! inverts a term; a bad regex is shown as an error",
        "sort": "Sort the downlinks by the next column",
        "reverse": "Reverse the downlinks' sort order",
        "help": "Show keys, panels and a glossary of states",
    }

    def __init__(
        self,
        ws: api.Workspace,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
        poll_s: float = POLL_S,
        stage_every_s: float = STAGE_EVERY_S,
    ) -> None:
        super().__init__()
        self.ws = ws
        self.read_only = read_only
        self.clock = clock
        self.poll_s = poll_s
        self.stage_every_s = stage_every_s
        self.toasts: list[tuple[str, str]] = []
        self.example_group = example_group(ws)
        self.command_help = {
            k: v.format(group=self.example_group) for k, v in self.COMMAND_HELP.items()
        }
        self.main = MainScreen(ws, clock, poll_s, stage_every_s)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: Any = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Every toast is also kept in ``toasts`` (severity, text): the last ones are what an
        operator was told, and what tests check. Markup is off: paths and reasons are data."""
        message = "\n".join(printable(line) for line in message.split("\n"))
        title = printable(title)
        self.toasts.append((str(severity), f"{title}: {message}" if title else message))
        del self.toasts[:-50]
        if timeout is None:  # kept apart: an error stays until read, information passes
            timeout = TOAST_S.get(str(severity), 5.0)
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def q(self, selector: Any, expect: Any = None) -> Any:
        """Query the main screen (also while a modal screen is on top)."""
        return self.main.query_one(selector, expect) if expect else self.main.query_one(selector)

    @property
    def runners(self) -> dict[str, Any]:
        """Stream runners this console started and still watches (the main screen's)."""
        return self.main.runners

    @property
    def jobs(self) -> dict[str, Any]:
        """Operator jobs (build, propagate) this console started and still watches."""
        return self.main.jobs

    def keys(self) -> list[Binding]:
        """The console's bindings in their order (the footer's, the help's, the palette's)."""
        return [b for b in self.BINDINGS if isinstance(b, Binding)]

    def on_mount(self) -> None:
        self.sub_title = f"{self.ws.root.name}{'  READ-ONLY' if self.read_only else ''}"
        self.push_screen(self.main)

    # -------------------------------------------------------------------- read-only

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The read-only gate: the main screen asks it for its own actions too."""
        return not (self.read_only and action in WRITE_ACTIONS)

    def writable(self) -> bool:
        """The read-only gate for an action about to act: False (and says why) when read-only."""
        if self.read_only:
            self.notify("read-only console: actions are disabled", severity="warning")
            return False
        return True

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for b in self.keys():
            action = _action_name(b.action)
            if action == "quit" or (self.read_only and action in WRITE_ACTIONS):
                continue
            target = self.main if b.action.startswith("screen.") else self
            yield SystemCommand(
                f"{b.description} [{b.key}]",
                self.command_help.get(action, b.description),
                partial(target.run_action, b.action.removeprefix("screen.")),
            )

    # -------------------------------------------------------------------- view actions

    def action_messages(self) -> None:
        self.push_screen(MessagesScreen(self.toasts))

    def action_help(self) -> None:
        rows = []
        for b in self.keys():
            action = _action_name(b.action)
            desc = self.command_help.get(action, b.description)
            if self.read_only and action in WRITE_ACTIONS:
                desc += " (disabled: read-only)"
            rows.append((self.get_key_display(b), desc))
        rows.append(("enter", "On a downlink: go to its stream; on an instance: open its log"))
        rows.append(("esc", "Clear the filter, from anywhere (in the log's search: the search)"))
        rows.append(("0 5-9", "All states; only failed, running, arrived, staged, rejected"))
        rows.append(("space", "Mark a downlink; r, b and u then act on every marked one"))
        rows.append(("click", "A header sorts by its column (again: the other way; ▲/▼)"))
        rows.append(("/ n N", "In the Log tab: search the log, next and previous match"))
        rows.append(("tab", "Next panel (1-4 switch the bottom panel from any panel)"))
        rows.append(("^p", "Command palette: every action by name"))
        self.push_screen(HelpScreen(rows, PANELS, self.read_only, GLOSSARY))


def example_group(ws: api.Workspace) -> str:
    """A process of the workspace's task that runs per substream (``makeEvt`` for halfpipe),
    to name in help texts; "a group" when the task has none or cannot be read."""
    try:
        return next(iter(api.task_groups(ws)), "a group")
    except api.SkydeckError:
        return "a group"


def _version() -> str:
    """The installed distribution's version (the engine's own, one pyproject for both)."""
    try:
        return metadata.version("skydeck")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skydeck", description="skydeck operations console")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument(
        "-w",
        "--workspace",
        default=None,
        help="workspace root (default: $SKYDECK_WORKSPACE, else ./skydeck-workspace)",
    )
    p.add_argument("--read-only", action="store_true", help="watch only: every action disabled")
    p.add_argument(
        "--demo",
        action="store_true",
        help="create the workspace if needed and feed it mock downlinks (make demo)",
    )
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
            ws = api.Workspace.open(args.workspace)
    except api.SkydeckError as err:
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
