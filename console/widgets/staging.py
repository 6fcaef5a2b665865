"""Staging-directory usage: bars per area and per downlink, free space against the reserve.

The numbers are the engine's ``usage_report`` (one scan, each file visited once) and, below
the areas, what the next prune would free (``prune_preview``, read with the scan); the
panel only draws them. Under disk pressure (free space under twice the reserve) a red alert line
says so, and when free space is under the reserve it says that launching is paused, which is
what the engine does (``launch_paused``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from console.format import bar, size
from engine.api import human_bytes

if TYPE_CHECKING:  # types only: retention's module tree is not needed for the first paint
    from engine.api import PrunePlan, UsageReport

PRESSURE_FACTOR = 2.0


def pressure(rep: UsageReport) -> str | None:
    """The alert text under disk pressure, else None."""
    if rep.paused:
        return (
            f"DISK PRESSURE: free {human_bytes(rep.free)} is under the reserve "
            f"{human_bytes(rep.reserve)}: launching is PAUSED"
        )
    if rep.reserve and rep.free < PRESSURE_FACTOR * rep.reserve:
        return (
            f"DISK PRESSURE: free {human_bytes(rep.free)} is close to the reserve "
            f"{human_bytes(rep.reserve)}"
        )
    return None


def prune_line(plan: PrunePlan) -> Text:
    """What the next prune would free, per area (``engine.api.prune_preview``)."""
    parts = []
    for area, t in plan.totals().items():
        if t.files or t.rows:
            what = f"{t.rows} rows" if area == "events" else f"{t.files} files"
            parts.append(f"{area} {human_bytes(t.bytes)} ({what})")
    if not parts:
        return Text("next prune frees nothing ([retention] in skydeck.toml)", style="dim")
    return Text(f"next prune frees {human_bytes(plan.bytes)}: " + ", ".join(parts))


def render(rep: UsageReport, limit: int = 30, prune: PrunePlan | None = None) -> Group:
    parts: list[object] = []
    alert = pressure(rep)
    if alert:
        parts.append(Text(f" {alert} ", style="bold white on red"))
    used = rep.total - rep.free
    line = Text("disk ")
    line.append(bar(used / rep.total if rep.total else 0, 30), style="red" if alert else "green")
    line.append(
        f" used {human_bytes(used)} of {human_bytes(rep.total)}; free "
        f"{human_bytes(rep.free)}; reserve {human_bytes(rep.reserve)}"
    )
    parts.append(line)
    areas = Table(box=None, pad_edge=False, show_edge=False, expand=False)
    for col in ("area", "usage", "", "files"):
        areas.add_column(col, justify="right" if col in ("usage", "files") else "left")
    biggest = max([u.bytes for u in rep.areas.values()] + [1])
    for area, u in rep.areas.items():
        areas.add_row(area, size(u.bytes), bar(u.bytes / biggest, 20), str(u.files))
    parts.append(areas)
    if prune is not None:
        parts.append(prune_line(prune))
    if rep.downlinks:
        per = Table(box=None, pad_edge=False, show_edge=False, expand=False)
        for col in ("downlink", "incoming", "downlinks", "stage", "total", ""):
            per.add_column(col, justify="left" if col in ("downlink", "") else "right")
        totals = {d: sum(u.bytes for u in parts_.values()) for d, parts_ in rep.downlinks.items()}
        top = max(totals.values()) or 1
        for dlid in sorted(totals, key=lambda d: -totals[d])[:limit]:
            p = rep.downlinks[dlid]
            per.add_row(
                dlid,
                *(size(p[k].bytes) if k in p else "-" for k in ("incoming", "downlinks", "stage")),
                size(totals[dlid]),
                bar(totals[dlid] / top, 20),
            )
        if len(totals) > limit:
            per.add_row(f"... {len(totals) - limit} more", "", "", "", "", "")
        parts.append(Text(""))
        parts.append(per)
    return Group(*parts)  # type: ignore[arg-type]


class StagingPanel(Static):
    def __init__(self, **kw: object) -> None:
        super().__init__("scanning usage ...", **kw)  # type: ignore[arg-type]
        self.report: UsageReport | None = None
        self.prune: PrunePlan | None = None

    def show(self, rep: UsageReport, prune: PrunePlan | None = None) -> None:
        self.report, self.prune = rep, prune
        self.set_class(pressure(rep) is not None, "pressure")
        self.update(render(rep, prune=prune))
