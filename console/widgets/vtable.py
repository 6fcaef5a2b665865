"""A virtual table: rows are keys in an ordered list, and only the lines on screen are drawn.

Why this module exists: Textual's DataTable measures every cell of every row it holds
(``_update_dimensions``) after a ``clear``/``add_rows`` and removes rows one at a time, so
filtering 10,000 downlinks froze the console for a minute and a full rebuild cost ~2 s.
Here a filter or a sort is a new list of keys (Python's ``sorted`` over the model); a frame
renders only the ~40 visible lines, building their cells from the model on the fly, so the
cost of a change does not grow with the screen and a 10,000-row filter is a few
milliseconds. Cells are ``rich.text.Text`` (never parsed as markup). The header row stays
on top and shows the sort column with ▲ or ▼; a click on a header picks the sort column.
The cursor follows a *key*: when rows move, it stays on the same row; when a filter hides
that row, it moves to the row now nearest to where it was. Space marks rows for bulk
actions.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, ClassVar

from rich.segment import Segment
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

GAP = 1  # spaces between columns


class VirtualTable(ScrollView, can_focus=True):
    """Rows by key; subclasses give the cells of a key (``row_cells``)."""

    COLUMNS: ClassVar[tuple[tuple[str, str, int], ...]] = ()  # (key, label, width)
    BINDINGS: ClassVar = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "edge(0)", "First", show=False),
        Binding("end", "edge(1)", "Last", show=False),
        Binding("enter", "select", "Select", show=False),
        Binding("space", "mark", "Mark", show=False),
    ]
    DEFAULT_CSS = """
    VirtualTable { background: $surface; }
    """

    class Highlighted(Message):
        """The row under the cursor is now ``key`` (None: no rows)."""

        def __init__(self, table: VirtualTable, key: str | None) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> VirtualTable:
            return self.table

    class Selected(Highlighted):
        """Enter on the row ``key``."""

    class HeaderClicked(Message):
        def __init__(self, table: VirtualTable, column: str) -> None:
            super().__init__()
            self.table = table
            self.column = column

        @property
        def control(self) -> VirtualTable:
            return self.table

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.keys: list[str] = []  # visible rows, in display order
        self.index: dict[str, int] = {}  # key -> position in ``keys``
        self.cursor_row = 0
        self.marked: set[str] = set()
        self.sort_column = ""
        self.sort_reverse = False
        self.moved_by_user = False  # the operator moved the cursor (no more following row 0)
        self._announced: str | None = None
        self._strips: dict[Hashable, Strip] = {}  # drawn lines, by what they depend on
        self._width = sum(w for _, _, w in self.COLUMNS) + GAP * len(self.COLUMNS) + 1

    # ------------------------------------------------------------------ to override

    def row_cells(self, key: str) -> Iterable[Text]:
        """The cells of row ``key`` in column order."""
        raise NotImplementedError

    def row_version(self, key: str) -> Hashable | None:
        """What row ``key``'s cells are a function of (its drawn line is cached under it);
        None: not cached."""
        return None

    # ------------------------------------------------------------------ rows

    @property
    def row_count(self) -> int:
        return len(self.keys)

    @property
    def selected_key(self) -> str | None:
        if not self.keys:
            return None
        return self.keys[min(self.cursor_row, len(self.keys) - 1)]

    def set_rows(self, keys: list[str], follow_top: bool = False) -> None:
        """Show ``keys`` in this order. The cursor keeps its key; when that key is gone it
        moves to the row now at its old position (clamped); ``follow_top`` keeps it on
        the first row (the newest, while the operator has not moved it)."""
        keep = self.selected_key
        old_row = self.cursor_row
        self.keys = keys
        self.index = {k: i for i, k in enumerate(keys)}
        self.marked &= self.index.keys()
        if follow_top:
            row = 0
        elif keep is not None and keep in self.index:
            row = self.index[keep]
        else:
            row = min(old_row, max(0, len(keys) - 1))
        self._resize(Size(self._width, len(keys) + 1))
        self._set_cursor(row, scroll=True)
        self.refresh()

    def widths(self) -> list[int]:
        """Column widths: as declared, the last one takes what the widget has to spare
        (a note or a reason, the longest text, gets the room a wide terminal gives)."""
        ws = [w for _, _, w in self.COLUMNS]
        spare = self.scrollable_content_region.width - self._width
        if ws and spare > 0:
            ws[-1] += spare
        return ws

    def _resize(self, new: Size) -> None:
        """A new virtual size; a layout of the screen only when the scrollbar comes or goes
        (a layout costs more than the whole filter)."""
        old = self.virtual_size
        if new == old:
            return
        height = self.size.height
        if old.height and (new.height > height) == (old.height > height):
            self.set_reactive(VirtualTable.virtual_size, new)
            self._scroll_update(new)
        else:
            self.virtual_size = new

    def _set_cursor(self, row: int, scroll: bool = True) -> None:
        row = max(0, min(row, len(self.keys) - 1)) if self.keys else 0
        changed = row != self.cursor_row
        self.cursor_row = row
        if scroll and self.keys:
            self._scroll_to_cursor()
        if changed:
            self.refresh()
        key = self.selected_key
        if key != self._announced:
            self._announced = key
            self.post_message(self.Highlighted(self, key))

    def _scroll_to_cursor(self) -> None:
        body = max(1, self.scrollable_content_region.height - 1)
        top = int(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False, immediate=True)
        elif self.cursor_row >= top + body:
            self.scroll_to(y=self.cursor_row - body + 1, animate=False, immediate=True)

    def move_cursor(self, row: int) -> None:
        self._set_cursor(row)

    def move_to_key(self, key: str) -> bool:
        if key not in self.index:
            return False
        self._set_cursor(self.index[key])
        return True

    def get_cell(self, key: str, column: str) -> Text:
        cols = [c for c, _, _ in self.COLUMNS]
        return list(self.row_cells(key))[cols.index(column)]

    def refresh_keys(self, keys: Iterable[str]) -> None:
        """Redraw the lines of ``keys`` when they are on screen."""
        top = int(self.scroll_y)
        for k in keys:
            i = self.index.get(k)
            if i is not None and top <= i < top + self.scrollable_content_region.height:
                self.refresh_line(i - top + 1)

    # ------------------------------------------------------------------ actions

    def action_cursor(self, step: int) -> None:
        self.moved_by_user = True
        self._set_cursor(self.cursor_row + step)

    def action_page(self, step: int) -> None:
        self.moved_by_user = True
        self._set_cursor(self.cursor_row + step * max(1, self.scrollable_content_region.height - 2))

    def action_edge(self, end: int) -> None:
        self.moved_by_user = bool(end)
        self._set_cursor(len(self.keys) - 1 if end else 0)

    def action_select(self) -> None:
        self.post_message(self.Selected(self, self.selected_key))

    def action_mark(self) -> None:
        key = self.selected_key
        if key is None:
            return
        self.marked ^= {key}
        self.moved_by_user = True
        self._set_cursor(self.cursor_row + 1)
        self.refresh()

    def clear_marks(self) -> None:
        if self.marked:
            self.marked.clear()
            self.refresh()

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        if offset.y == 0:
            x = offset.x + int(self.scroll_x)
            pos = 0
            for (key, _, _), width in zip(self.COLUMNS, self.widths(), strict=True):
                if pos <= x < pos + width + GAP:
                    self.post_message(self.HeaderClicked(self, key))
                    return
                pos += width + GAP
            return
        row = int(self.scroll_y) + offset.y - 1
        if 0 <= row < len(self.keys):
            self.moved_by_user = True
            self._set_cursor(row)
            if event.chain == 2:
                self.action_select()

    # ------------------------------------------------------------------ drawing

    def _header(self) -> Text:
        line = Text(" ", style="bold")
        for (key, label, _), width in zip(self.COLUMNS, self.widths(), strict=True):
            if key == self.sort_column:
                label = f"{label}{'▼' if self.sort_reverse else '▲'}"
            cell = Text(label, style="bold reverse" if key == self.sort_column else "bold")
            cell.truncate(width, overflow="ellipsis", pad=True)
            line.append_text(cell)
            line.append(" " * GAP)
        return line

    def _line(self, row: int) -> Text:
        key = self.keys[row]
        mark = "●" if key in self.marked else " "
        line = Text(mark, style="bold magenta")
        for cell, width in zip(self.row_cells(key), self.widths(), strict=False):
            c = cell.copy()
            c.end = ""
            c.no_wrap = True
            c.truncate(width, overflow="ellipsis", pad=True)
            line.append_text(c)
            line.append(" " * GAP)
        if row == self.cursor_row:
            line.stylize("reverse bold" if self.has_focus else "reverse")
        elif row % 2:
            line.stylize("on #1c2230")
        return line

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        x = int(self.scroll_x)
        cache_key: Hashable | None = None
        if y == 0:
            text = self._header()
        else:
            row = int(self.scroll_y) + y - 1
            if row >= len(self.keys):
                return Strip.blank(width, base)
            key = self.keys[row]
            version = self.row_version(key)
            if version is not None:
                look = (row == self.cursor_row, self.has_focus, row % 2, key in self.marked)
                cache_key = (key, version, look, x, width, base)
                hit = self._strips.get(cache_key)
                if hit is not None:
                    return hit
            text = self._line(row)
        segments = list(text.render(self.app.console, end=""))
        strip = Strip(Segment.apply_style(segments, base), text.cell_len)
        strip = strip.crop_extend(x, x + width, base)
        if cache_key is not None:
            if len(self._strips) > 4000:
                self._strips.clear()
            self._strips[cache_key] = strip
        return strip

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        self.refresh()
