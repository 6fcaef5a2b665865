"""Memory a read may take: what this machine has available now, and the checks that refuse
an input whose declared size it cannot hold before anything is allocated.

Why in core: the event builder (saved match tables, whole datasets) and propagation
(gensteps) both read files that declare their own shapes (a 128-byte ``.npy`` header may
declare an exabyte array, which NumPy allocates before reading into it), so the check sits
below both, beside ``diskspace`` (the same question for the disk). NumPy is imported only by
the function that parses a ``.npy`` header.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import IO

from engine.core.diskspace import human_bytes
from engine.core.errors import BadInput


def available_memory() -> int:
    """Bytes of memory available now: the kernel's ``MemAvailable`` (what psutil reports on
    Linux), read from /proc/meminfo without importing psutil, which every build would pay
    for at start-up; psutil where /proc/meminfo has no such line."""
    try:
        with open("/proc/meminfo", "rb") as fh:
            for line in fh:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    import psutil

    return int(psutil.virtual_memory().available)


def check_memory(need: int, what: str, path: Path | str | None = None) -> None:
    """BadInput when ``need`` bytes exceed the memory this machine has available now."""
    avail = available_memory()
    if need > avail:
        raise BadInput(
            f"{what} needs {human_bytes(need)} of memory; {human_bytes(avail)} is available", path
        )


def check_npy_header(fh: IO[bytes], holds: int, what: str, path: Path | str) -> None:
    """The shape a ``.npy`` header declares must fit the ``holds`` bytes that follow it and
    this machine's memory: NumPy allocates the declared array before reading into it."""
    import numpy as np  # only the readers of .npy files pay for it

    try:
        major, _ = np.lib.format.read_magic(fh)
        read = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read(fh)
    except (ValueError, OSError, EOFError) as err:
        raise BadInput(
            f"{what}: not a .npy array ({str(err).splitlines()[0] if str(err) else err!r})", path
        ) from None
    need = math.prod(shape) * dtype.itemsize
    if need > holds - fh.tell():
        raise BadInput(
            f"{what} declares shape {shape} ({human_bytes(need)}) but holds "
            f"{human_bytes(max(0, holds - fh.tell()))}",
            path,
        )
    check_memory(need, f"reading {what}", path)
