"""Modal screens: confirmation (k9s: destructive actions ask first), help, halt flags, forms,
and a log picker (the daemon's and console jobs' logs are not any instance's log)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from console.format import printable

if TYPE_CHECKING:
    from console.messages import JobRecord
    from engine.api import LogFile, LogMatch


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no with the consequence spelled out; `y` confirms, `n`/`escape` cancels."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(
        self,
        question: str,
        detail: str = "",
        danger: bool = False,
        items: Sequence[str] = (),
    ) -> None:
        super().__init__()
        self.question, self.detail, self.danger = question, detail, danger
        self.items = list(items)  # a bulk action: what it acts on, one line each

    def compose(self) -> ComposeResult:
        # names, reasons and paths are data: escaped, never parsed as markup
        with Vertical(id="dialog", classes="danger" if self.danger else ""):
            yield Label(printable(self.question), id="question", markup=False)
            if self.items:
                yield Static("\n".join(printable(i) for i in self.items), id="items", markup=False)
            if self.detail:
                yield Static(printable(self.detail), id="detail", markup=False)
            with Horizontal(id="buttons"):
                yield Button("Yes (y)", variant="error" if self.danger else "primary", id="yes")
                yield Button("No (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class HelpScreen(ModalScreen[None]):
    """`?`: every binding with its description, and what each panel shows."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss_help", "Close", id="help.close")]

    def __init__(
        self,
        bindings: list[tuple[str, str]],
        panels: list[tuple[str, str]],
        read_only: bool,
        glossary: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__()
        self.rows, self.panels, self.read_only = bindings, panels, read_only
        self.glossary = glossary or []

    def compose(self) -> ComposeResult:
        keys = Table(
            title="Keys" + (" (READ-ONLY: actions disabled)" if self.read_only else ""),
            box=None,
            title_justify="left",
        )
        keys.add_column("key", style="bold cyan")
        keys.add_column("action")
        for k, d in self.rows:
            keys.add_row(k, d)
        panels = Table(title="Panels", box=None, title_justify="left")
        panels.add_column("panel", style="bold")
        panels.add_column("shows")
        for k, d in self.panels:
            panels.add_row(k, d)
        terms = Table(title="Glossary", box=None, title_justify="left")
        terms.add_column("term", style="bold")
        terms.add_column("meaning")
        for k, d in self.glossary:
            if d:
                terms.add_row(k, d)
            else:  # a heading
                terms.add_row(Text(k, style="bold underline"), "")
        with VerticalScroll(id="dialog"):
            yield Static(keys)
            yield Static(panels)
            if self.glossary:
                yield Static(terms, id="glossary")
            yield Static(Text("Every action is also in the command palette (ctrl+p).", style="dim"))

    def action_dismiss_help(self) -> None:
        self.dismiss(None)


MARKED = "@marked"  # HaltScreen's scope of the marked downlinks


class HaltScreen(ModalScreen[tuple[str, str | None] | None]):
    """Pick a halt flag to toggle, globally or for the selected downlink."""

    BINDINGS = [Binding("escape", "cancel", "Close", id="halt.close")]

    def __init__(
        self,
        flags: tuple[str, ...],
        dlid: str | None,
        active: dict[str, list[str]],
        meaning: dict[str, str] | None = None,
        marked: Sequence[str] = (),
    ) -> None:
        """``marked``: the downlinks marked with space; their scope (``MARKED``) replaces
        the selected downlink's, and a flag shows set when every one of them has it."""
        super().__init__()
        self.flags, self.dlid, self.active = flags, dlid, active
        self.meaning = meaning or {}
        self.marked = list(marked)

    def compose(self) -> ComposeResult:
        opts = []
        for flag in self.flags:
            here = [MARKED] if self.marked else [self.dlid] if self.dlid else []
            for scope in ["global", *here]:
                on = scope in self.active.get(flag, [])
                name = f"the {len(self.marked)} marked downlinks" if scope == MARKED else scope
                text = Text(
                    f"{'[SET]  ' if on else '[ - ]  '}{flag:<14} {name}",
                    style="bold red" if on else "",
                )
                if flag in self.meaning:  # what setting it holds, under its name
                    text.append(f"\n       {self.meaning[flag]}", style="dim")
                opts.append(Option(text, id=f"{flag}|{scope}"))
        with Vertical(id="dialog"):
            yield Label("Halt flags: enter toggles (a set flag holds what its line says)")
            yield OptionList(*opts, id="flags")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        flag, scope = str(event.option.id).split("|")
        self.dismiss((flag, None if scope == "global" else scope))

    def action_cancel(self) -> None:
        self.dismiss(None)


class FormScreen(ModalScreen[dict[str, str] | None]):
    """A few labelled inputs, returned by key. Enter in any field launches; escape cancels.

    Prefilled values stay until edited (the cursor goes to their end, nothing is selected,
    so typing adds to them instead of replacing them). ``check`` runs before launching: it
    returns an error (shown, the form stays) or a question (an output that would be
    overwritten: asked first), or neither."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="form.cancel")]

    def __init__(
        self,
        title: str,
        fields: list[tuple[str, str, str]],
        check: Callable[[dict[str, str]], tuple[str | None, str | None]] | None = None,
    ) -> None:
        super().__init__()
        self.title_text, self.fields, self.check = title, fields, check

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.title_text, id="question", markup=False)
            for key, label, value in self.fields:
                yield Label(label, markup=False)
                yield Input(value=value, id=f"f-{key}", select_on_focus=False)
            yield Static("", id="form-error", markup=False)
            with Horizontal(id="buttons"):
                yield Button("Launch (enter)", variant="primary", id="ok")
                yield Button("Cancel (esc)", id="cancel")

    def _values(self) -> dict[str, str]:
        return {k: self.query_one(f"#f-{k}", Input).value for k, _, _ in self.fields}

    def _launch(self) -> None:
        values = self._values()
        error, question = self.check(values) if self.check else (None, None)
        box = self.query_one("#form-error", Static)
        box.update(printable(error or ""))
        box.set_class(bool(error), "show")
        if error:
            return
        if question:

            def done(yes: bool | None) -> None:
                if yes:
                    self.dismiss(values)

            self.app.push_screen(ConfirmScreen(question, danger=True), done)
            return
        self.dismiss(values)

    def on_input_submitted(self) -> None:
        self._launch()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._launch()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class LogPickerScreen(ModalScreen[str | None]):
    """Pick a log to follow in the Log tab: the daemon's, console jobs', recent processes'."""

    BINDINGS = [Binding("escape", "cancel", "Close", id="logs.close")]

    def __init__(self, files: list[LogFile]) -> None:
        super().__init__()
        self.files = files

    def compose(self) -> ComposeResult:
        opts = []
        for f in self.files:
            text = Text(f"{f.what:<12} ", style="bold")
            text.append(printable(f.path.rsplit("/", 1)[-1]))
            text.append(
                f"  {time.strftime('%m-%d %H:%M:%S', time.localtime(f.mtime))}", style="dim"
            )
            opts.append(Option(text, id=f.path))
        with Vertical(id="dialog"):
            yield Label("Logs: enter follows one in the Log tab (4)")
            yield OptionList(*opts, id="logs")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(str(event.option.id))

    def action_cancel(self) -> None:
        self.dismiss(None)


class LogMatchesScreen(ModalScreen[str | None]):
    """Lines matching a search across logs (``engine.api.search_logs``): when, which log and
    line, the text; enter opens that log in the Log tab with the pattern highlighted."""

    BINDINGS = [Binding("escape", "cancel", "Close", id="matches.close")]

    def __init__(self, title: str, matches: Sequence[LogMatch]) -> None:
        super().__init__()
        self.title_text, self.matches = title, list(matches)

    def compose(self) -> ComposeResult:
        opts = []
        for i, m in enumerate(self.matches):
            text = Text(time.strftime("%m-%d %H:%M:%S ", time.localtime(m.t)), style="dim")
            text.append(printable(f"{m.path.rsplit('/', 2)[-2]}/{m.path.rsplit('/', 1)[-1]}"))
            text.append(f":{m.lineno} ", style="bold")
            text.append(printable(m.line))
            opts.append(Option(text, id=str(i)))
        with Vertical(id="dialog"):
            yield Label(self.title_text, markup=False)
            yield OptionList(*opts, id="matches")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.matches[int(str(event.option.id))].path)

    def action_cancel(self) -> None:
        self.dismiss(None)


