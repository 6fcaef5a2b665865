"""The selected downlink's stream as a tree of process instances (Pipeline-II's si.jsp).

Shape: the stream at the root; one node per process of the task in DAG order; processes
that run once per value of a stream variable (the task file's ``foreach``: makeEvt per chunk
and mergeEvt per run in halfpipe) get one child per substream key. Which processes those are
comes with the stream (``engine.api.Snapshot.groups``), so any task file is shown the same way. Nodes
are kept and relabelled in place, so the cursor and the expanded state survive refreshes.
A running job shows a bar: its elapsed time against what that process usually takes
(jobs do not report progress to the state database), marked ``~`` as an estimate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from console.format import STATUS_STYLE, bar, duration, plain, printable, status_text
from engine.api import ProcessInstance, StreamView


def pi_label(
    pi: ProcessInstance,
    now: float,
    typical: dict[str, float],
    foreach: dict[str, str] | None = None,
    name_w: int = 12,
    earlier: list[ProcessInstance] | None = None,
) -> Text:
    """name status e<execution> r<retry>/<max> duration [bar] host:pid note (most telling first).

    An instance of a per-substream process (``foreach``) is named by its key (it sits under
    its process's group node). ``name_w``: the name column's width (the longest name
    shown, so a narrow pane keeps room for the note)."""
    t = Text()
    t.append(f"{pi_name(pi, foreach):<{name_w}}", style="bold")
    t.append(" ")
    t.append_text(status_text(f"{pi.status:<9}"))
    t.append(f" e{pi.execution}", style="cyan")
    t.append(f" r{pi.auto_retry}/{pi.max_retries}", style="dim")
    if earlier:  # what ran before this execution (a rollback, a retry, a resume)
        t.append(f" {history_text(earlier)}", style="magenta")
    end = pi.ended if pi.ended is not None else (now if pi.status == "RUNNING" else None)
    t.append(f" {duration(end - pi.started) if pi.started and end else '-':>6}")
    if pi.status == "RUNNING" and pi.started:
        expect = typical.get(pi.process)
        if expect:
            frac = min(0.99, (now - pi.started) / expect)
            t.append(f" {bar(frac, 8)} {frac * 100:2.0f}%~", style="yellow")
        else:
            t.append(f" {bar(0.0, 8)}  ?%", style="yellow")
    if pi.note:
        # before where it ran, in full: a narrow pane still shows its start, the tree
        # scrolls sideways, and the detail line under the downlinks shows it whole
        t.append_text(plain(f"  {pi.note}", "red" if pi.status in ("FAILED", "READY") else "dim"))
    if pi.job_id:  # recorded for a batch job only: what its queue knows it by
        t.append(f"  {pi.launcher}:{pi.job_id}", style="dim")
    elif pi.pid is not None:
        t.append(f"  {printable(pi.host or '?')}:{pi.pid}", style="dim")
    return t


def when(t: float | None) -> str:
    """A compact local date and time: 12-05 10:31."""
    return "-" if t is None else time.strftime("%m-%d %H:%M", time.localtime(t))


def history_text(earlier: list[ProcessInstance]) -> str:
    """Earlier executions, newest first: ``(e1 FAILED 12-05 10:31)``; three at most."""
    if not earlier:
        return ""
    shown = [f"e{p.execution} {p.status} {when(p.started or p.created)}" for p in earlier[:3]]
    more = f", +{len(earlier) - 3} more" if len(earlier) > 3 else ""
    return f"({', '.join(shown)}{more})"


def pi_name(pi: ProcessInstance, foreach: dict[str, str] | None = None) -> str:
    """What the tree calls an instance: its key under a group, else its process."""
    return pi.key if pi.process in (foreach or {}) and pi.key else pi.process


def group_label(name: str, items: list[ProcessInstance], noun: str = "key") -> Text:
    """A group node: its process, how many instances have each status, how many keys."""
    counts: dict[str, int] = {}
    for pi in items:
        counts[pi.status] = counts.get(pi.status, 0) + 1
    t = Text(f"{name:<12} ", style="bold")
    for status, n in sorted(counts.items()):
        t.append(f"{status} {n}  ", style=STATUS_STYLE.get(status, ""))
    t.append(f"({len(items)} {noun}s)", style="dim")
    return t


class StreamTree(Tree[ProcessInstance | None]):
    """Tree of the latest process instances; node data is the instance (None for groups)."""

    def __init__(self, clock: Callable[[], float] = time.time, **kw: object) -> None:
        super().__init__("no downlink selected", **kw)  # type: ignore[arg-type]
        self.clock = clock
        self.dlid: str | None = None
        self.view: StreamView | None = None
        self.typical: dict[str, float] = {}
        self.foreach: dict[str, str] = {}  # per-substream processes of the stream's task
        self._pi_nodes: dict[tuple[str, str], TreeNode[ProcessInstance | None]] = {}
        self._groups: dict[str, TreeNode[ProcessInstance | None]] = {}
        self._notes: list[str] = []  # leaves explaining a downlink without a stream
        self.name_w: dict[str, int] = {}  # name column per parent ("" top): the longest name
        # earlier executions per (process, key), newest first (engine.api.stream_history)
        self.history: dict[tuple[str, str], list[ProcessInstance]] = {}
        self._retired: dict[tuple[str, str], TreeNode[ProcessInstance | None]] = {}
        self.show_root = True
        self.guide_depth = 3

    @property
    def selected(self) -> ProcessInstance | None:
        node = self.cursor_node
        return node.data if node is not None else None

    @property
    def groups(self) -> set[str]:
        """Processes shown as a group (one child per chunk or run)."""
        return set(self._groups)

    @property
    def selected_target(self) -> str | None:
        """What a rollback of the cursor's node names: ``process:key`` for an instance, the
        process for a single instance or a group node (every instance of it), else None."""
        node = self.cursor_node
        if node is None:
            return None
        pi = node.data
        if pi is not None:
            return f"{pi.process}:{pi.key}" if pi.key else pi.process
        return next((p for p, g in self._groups.items() if g is node), None)

    def show(
        self,
        dlid: str | None,
        view: StreamView | None,
        typical: dict[str, float],
        without: str = "",
        foreach: dict[str, str] | None = None,
    ) -> None:
        """Show ``view`` (the stream of ``dlid``, or None when it has no stream yet; then
        ``without`` says why and what can be done, if the caller knows better). ``foreach``:
        the processes of its task shown as a group, with what one key is called
        (``engine.api.task_groups``)."""
        self.typical = typical
        self.foreach = foreach or {}
        if dlid != self.dlid:
            self.clear()
            self._pi_nodes.clear()
            self._groups.clear()
            self.dlid = dlid
        self.view = view
        now = self.clock()
        if view is None:
            head, *more = (
                without
                or (f"{dlid}: no stream yet (press r to run)" if dlid else "no downlink selected")
            ).split("\n")
            self.root.set_label(plain(head, "bold" if more else "dim"))
            if self._pi_nodes or self._groups or more != self._notes:
                self.clear()
                self._pi_nodes.clear()
                self._groups.clear()
                for line in more:  # what the operator can do instead, one line each
                    self.root.add_leaf(plain(line), data=None)
                self._notes = more
                self.root.expand()
            return
        if self._notes:
            self.clear()
            self._notes = []
        s = view.stream
        root = Text(f"{s.dlid} {s.task} ", style="bold")
        root.append_text(status_text(s.status))
        root.append(f" e{s.execution}", style="cyan")
        if s.owner_pid:
            root.append(f" runner {printable(s.owner_host or '?')}:{s.owner_pid}", style="dim")
        if s.note:
            root.append_text(plain(f"  {s.note}", "dim"))
        self.root.set_label(root)
        self.name_w = {}
        for one in view.instances:  # per parent: a group's keys, or the top-level processes
            at = one.process if one.process in self.foreach else ""
            width = len(pi_name(one, self.foreach))
            self.name_w[at] = min(12, max(self.name_w.get(at, 0), width))
        wanted: set[tuple[str, str]] = set()
        by_process: dict[str, list[ProcessInstance]] = {}
        for pi in view.instances:
            by_process.setdefault(pi.process, []).append(pi)
        for process, items in by_process.items():
            if process in self.foreach:
                label = group_label(process, items, self.foreach[process])
                group = self._groups.get(process)
                if group is None:
                    group = self.root.add(label, data=None, expand=True)
                    self._groups[process] = group
                else:
                    group.set_label(label)
                parent = group
            else:
                parent = self.root
            for pi in items:
                k = (pi.process, pi.key)
                wanted.add(k)
                node = self._pi_nodes.get(k)
                label = pi_label(
                    pi, now, self.typical, self.foreach, self._w(pi), self._earlier(pi)
                )
                if node is None:
                    self._pi_nodes[k] = parent.add_leaf(label, data=pi)
                else:
                    node.data = pi
                    node.set_label(label)
        for k in [k for k in self._pi_nodes if k not in wanted]:
            self._pi_nodes.pop(k).remove()
        for p in [p for p in self._groups if p not in by_process]:
            self._groups.pop(p).remove()
        self.root.expand()

    def clear(self) -> StreamTree:  # type: ignore[override]
        """Every node goes: so do the rolled-back leaves and the history they came from."""
        super().clear()
        self._retired.clear()
        self.history = {}
        return self

    def _earlier(self, pi: ProcessInstance) -> list[ProcessInstance]:
        return [p for p in self.history.get((pi.process, pi.key), []) if p.execution < pi.execution]

    def set_history(self, instances: list[ProcessInstance]) -> None:
        """Every execution of the shown stream's instances: the earlier ones are named in
        their instance's label."""
        history: dict[tuple[str, str], list[ProcessInstance]] = {}
        for p in sorted(instances, key=lambda p: -p.execution):
            if not p.is_latest:
                history.setdefault((p.process, p.key), []).append(p)
        if history == self.history and not any(k in self._pi_nodes for k in self._retired):
            return
        self.history = history
        now = self.clock()
        # rolled back and not run again yet: no latest instance, the earlier ones still shown
        for k in [k for k in self._retired if k not in history or k in self._pi_nodes]:
            self._retired.pop(k).remove()
        for k, earlier in history.items():
            if k in self._pi_nodes:
                continue
            last = earlier[0]
            label = pi_label(last, now, self.typical, self.foreach, self._w(last), earlier[1:])
            label.append(" rolled back: runs again as a new execution", style="magenta")
            node = self._retired.get(k)
            if node is None:
                parent = self._groups.get(last.process, self.root)
                self._retired[k] = parent.add_leaf(label, data=last)
            else:
                node.set_label(label)
        for node in self._pi_nodes.values():
            pi = node.data
            if pi is not None:
                node.set_label(
                    pi_label(pi, now, self.typical, self.foreach, self._w(pi), self._earlier(pi))
                )

    def _w(self, pi: ProcessInstance) -> int:
        return self.name_w.get(pi.process if pi.process in self.foreach else "", 12)

    def tick(self) -> None:
        """Advance running jobs' durations and bars (called each second)."""
        if self.view is None:
            return
        now = self.clock()
        for node in self._pi_nodes.values():
            pi = node.data
            if pi is not None and pi.status == "RUNNING":
                node.set_label(
                    pi_label(pi, now, self.typical, self.foreach, self._w(pi), self._earlier(pi))
                )
