"""Lock files with owner, age and the engine's stale verdict (k9s-style table, diffed)."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from textual.widgets import DataTable

from console.format import age
from engine.api import LockInfo

# fixed widths: no re-measuring on updates, and a picture that does not depend on timing
COLUMNS = (("name", "Lock", 22), ("kind", "Kind", 10), ("owner", "Owner", 24),
           ("what", "Process", 26), ("age", "Age", 5), ("verdict", "Verdict", 90))


def cells(i: LockInfo, now: float) -> dict[str, object]:
    created_age = now - i.created if i.created is not None else i.age_s
    verdict = Text("STALE: " if i.stale else "held: ", style="bold red" if i.stale else "green")
    verdict.append(i.reason, style="red" if i.stale else "")
    if not i.stale and i.host and "another host" in i.reason:
        verdict.stylize("bold yellow")
    return {"name": i.name, "kind": i.kind, "owner": i.owner,
            "what": f"{i.process or '-'} {i.stream or ''}".strip(), "age": age(created_age),
            "verdict": verdict}


class LocksTable(DataTable):
    def __init__(self, clock: Callable[[], float] = time.time, **kw: object) -> None:
        super().__init__(cursor_type="row", **kw)  # type: ignore[arg-type]
        self.clock = clock
        self.infos: dict[str, LockInfo] = {}
        self.shown: dict[str, dict[str, object]] = {}

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, key=key, width=width)

    @property
    def selected(self) -> LockInfo | None:
        if not self.shown:
            return None
        try:
            key = self.coordinate_to_cell_key((self.cursor_row, 0)).row_key.value
        except Exception:  # noqa: BLE001 - cursor outside the rows while they change
            return None
        return self.infos.get(str(key))

    def apply(self, infos: list[LockInfo]) -> None:
        now = self.clock()
        self.infos = {i.name: i for i in infos}
        for gone in [k for k in self.shown if k not in self.infos]:
            self.remove_row(gone)
            del self.shown[gone]
        for name, info in self.infos.items():
            new = cells(info, now)
            old = self.shown.get(name)
            if old is None:
                self.add_row(*new.values(), key=name)
                self.shown[name] = new
                continue
            for col, value in new.items():
                if old[col] != value:
                    self.update_cell(name, col, value)
                    old[col] = value
        self.border_title = f"Locks ({len(infos)}, {sum(i.stale for i in infos)} stale)"

    def tick(self) -> None:
        now = self.clock()
        for name, info in self.infos.items():
            a = cells(info, now)["age"]
            if name in self.shown and self.shown[name]["age"] != a:
                self.update_cell(name, "age", a)
                self.shown[name]["age"] = a