class JobsScreen(ModalScreen[str | None]):
    """`j`: the console's jobs (builds, propagations), newest first, running and finished:
    when, what, how far or how it ended; enter opens a job's log in the Log tab."""

    BINDINGS = [Binding("escape,j", "cancel", "Close", id="jobs.close")]

    def __init__(self, jobs: Sequence[JobRecord]) -> None:
        super().__init__()
        self.jobs = sorted(jobs, key=lambda j: -j.started)

    def compose(self) -> ComposeResult:
        opts = []
        for i, j in enumerate(self.jobs):
            text = Text(time.strftime("%m-%d %H:%M:%S ", time.localtime(j.started)), style="dim")
            text.append(printable(j.title) + " ", style="bold")
            if j.exit is None:
                far = f"{j.done:,}/{j.total:,}" if j.total else "started"
                text.append(f"RUNNING {far}", style="yellow")
            elif j.exit == 0:
                text.append("DONE ", style="green")
                text.append(printable(j.outcome or ""))
            else:
                text.append(f"FAILED (exit {j.exit}) ", style="bold red")
                text.append(printable(j.outcome or ""))
            opts.append(Option(text, id=str(i)))
        with Vertical(id="dialog"):
            yield Label(
                f"The console's jobs ({len(self.jobs)}): enter opens a job's log"
                if self.jobs
                else "No jobs launched from this console yet (B builds, P propagates)"
            )
            yield OptionList(*opts, id="jobs-list")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.jobs[int(str(event.option.id))].log)

    def action_cancel(self) -> None:
        self.dismiss(None)


class MessagesScreen(ModalScreen[None]):
    """`m`: what the console told the operator, errors first, then warnings, then
    information (a toast goes away; this list keeps the last 50, kind by kind)."""

    BINDINGS = [Binding("escape,m,q", "close", "Close", id="messages.close")]
    KINDS = (("error", "Errors", "bold red"), ("warning", "Warnings", "bold yellow"))

    def __init__(self, toasts: list[tuple[str, str]]) -> None:
        super().__init__()
        self.toasts = list(toasts)

    def body(self) -> Text:
        out = Text()
        kinds = (*self.KINDS, ("information", "Information", "bold"))
        for severity, title, style in kinds:
            items = [t for s, t in reversed(self.toasts) if s == severity]
            out.append(f"{title} ({len(items)})\n", style=style)
            for t in items:
                out.append("  " + t.replace("\n", "\n    ") + "\n")
            out.append("\n")
        return out

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="dialog"):
            yield Static(self.body(), id="messages")

    def action_close(self) -> None:
        self.dismiss(None)
