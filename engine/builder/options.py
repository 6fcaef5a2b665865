"""What a build is asked to do: the options of `skydeck-engine build` and their limits.

One plain dataclass that the CLI fills and every other builder module reads, so planning,
batch I/O and the MPI protocol never look at argparse or the environment for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.builder.limits import MAX_BATCH
from engine.core.errors import BadInput


@dataclass
class BuildOptions:
    inputs: list[Path]
    output: Path
    select: str | None = None
    batch: int = 64
    timestamp_path: str = "/timestamp"
    data_path: str = "/data"
    smalldata_path: str = "/smalldata"
    principal: str | None = None
    retdef: Path | None = None
    index_in: Path | None = None
    index_out: Path | None = None
    reserve: int = 0
    io_threads: int = 0  # threads per process for kernel copies; 0 = cores (1 per MPI worker)


def check_batch(batch: int) -> None:
    """Refuse a batch size outside 1..MAX_BATCH before anything is opened."""
    if not 1 <= batch <= MAX_BATCH:
        raise BadInput(f"--batch must be within 1..{MAX_BATCH}")
