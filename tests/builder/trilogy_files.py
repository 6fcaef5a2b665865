"""Files laid out as the LCLS "primitive offline event builder" writes them.

The seed's ``filecreate.py`` (docs/eventbuilder.md A.2) is the layout users
bring: ``file1.h5`` holds root datasets ``smalldata`` (S5 red/blue/green), ``timestamp1``
(int32, 0..N-1, contiguous) and ``bigdata1`` (int64 rows, chunks of 4 rows, maxshape
(None, row), grown 4 rows at a time to 4*floor(N/4) rows); ``file2.h5`` ... ``file10.h5``
hold ``timestamp<k>`` and ``bigdata<k>`` for the timestamps a random keep-block/skip-gap
walk keeps. The builder must read these files unchanged, so the tests write them the same
way here (Python 3, seeded, small rows instead of 250000 values).

One deliberate difference: the seed writes the same template row (0..row-1) for every
event, so a payload could not show that the right event was fetched. Here row ``i`` of
file ``k`` is the template plus ``k * 10**12 + timestamp * row`` (``identical=True``
writes the seed's identical rows).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

CHUNK_ROWS = 4  # the seed's chunkSize: "never use an odd number"
COLORS = ("red", "blue", "green")


def kept_timestamps(rng: np.random.Generator, dat_size: int) -> np.ndarray:
    """The seed's thinning walk over 0..dat_size-1: from ``initialindex``, pick ``sel_n`` in
    ``[initialindex, initialindex + bunch)`` and a block of ``[0, max_block)`` timestamps,
    clamped at the end; keep the block; go on from its end."""
    if dat_size == 100:  # the seed's tiny run (filesize 0)
        max_block, bunch = round(0.05 * dat_size), round(dat_size / 5)
    else:
        max_block, bunch = round(0.005 * dat_size), round(dat_size / 100)
    max_block, bunch = max(1, max_block), max(1, bunch)
    kept: list[int] = []
    initial = 0
    while initial < dat_size:
        sel_n = int(rng.integers(initial, initial + bunch))
        block = min(int(rng.integers(0, max_block)), max(0, dat_size - sel_n))
        kept.extend(range(sel_n, sel_n + block))
        initial = sel_n + block
    return np.array(kept, dtype=np.int32)


def _rows(number: int, ts: np.ndarray, row: int, identical: bool) -> np.ndarray:
    template = np.arange(row, dtype=np.int64)
    if identical:
        return np.broadcast_to(template, (len(ts), row)).copy()
    return template + (number * 10**12 + ts.astype(np.int64) * row)[:, None]


def _grow(f: h5py.File, name: str, rows: np.ndarray, row: int) -> None:
    """``bigdata<k>``: chunked (4, row), grown a chunk at a time then row by row, as the seed."""
    d = f.create_dataset(
        name, shape=(0, row), maxshape=(None, row), chunks=(CHUNK_ROWS, row), dtype=np.int64
    )
    whole = len(rows) - len(rows) % CHUNK_ROWS
    for a in range(0, whole, CHUNK_ROWS):
        d.resize(a + CHUNK_ROWS, axis=0)
        d[a : a + CHUNK_ROWS] = rows[a : a + CHUNK_ROWS]
    for a in range(whole, len(rows)):
        d.resize(a + 1, axis=0)
        d[a] = rows[a]


def write_trilogy(
    directory: Path,
    dat_size: int = 100,
    files: int = 10,
    row: int = 16,
    seed: int = 2017,
    identical: bool = False,
) -> list[Path]:
    """Write ``file1.h5`` .. ``file<files>.h5`` into ``directory``; return their paths."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    with h5py.File(directory / "file1.h5", "w") as f:
        colors = rng.choice(COLORS, size=dat_size)
        f.create_dataset("smalldata", data=np.array(colors, dtype="S5"))
        ts = np.arange(dat_size, dtype=np.int32)  # initialindex + i*tsFactor
        f.create_dataset("timestamp1", data=ts, dtype="i")
        grown = CHUNK_ROWS * (dat_size // CHUNK_ROWS)  # bigdata1 grows in whole chunks only
        _grow(f, "bigdata1", _rows(1, ts[:grown], row, identical), row)
    paths.append(directory / "file1.h5")
    for k in range(2, files + 1):
        with h5py.File(directory / f"file{k}.h5", "w") as f:
            ts = kept_timestamps(rng, dat_size)
            f.create_dataset(f"timestamp{k}", data=ts, dtype="i")
            _grow(f, f"bigdata{k}", _rows(k, ts, row, identical), row)
        paths.append(directory / f"file{k}.h5")
    return paths
