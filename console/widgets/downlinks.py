"""The downlinks table: one row per downlink, newest first, filtered like k9s, sortable.

Why it is a virtual table (console.widgets.vtable): with 10,000 downlinks a filter or a sort
is a new order of keys, computed in Python in milliseconds; only the lines on screen are
drawn, from the model, so nothing is added, removed or measured row by row.

Filter language (the ``/`` input): whitespace-separated terms, all of which must hold.
``state:failed``, ``dlid:2612*`` (``*``/``?`` glob over the whole field), ``note:md5``
(a regex searched in that field), free text (a regex searched in each field separately,
never over one joined string), ``!`` before a term inverts it. A regex that does not
compile is an error (``FilterError``), shown to the operator; it is never taken literally.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

from rich.text import Text

from console.format import STATE_STYLE, age, plain, size
from console.widgets.vtable import VirtualTable
from engine.api import DownlinkRow

COLUMNS = (
    ("dlid", "Downlink", 10),
    ("date", "Date", 10),
    ("state", "State", 8),
    ("stream", "Stream", 10),
    ("chunks", "Chunks", 6),
    ("runs", "Runs", 4),
    ("bytes", "Bytes", 8),
    ("age", "Age", 4),
    ("note", "Note", 30),
)
SORT_KEYS: dict[str, Callable[[DownlinkRow], object]] = {
    "dlid": lambda r: r.dlid,
    "date": lambda r: (r.date, r.dlid),
    "state": lambda r: (r.state, r.dlid),
    "stream": lambda r: (r.stream, r.dlid),
    "chunks": lambda r: (r.chunks_done, r.chunks_total),
    "runs": lambda r: r.runs,
    "bytes": lambda r: r.bytes,
    "age": lambda r: -r.since,
    "note": lambda r: (r.note, r.dlid),
}
STATES = ("failed", "running", "arrived", "staged", "rejected")  # shortcut keys 5..9
FIELDS: dict[str, Callable[[DownlinkRow], str]] = {
    "dlid": lambda r: r.dlid,
    "date": lambda r: r.date,
    "state": lambda r: r.state,
    "stream": lambda r: r.stream,
    "note": lambda r: r.note,
}
ALIASES = {"id": "dlid", "status": "stream"}
_GLOB = re.compile(r"^[\w.\-*?]*$")


class FilterError(ValueError):
    """The filter text cannot be used (a bad regex, an unknown field, a stray quote)."""


@dataclass(frozen=True)
class Term:
    field: str | None  # None: any field
    rx: re.Pattern[str]
    inverse: bool
    # free text: the same regex over the fields joined by newlines (MULTILINE), a cheap
    # first pass (a match in one field is a match there); None where that does not hold
    joined: re.Pattern[str] | None = None

    def holds(self, r: DownlinkRow) -> bool:
        """Whether ``r`` passes (each field searched on its own; spelled out: this runs
        for every downlink on each keystroke)."""
        find = self.rx.search
        if self.field is None:
            hit = find(r.dlid) or find(r.date) or find(r.state) or find(r.stream) or find(r.note)
        else:
            hit = find(getattr(r, self.field))
        return (hit is not None) != self.inverse

    def select(
        self, rows: list[DownlinkRow], hay: dict[str, str] | None = None
    ) -> list[DownlinkRow]:
        """The rows that pass; ``hay`` (dlid -> joined fields) lets free text skip the
        per-field search on rows where even the joined string has no match."""
        holds = self.holds
        if self.joined is None or hay is None:
            return [r for r in rows if holds(r)]
        first = self.joined.search
        if self.inverse:
            return [r for r in rows if first(hay[r.dlid]) is None or holds(r)]
        return [r for r in rows if first(hay[r.dlid]) is not None and holds(r)]


def parse_filter(text: str) -> list[Term]:
    """The terms of a filter (see the module docstring); raises FilterError."""
    try:
        words = shlex.split(text)
    except ValueError as err:
        raise FilterError(f"filter: {err}") from None
    terms = []
    for word in words:
        inverse = word.startswith("!")
        body = word[1:] if inverse else word
        field: str | None = None
        name, sep, value = body.partition(":")
        if sep and name.lower() in (*FIELDS, *ALIASES):
            field = ALIASES.get(name.lower(), name.lower())
            body = value
        elif sep and re.fullmatch(r"[a-z]+", name):
            raise FilterError(f"unknown field {name!r}: one of {', '.join(FIELDS)}")
        if not body:
            continue
        if ("*" in body or "?" in body) and _GLOB.match(body):
            rx = re.compile(fnmatch.translate(body), re.IGNORECASE)
        else:
            try:
                rx = re.compile(body, re.IGNORECASE)
            except re.error as err:
                raise FilterError(f"bad regex {body!r}: {err}") from None
        joined = None
        if field is None and not re.search(r"\\[AZ]|\(\?<", body):
            joined = re.compile(rx.pattern, re.IGNORECASE | re.MULTILINE)
        terms.append(Term(field, rx, inverse, joined))
    return terms


def haystack(r: DownlinkRow) -> str:
    return f"{r.dlid}\n{r.date}\n{r.state}\n{r.stream}\n{r.note}"


def matches(r: DownlinkRow, pattern: str) -> bool:
    """Whether row ``r`` passes the filter ``pattern`` (raises FilterError on a bad one)."""
    return all(t.holds(r) for t in parse_filter(pattern))


def cells(r: DownlinkRow, now: float) -> dict[str, Text]:
    stream = r.stream if r.execution <= 1 else f"{r.stream} e{r.execution}"
    return {
        "dlid": plain(r.dlid),
        "date": plain(r.date),
        "state": plain(r.state, STATE_STYLE.get(r.state, "")),
        "stream": plain(stream),
        "chunks": Text(f"{r.chunks_done}/{r.chunks_total}" if r.chunks_total else "-"),
        "runs": Text(str(r.runs) if r.runs else "-"),
        "bytes": Text(size(r.bytes)),
        "age": Text(age(now - r.since)),
        "note": plain(r.note, "bold red" if r.note.startswith("STUCK") else "dim"),
    }


class DownlinksTable(VirtualTable):
    """Rows keyed by downlink id; ``apply`` (new data) and ``set_filter`` change them."""

    COLUMNS = COLUMNS

    def __init__(self, clock: Callable[[], float] = time.time, **kw: object) -> None:
        super().__init__(**kw)
        self.clock = clock
        self.model: dict[str, DownlinkRow] = {}
        self.filter = ""
        self.terms: list[Term] = []
        self.sort_column = "dlid"
        self.sort_reverse = True  # newest first
        self.visible_by_state: dict[str, int] = {}
        self.total_by_state: dict[str, int] = {}
        self._hay: dict[str, tuple[DownlinkRow, str]] = {}  # free-text first pass, per row
        self._hay_for: dict[str, DownlinkRow] | None = None  # the model _hay_out is of
        self._hay_out: dict[str, str] = {}
        self.border_title = self.title_text()  # "Downlinks 0/0" until the first rows come

    @property
    def shown(self) -> dict[str, int]:
        """The visible rows, in display order (key -> row)."""
        return self.index

    @property
    def selected(self) -> str | None:
        return self.selected_key

    def row_cells(self, key: str) -> Iterable[Text]:
        r = self.model.get(key)
        if r is None:
            return [Text("")] * len(COLUMNS)
        return cells(r, self.clock()).values()

    def row_version(self, key: str) -> Hashable | None:
        r = self.model.get(key)
        return None if r is None else (r, age(self.clock() - r.since))

    def apply(self, rows: dict[str, DownlinkRow]) -> int:
        """Show ``rows`` (the full current set); returns how many rows changed."""
        before, self.model = self.model, rows
        changed = sum(1 for k, r in rows.items() if before.get(k) != r)
        changed += sum(1 for k in before if k not in rows)
        if changed:
            counts: dict[str, int] = {}
            for r in rows.values():
                counts[r.state] = counts.get(r.state, 0) + 1
            self.total_by_state = counts
            self._sync()
        return changed

    def _haystacks(self) -> dict[str, str]:
        """dlid -> the row's fields joined, kept per row object (rebuilt when it changed)."""
        if self._hay_for is self.model:
            return self._hay_out
        old, self._hay = self._hay, {}
        out: dict[str, str] = {}
        for k, r in self.model.items():
            cached = old.get(k)
            text = cached[1] if cached is not None and cached[0] is r else haystack(r)
            self._hay[k] = (r, text)
            out[k] = text
        self._hay_for, self._hay_out = self.model, out
        return out

    def _sync(self) -> None:
        """Filter and sort the model into the visible order (one pass, no per-row widget work)."""
        rows = list(self.model.values())
        hay = self._haystacks() if any(t.joined is not None for t in self.terms) else None
        for term in self.terms:
            rows = term.select(rows, hay)
        fn = SORT_KEYS[self.sort_column]
        rows.sort(key=fn, reverse=self.sort_reverse)  # type: ignore[arg-type, return-value]
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.state] = counts.get(r.state, 0) + 1
        self.visible_by_state = counts
        self.set_rows([r.dlid for r in rows], follow_top=not self.moved_by_user)
        self.border_title = self.title_text()

    def title_text(self) -> str:
        """``Downlinks 12/10000 · failed 3/10 · ...``: visible/total, per state."""
        total = self.total_by_state
        parts = [f"Downlinks {len(self.keys)}/{len(self.model)}"]
        for state in sorted(total):
            parts.append(f"{state} {self.visible_by_state.get(state, 0)}/{total[state]}")
        return " · ".join(parts)

    def tick(self) -> None:
        """Advance the age column (called each second): a redraw of the visible lines."""
        self.refresh()

    def set_filter(self, pattern: str) -> None:
        """Filter the rows; a bad pattern raises FilterError and leaves the rows as they were."""
        terms = parse_filter(pattern)
        self.filter, self.terms = pattern, terms
        self._sync()

    def set_sort(self, column: str, reverse: bool | None = None) -> str:
        """Sort by ``column``; picking the current column again flips the order."""
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column, self.sort_reverse = column, reverse
        self._sync()
        label = {k: v for k, v, _ in COLUMNS}[column]
        return f"sorted by {label} {'descending' if reverse else 'ascending'}"

    def cycle_sort(self, reverse: bool = False) -> str:
        """Next sort column (or flip the order); returns a description for the operator."""
        if reverse:
            return self.set_sort(self.sort_column, not self.sort_reverse)
        keys = [k for k, _, _ in COLUMNS]
        return self.set_sort(keys[(keys.index(self.sort_column) + 1) % len(keys)], False)
