"""Hit summaries of the latest propagation events ("not flying blind" in production mode).

The numbers are the engine's ``summarize`` / ``compare`` (engine.propagate.hits); this
module draws them: the event list (photons, hits, efficiency), the selected event's flag
table, terminal counts and histograms, and an A/B view of two events with chi2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.containers import Horizontal, VerticalScroll
from textual.coordinate import Coordinate
from textual.widgets import DataTable, Static

from console.format import bar, plain, printable

if TYPE_CHECKING:  # numpy comes with it: not needed for the first paint
    from engine.api import Comparison, FaceMap, Histogram, HitSummary

PAGE = 10  # events per page (the newest page follows new events)
EVENT_COLUMNS = (
    ("event", "Event"),
    ("photons", "Photons"),
    ("hits", "Hits"),
    ("eff", "Efficiency"),
    ("mode", "Mode"),
)


def _hist(title: str, unit: str, h: Histogram | None, width: int = 24) -> list[Text]:
    if h is None:
        return [Text(f"{title}: no hits", style="dim")]
    out = [Text(f"{title} ({unit})", style="bold")]
    peak = max(h.counts) or 1
    for i, c in enumerate(h.counts):
        t = Text(f"{h.edges[i]:9.2f}..{h.edges[i + 1]:<9.2f} ")
        t.append(bar(c / peak, width), style="cyan")
        t.append(f" {c}")
        out.append(t)
    return out


_SHADES = " .:-=+*#%@"


def _face_map(fm: FaceMap) -> list[Text]:
    """A sensor face's hit map (the engine's 2-D histogram) drawn with shade characters."""
    peak = max(max(r) for r in fm.counts) or 1
    u0, u1, v0, v1 = fm.extent
    out = [
        Text(
            f"hit map {fm.name}: {fm.hits:,} hits, {fm.axes[0]} {u0:g}..{u1:g} across, "
            f"{fm.axes[1]} {v1:g}..{v0:g} down",
            style="bold",
        )
    ]
    n = len(_SHADES) - 2
    for row in fm.counts:
        line = "".join(_SHADES[0 if c == 0 else 1 + min(n, n * c // peak)] for c in row)
        out.append(Text("|" + line + "|", style="cyan"))
    return out


def render_summary(s: HitSummary) -> Group:
    head = Text()
    head.append(f"{s.scene}", style="bold")
    # the device's parenthesised detail (why CUDA was not used) is for `skydeck-engine hits`;
    # the panel keeps the device itself so the line fits
    head.append(f"  {s.mode}  {s.backend} on {s.device.split(' (', 1)[0]}\n", style="dim")
    head.append(f"photons {s.photons:,}  hits {s.hits:,}  efficiency ")
    head.append(f"{s.hit_fraction:.5f} ± {s.hit_fraction_err:.5f}", style="bold green")
    head.append(f"  (hit mask {s.hitmask})")
    if s.photons_per_second:
        head.append(f"\n{s.photons_per_second:,.0f} photons/s", style="dim")
    if s.from_steps:  # Cerenkov / scintillation photons: where the light and the hits came from
        head.append("\nsources  ")
        for k, (ph, h) in s.sources.items():
            head.append(f"{k} ", style="bold")
            head.append(f"{ph:,} ({h:,} hits)  ")
    term = Text("terminal  ")
    for k, v in s.terminal.items():
        term.append(f"{k} {v:,}  ")
    flags = Table(box=None, pad_edge=False, show_edge=False, title=None)
    for col in ("flagmask", "photons", "fraction", "hits"):
        flags.add_column(col, justify="left" if col == "flagmask" else "right")
    for r in s.flagmasks[:12]:
        flags.add_row(r.label, f"{r.count:,}", f"{r.fraction:.4f}", f"{r.hits:,}")
    maps = [line for fm in sorted(s.faces, key=lambda f: -f.hits)[:2] for line in _face_map(fm)]
    if s.sensors:  # a GDML detector: hits per sensor (copynumber), the most hit first
        of = f" of {s.sensors_total:,}" if s.sensors_total is not None else ""
        sens = Text(f"sensors hit {s.sensors_hit:,}{of}; most hit: ", style="bold")
        sens.append("  ".join(f"{sid}:{h:,}" for sid, h in s.sensors[:10]), style="")
        maps.insert(0, sens)
    return Group(
        head,
        term,
        flags,
        *_hist("hit time", "ns", s.time),
        *_hist("hit wavelength", "nm", s.wavelength),
        *maps,
    )


def render_comparison(c: Comparison) -> Group:
    t = Table(box=None, pad_edge=False, show_edge=False)
    for col in ("flagmask", "A", "B", "chi2"):
        t.add_column(col, justify="left" if col == "flagmask" else "right")
    for r in c.flagmasks[:14]:
        t.add_row(
            r.label,
            f"{r.a:,}",
            f"{r.b:,}",
            f"{r.chi2:.2f}" if r.counted else Text(f"{r.chi2:.2f}", style="dim"),
        )
    t.add_row("chi2/ndf", "", "", f"{c.flagmask_chi2:.2f}/{c.flagmask_ndf}")
    head = Text(
        f"A {c.a}\n  photons {c.photons_a:,} hits {c.hits_a:,}\n"
        f"B {c.b}\n  photons {c.photons_b:,} hits {c.hits_b:,}"
    )
    return Group(Text("A/B comparison", style="bold"), head, t)


class HitsPanel(Horizontal):
    """Events on the left; the selected event's summary (or the A/B view) on the right."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.summaries: dict[str, HitSummary | str] = {}
        self.mark_a: str | None = None  # stays marked (A in the list) until `a` unmarks it
        self.mark_b: str | None = None  # the event compared with A, while the A/B view shows
        self.page = 0  # 0: the newest events (live); n: events n*PAGE.. (read on demand)
        self.total: int | None = None  # events in the workspace (known once a page was read)
        self.comparison: Comparison | None = None  # shown instead of a summary when set
        self.shown: str | None = None  # the event whose summary the detail shows

    def compose(self):  # type: ignore[no-untyped-def]
        yield DataTable(id="events", cursor_type="row")
        with VerticalScroll(id="hit-detail"):
            yield Static("no propagation event yet (press P to launch one)", id="hit-summary")

    def on_mount(self) -> None:
        table = self.query_one("#events", DataTable)
        for key, label in EVENT_COLUMNS:
            table.add_column(label, key=key)

    @property
    def table(self) -> DataTable:
        return self.query_one("#events", DataTable)

    @property
    def selected(self) -> str | None:
        t = self.table
        if not t.row_count:
            return None
        try:
            return str(t.coordinate_to_cell_key(Coordinate(t.cursor_row, 0)).row_key.value)
        except Exception:  # noqa: BLE001 - cursor outside the rows while they change
            return None

    def name_cell(self, path: str) -> Text:
        name = printable("/".join(path.rstrip("/").split("/")[-2:]))
        mark = "A " if path == self.mark_a else "B " if path == self.mark_b else "  "
        return Text.assemble((mark, "bold magenta"), name)

    def remark(self) -> None:
        """Redraw the A/B markers (after a mark changed)."""
        for path in self.summaries:
            self.table.update_cell(path, "event", self.name_cell(path))
        self._title()

    def _title(self) -> None:
        first = self.page * PAGE + 1
        of = f" of {self.total}" if self.total is not None else ""
        pair = f"  A {self.mark_a.rsplit('/', 1)[-1]}" if self.mark_a else ""
        pair += f" vs B {self.mark_b.rsplit('/', 1)[-1]}" if self.mark_b else ""
        self.table.border_title = printable(
            f"events {first}-{first + len(self.summaries) - 1}{of} ([ ] page){pair}"
        )

    def apply(self, summaries: dict[str, HitSummary | str]) -> None:
        """Events newest first (path -> summary, or the error text for an unreadable one).

        The cursor stays on the same event (by its path) while new events push rows down,
        and the detail always shows the event under the cursor (or the A/B view while a
        pair is compared): what `a` and `v` act on is what the operator sees. At most a
        page of rows: they are drawn again whole.
        """
        t = self.table
        keep = self.selected
        shown = keep if keep is not None and keep in self.summaries else None
        changed = shown is not None and self.summaries.get(shown) is not summaries.get(shown)
        self.summaries = summaries
        t.clear()
        for path, s in summaries.items():
            name = self.name_cell(path)
            if isinstance(s, str):
                vals = [name, Text("-"), Text("-"), Text(printable(s[:40]), style="red"), Text("-")]
            else:
                vals = [
                    name,
                    Text(f"{s.photons:,}"),
                    Text(f"{s.hits:,}"),
                    Text(f"{s.hit_fraction:.5f}"),
                    plain(s.mode),  # from the event's meta.json: data, never markup
                ]
            t.add_row(*vals, key=path)
        if keep is not None and keep in summaries:
            t.move_cursor(row=t.get_row_index(keep), animate=False)
        self._title()
        if self.comparison is None and (self.selected != shown or changed):
            self.show_selected()

    def show_selected(self) -> None:
        path = self.selected
        out = self.query_one("#hit-summary", Static)
        self.shown = path
        if path is None:
            return
        s = self.summaries.get(path)
        if s is None:
            return
        self.comparison = None
        title = Text.assemble(("event ", "bold"), (printable(path), "bold cyan"))
        if isinstance(s, str):
            out.update(Group(title, Text(printable(s), style="red")))
        else:
            out.update(Group(title, render_summary(s)))

    def unmark(self) -> None:
        """Drop the A/B pair: the detail shows the selected event again."""
        self.mark_a = self.mark_b = None
        self.comparison = None
        self.remark()
        self.show_selected()

    def show_comparison(self, c: Comparison) -> None:
        self.comparison = c
        self.mark_b = str(c.b)
        self.remark()
        self.query_one("#hit-summary", Static).update(render_comparison(c))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if self.comparison is not None:  # the A/B view stays until A is unmarked
            return
        if self.selected != self.shown:  # the same event kept under a moved row: keep its view
            self.show_selected()
