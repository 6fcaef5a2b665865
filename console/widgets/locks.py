"""Lock files with owner, age and the engine's stale verdict (k9s-style table, diffed)."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text

from console.format import age, plain, printable
from console.widgets.keyed import KeyedTable
from engine.api import LockInfo

# fixed widths: no re-measuring on updates, and a picture that does not depend on timing
COLUMNS = (
    ("name", "Lock", 20),
    ("kind", "Kind", 7),
    ("owner", "Owner", 20),
    ("what", "Process", 20),
    ("age", "Age", 4),
    ("verdict", "Verdict", 90),
)


def cells(i: LockInfo, now: float) -> dict[str, object]:
    created_age = now - i.created if i.created is not None else i.age_s
    verdict = Text("STALE: " if i.stale else "held: ", style="bold red" if i.stale else "green")
    verdict.append(printable(i.reason), style="red" if i.stale else "")
    if not i.stale and i.host and "another host" in i.reason:
        verdict.stylize("bold yellow")
    return {  # Text, never a str: DataTable parses a str cell as markup, and these are data
        "name": plain(i.name),
        "kind": plain(i.kind),
        "owner": plain(i.owner),
        "what": plain(f"{i.process or '-'} {i.stream or ''}".strip()),
        "age": Text(age(created_age)),
        "verdict": verdict,
    }


class LocksTable(KeyedTable):
    """One row per lock file, keyed by its name; ``apply`` is the only way rows change."""

    COLUMNS = COLUMNS

    def __init__(self, clock: Callable[[], float] = time.time, **kw: object) -> None:
        super().__init__(clock, **kw)
        self.infos: dict[str, LockInfo] = {}

    @property
    def selected(self) -> LockInfo | None:
        key = self.selected_key
        return None if key is None else self.infos.get(key)

    def apply(self, infos: list[LockInfo]) -> None:
        now = self.clock()
        self.infos = {i.name: i for i in infos}
        self.drop_except(self.infos)
        for name, info in self.infos.items():
            self.put(name, cells(info, now))
        self.border_title = f"Locks ({len(infos)}, {sum(i.stale for i in infos)} stale)"

    def tick(self) -> None:
        now = self.clock()
        for name, info in self.infos.items():
            self.set_cell(name, "age", cells(info, now)["age"])
