"""What a build reports: its summary (`build --json`) and the wall time of each phase.

The phases ("where time goes", docs/benchmarks.md) are measured where the work happens, by one
``PhaseClock`` that the serial and the MPI drivers (``engine.builder.protocol``) both use:

- ``plan``: validate the inputs, open every source, read timestamps and the small data a
  selection names, select, match, save ``--index-out``, check the free space;
- ``create``: create the output under its temporary name: attributes, timestamps, runs, the
  per-source row indices, the payload datasets allocated up front;
- ``copy``: the payload rows, read and written by the workers (opening their sources,
  every batch, the last write-behind);
- ``finalise``: fsync the output, rename it into place, fsync its directory.

The index and the attributes the issue lists under "finalise" are written in ``create``:
the payload's byte offsets must be fixed before any worker writes, so every piece of HDF5
metadata is written first and none after. Under MPI the root reports its own wall-clock
split: ``plan``, ``create`` and ``finalise`` run on rank 0 alone, and ``copy`` runs from
the barrier before the first batch to the barrier after the last, so it is the slowest
rank's copy. ``wall_s`` runs from the call to ``build()`` to the output in place; the
phases never sum to more (the broadcast of the plan and the barriers lie between them).
Interpreter start and imports happen before ``build()`` and are in no figure here.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

PHASES = ("plan", "create", "copy", "finalise")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB


class PhaseClock:
    """Wall seconds per named phase, plus counts (rows, bytes) a phase reports."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.phases: dict[str, dict[str, float | int]] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[dict[str, float | int]]:
        """Time the block as phase ``name``; the block may add counts to the dict it gets."""
        entry: dict[str, float | int] = {"seconds": 0.0}
        t = time.perf_counter()
        try:
            yield entry
        finally:
            entry["seconds"] = time.perf_counter() - t
            self.phases[name] = entry

    def wall(self) -> float:
        return time.perf_counter() - self.t0


@dataclass
class BuildReport:
    output: str
    events: int
    sources: list[str]
    selection: str
    ranks: int
    workers: int
    batch: int
    batches: int
    bytes_read: int
    bytes_written: int
    elapsed_s: float  # the payload copy (the slowest rank's): what gb_per_s divides by
    events_per_s: float = 0.0
    gb_per_s: float = 0.0
    per_rank_bytes: list[int] = field(default_factory=list)
    peak_rss_bytes: list[int] = field(default_factory=list)  # per worker rank
    wall_s: float = 0.0  # from the call to build() to the output in place (rank 0)
    phases: dict[str, dict[str, float | int]] = field(default_factory=dict)  # see PHASES

    def finish(self, clock: PhaseClock | None = None) -> BuildReport:
        el = max(self.elapsed_s, 1e-9)
        self.events_per_s = self.events / el
        self.gb_per_s = self.bytes_read / el / 1e9
        if clock is not None:
            self.phases = {k: clock.phases[k] for k in PHASES if k in clock.phases}
            self.wall_s = clock.wall()
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
