"""The bounds of a mock delivery (`skydeck-engine mock`), enforced by ``delivery``.

Here, in a module that imports nothing, because ``mock --help`` shows them and must not
import h5py and NumPy for it.
"""

from __future__ import annotations

MAX_EVENTS = 100_000_000  # per-event arrays (timestamps, runs, colors) are held in memory
MAX_EVENT_BYTES = 1 << 30  # one event's payload is written (and held) whole
GENSTEP_KINDS = ("torch", "cerenkov", "scintillation")  # what --gensteps-kind delivers
