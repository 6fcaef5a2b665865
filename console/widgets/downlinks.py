"""The downlinks table: one row per downlink, updated in place, sortable and filterable.

Why in place: a refresh with 10,000 downlinks must not rebuild the table (DataTable's
``clear`` drops every cache and the cursor; ``add_row`` is O(1), ``update_cell`` is O(1)).
``apply`` diffs the new rows against the shown ones and touches only changed cells; rows
that vanished are removed one by one (rare: a downlink is never deleted by the engine).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from rich.text import Text

from console.format import STATE_STYLE, age, size
from console.widgets.keyed import KeyedTable
from engine.api import DownlinkRow

# fixed widths: a 10,000-row update never re-measures columns (update_cell stays O(1))
COLUMNS = (
    ("dlid", "Downlink", 9),
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


ADD_CHUNK = 1000  # rows added per frame on a big first load


def cells(r: DownlinkRow, now: float) -> dict[str, object]:
    return {
        "dlid": r.dlid,
        "date": r.date,
        "state": Text(r.state, style=STATE_STYLE.get(r.state, "")),
        "stream": r.stream if r.execution <= 1 else f"{r.stream} e{r.execution}",
        "chunks": f"{r.chunks_done}/{r.chunks_total}" if r.chunks_total else "-",
        "runs": str(r.runs) if r.runs else "-",
        "bytes": size(r.bytes),
        "age": age(now - r.since),
        "note": Text(r.note[:60], style="bold red" if r.note.startswith("STUCK") else "dim"),
    }


def matches(r: DownlinkRow, pattern: str) -> bool:
    """k9s filter: a regex over id, date, state, stream and note; a leading ``!`` inverts."""
    if not pattern:
        return True
    inverse = pattern.startswith("!")
    pat = pattern[1:] if inverse else pattern
    try:
        rx = re.compile(pat, re.IGNORECASE)
    except re.error:
        rx = re.compile(re.escape(pat), re.IGNORECASE)
    hay = f"{r.dlid} {r.date} {r.state} {r.stream} {r.note}"
    return bool(rx.search(hay)) != inverse


class DownlinksTable(KeyedTable):
    """Rows keyed by downlink id; ``apply`` is the only way rows change."""

    COLUMNS = COLUMNS

    def __init__(self, clock: Callable[[], float] = time.time, **kw: object) -> None:
        super().__init__(clock, zebra_stripes=True, **kw)
        self.model: dict[str, DownlinkRow] = {}
        self.filter = ""
        self.sort_column = "dlid"
        self.sort_reverse = False

    @property
    def selected(self) -> str | None:
        return self.selected_key

    def apply(self, rows: dict[str, DownlinkRow]) -> int:
        """Show ``rows`` (the full current set); returns how many cells changed."""
        before, self.model = self.model, rows
        return self._sync(same=before)

    def _sync(self, force_sort: bool = False, same: dict[str, DownlinkRow] | None = None) -> int:
        """Make the shown rows match the model; rows equal to ``same``'s are skipped."""
        now = self.clock()
        same = same or {}
        changed = 0
        added = 0
        pending = False
        want = {k: r for k, r in self.model.items() if matches(r, self.filter)}
        self.drop_except(want)
        for key, r in want.items():
            old = self.shown.get(key)
            if old is not None and same.get(key) == r:
                continue  # unchanged row: its age column moves in tick()
            if old is None and added >= ADD_CHUNK:
                pending = True  # the rest after the next frame: the UI stays responsive
                continue
            changed += self.put(key, cells(r, now))
            if old is None:
                added += 1
        if pending:
            model = self.model
            self.call_after_refresh(lambda: model is self.model and self._sync(same=model))
        elif added or force_sort or (changed and self.sort_column not in ("dlid", "date")):
            self._sort()
        return changed

    def tick(self) -> None:
        """Advance the age column (called each second); only cells whose text changes."""
        now = self.clock()
        for key in self.shown:
            r = self.model.get(key)
            if r is not None:
                self.set_cell(key, "age", age(now - r.since))

    def _sort(self) -> None:
        if not self.shown:
            return
        keep = self.selected
        fn = SORT_KEYS[self.sort_column]
        self.sort(
            key=lambda vals: fn(self.model[str(vals[0])]) if str(vals[0]) in self.model else "",
            reverse=self.sort_reverse,
        )
        if keep is not None and keep in self.shown:
            self.move_cursor(row=self.get_row_index(keep), animate=False)

    def set_filter(self, pattern: str) -> None:
        self.filter = pattern
        self._sync(force_sort=True)

    def cycle_sort(self, reverse: bool = False) -> str:
        """Next sort column (or flip the order); returns a description for the operator."""
        if reverse:
            self.sort_reverse = not self.sort_reverse
        else:
            keys = [k for k, _, _ in COLUMNS]
            self.sort_column = keys[(keys.index(self.sort_column) + 1) % len(keys)]
        self._sort()
        label = {k: v for k, v, _ in COLUMNS}[self.sort_column]
        return f"sorted by {label} {'descending' if self.sort_reverse else 'ascending'}"
