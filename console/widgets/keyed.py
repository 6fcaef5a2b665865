"""A table whose rows are keyed and updated in place, cell by cell (the locks).

Why this module exists: a refresh must not rebuild a table (DataTable's ``clear`` drops
every cache and the cursor; ``add_row`` and ``update_cell`` are O(1)). The locks table keeps
the cells it shows per row key, adds new rows, removes rows that vanished and touches only
cells whose value changed. (The downlinks, which a filter hides by the thousand, are a
virtual table instead: console.widgets.vtable.) Columns have fixed widths, so an update
never re-measures them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container
from typing import Any, ClassVar

from textual.coordinate import Coordinate
from textual.widgets import DataTable


class KeyedTable(DataTable):  # type: ignore[type-arg]
    """Rows keyed by a string; ``shown`` holds the cells on screen per key and column."""

    COLUMNS: ClassVar[tuple[tuple[str, str, int], ...]] = ()  # (key, label, width)

    def __init__(self, clock: Callable[[], float] = time.time, **kw: Any) -> None:
        super().__init__(cursor_type="row", **kw)
        self.clock = clock
        self.shown: dict[str, dict[str, object]] = {}

    def on_mount(self) -> None:
        for key, label, width in self.COLUMNS:
            self.add_column(label, key=key, width=width)

    @property
    def selected_key(self) -> str | None:
        """The key of the row under the cursor (None: no rows, or the cursor is outside)."""
        if not self.shown or self.cursor_row < 0:
            return None
        try:
            key = self.coordinate_to_cell_key(Coordinate(self.cursor_row, 0)).row_key.value
        except Exception:  # noqa: BLE001 - cursor outside the rows while they change
            return None
        return None if key is None else str(key)

    def drop_except(self, keep: Container[str]) -> None:
        """Remove the shown rows whose key is not in ``keep`` (one by one: it is rare)."""
        for gone in [k for k in self.shown if k not in keep]:
            self.remove_row(gone)
            del self.shown[gone]

    def put(self, key: str, cells: dict[str, object]) -> int:
        """Show ``cells`` as row ``key`` (added, or only its changed cells updated); returns
        how many cells changed."""
        old = self.shown.get(key)
        if old is None:
            self.add_row(*cells.values(), key=key)
            self.shown[key] = cells
            return len(cells)
        changed = 0
        for col, value in cells.items():
            if old[col] != value:
                self.update_cell(key, col, value)
                old[col] = value
                changed += 1
        return changed

    def set_cell(self, key: str, col: str, value: object) -> None:
        """Update one shown cell when its value changed (e.g. an age moving each second)."""
        old = self.shown.get(key)
        if old is not None and old[col] != value:
            self.update_cell(key, col, value)
            old[col] = value
