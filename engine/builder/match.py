"""Timestamp matching: which row of every source file holds each selected event.

The trilogy scanned every timestamp of every file for each selected event
(``np.where(alt == ts)``, O(N_sel x N_total)) and pickled the result. Timestamps are
sorted, so a sorted search answers each lookup in O(log N): ``np.searchsorted`` (which the
seed itself asks for) over each file's own array, any number of files. The match table can
be saved as HDF5 or NPZ (never pickle) and reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from engine.builder.h5source import check_storage
from engine.core.atomic import atomic_path
from engine.core.errors import BadInput
from engine.core.inputs import check_regular
from engine.core.memory import check_npy_header

MISSING = -1


def match_sorted(wanted: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Row of each ``wanted`` timestamp in the sorted ``timestamps``, -1 where absent."""
    wanted = np.asarray(wanted, dtype=np.uint64)
    timestamps = np.asarray(timestamps, dtype=np.uint64)
    if len(timestamps) == 0:
        return np.full(len(wanted), MISSING, dtype=np.int64)
    pos = np.searchsorted(timestamps, wanted)
    clipped = np.minimum(pos, len(timestamps) - 1)
    found = timestamps[clipped] == wanted
    return np.where(found, pos, MISSING).astype(np.int64)


def match_scan(wanted: np.ndarray, all_timestamps: list[np.ndarray]) -> np.ndarray:
    """The trilogy's first matcher (picklecreate.py v0), kept as the benchmark reference:
    for each selected timestamp, for each file, walk every position and record equal ones,
    without stopping at the match. O(N_sel x N_files x N) Python steps. Its committed bugs
    (a misspelt name, the wrong inner bound, principal indices into the subset) are fixed."""
    rows = np.full((len(all_timestamps), len(wanted)), MISSING, dtype=np.int64)
    lists = [t.tolist() for t in all_timestamps]
    for j, ts in enumerate(wanted.tolist()):
        f = 0
        while f < len(lists):
            stamps = lists[f]
            i = 0
            while i < len(stamps):
                if stamps[i] == ts:
                    rows[f, j] = i
                i += 1
            f += 1
    return rows


def match_naive(wanted: np.ndarray, all_timestamps: list[np.ndarray]) -> np.ndarray:
    """The trilogy's v1 matcher (picklecreate.py ``find_timestamps3``), the second reference:
    concatenate every file's timestamps and ``np.where`` over all of them for each event."""
    alt = np.concatenate(all_timestamps) if all_timestamps else np.empty(0, np.uint64)
    bins = np.cumsum([len(t) for t in all_timestamps])
    left = np.concatenate([[0], bins[:-1]])
    rows = np.full((len(all_timestamps), len(wanted)), MISSING, dtype=np.int64)
    for j, ts in enumerate(wanted):
        flat = np.where(alt == ts)[0]
        files = np.digitize(flat, bins)
        rows[files, j] = flat - left[files]
    return rows


@dataclass
class MatchTable:
    """Selected events (principal order) and their row in every source; row -1 = absent."""

    timestamps: np.ndarray  # (N,) uint64
    run: np.ndarray | None  # (N,) int64 run start (MET s), when the principal has it
    sources: list[str]  # source names, principal first
    paths: list[str]  # source file paths, same order
    lengths: list[int]  # rows per source, to refuse a table built from other files
    rows: np.ndarray  # (S, N) int64

    def __len__(self) -> int:
        return len(self.timestamps)

    def check_inputs(self, paths: list[str], lengths: list[int], where: Path) -> None:
        names = [Path(p).stem for p in paths]
        if sorted(names) != sorted(self.sources):
            raise BadInput(
                f"match table was built for sources {self.sources}, inputs are {names}", where
            )
        mine = dict(zip(self.sources, self.lengths, strict=True))
        for n, ln in zip(names, lengths, strict=True):
            if mine[n] != ln:
                raise BadInput(
                    f"match table expects {mine[n]} rows in source {n!r}, file has {ln}", where
                )

    def save(self, path: Path) -> None:
        arrays: dict[str, Any] = {
            "timestamp": self.timestamps,
            "rows": self.rows,
            "sources": np.array(self.sources, dtype="U"),
            "paths": np.array(self.paths, dtype="U"),
            "lengths": np.array(self.lengths, dtype=np.int64),
        }
        if self.run is not None:
            arrays["run"] = self.run
        suffix = path.suffix.lower()
        try:
            with atomic_path(path) as tmp:
                if suffix == ".npz":
                    with open(tmp, "wb") as fh:
                        np.savez(fh, **arrays)
                elif suffix in (".h5", ".hdf5"):
                    with h5py.File(tmp, "w") as f:
                        for k, v in arrays.items():
                            f.create_dataset(k, data=v.astype("S") if v.dtype.kind == "U" else v)
                else:
                    raise BadInput("index file must end in .npz or .h5", path)
        except OSError as err:
            raise BadInput(f"cannot write index: {err.strerror or err}", path) from None

    @classmethod
    def load(cls, path: Path) -> MatchTable:
        """A saved table; sizes it declares are checked against the file before reading."""
        suffix = path.suffix.lower()
        if suffix not in (".npz", ".h5", ".hdf5"):
            raise BadInput("index file must end in .npz or .h5", path)
        check_regular(path)
        import zipfile  # only builds that read a saved table pay for it (start-up time)

        try:
            if suffix == ".npz":
                _check_npz(path)
                with np.load(path, allow_pickle=False) as z:
                    d = {k: z[k] for k in z.files}
            else:
                with h5py.File(path, "r") as f:
                    d = {}
                    for k, ds in f.items():
                        if not isinstance(ds, h5py.Dataset):
                            raise BadInput(f"index entry {k!r} is not a dataset", path)
                        check_storage(ds, path, k, whole=True)
                        d[k] = ds[()]
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise BadInput(
                f"cannot read index: {str(err).splitlines()[0] if str(err) else err!r}", path
            ) from None
        try:
            txt = [
                [s.decode() if isinstance(s, bytes) else str(s) for s in d[k]]
                for k in ("sources", "paths")
            ]
            return cls(
                timestamps=d["timestamp"].astype(np.uint64),
                run=d.get("run"),
                sources=txt[0],
                paths=txt[1],
                lengths=[int(x) for x in d["lengths"]],
                rows=d["rows"].astype(np.int64),
            )
        except KeyError as err:
            raise BadInput(f"index lacks {err.args[0]!r}", path) from None


def _check_npz(path: Path) -> None:
    """Each member's declared shape must fit the bytes it holds and this machine's memory
    (NumPy allocates the declared array before reading a zip member into it)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            with z.open(info) as fh:
                check_npy_header(fh, info.file_size, info.filename, path)
