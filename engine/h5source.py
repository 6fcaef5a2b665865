"""Level-0 source files: open, validate and describe them (DESIGN.md, "Data contracts").

Every check the builder relies on happens here, before any output exists, so bad input
ends as one line naming the file: not HDF5 or truncated, a missing dataset, length
mismatch, timestamps that are not 1-D integers or not strictly increasing.

Shapes and dtypes are declared by the file, so they are checked before anything is read
or allocated (``check_storage``): a 1.6 kB file may declare 2**40 rows. A dataset that is
read whole (timestamps, small data, a saved match table) must store what it declares
(unless compressed) and fit in the memory this machine has available; no dataset may keep
its data outside the file (external or virtual layouts) or end beyond the file's end.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import h5py
import numpy as np
import psutil

from engine.diskspace import human_bytes
from engine.errors import BadInput
from engine.inputs import check_regular

_LAYOUTS = (h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED)


@dataclass
class SourceInfo:
    """What the builder needs to know of one source file (cheap to send to MPI workers)."""

    path: str
    name: str
    n: int
    row_shape: tuple[int, ...]
    dtype: str
    chunk_rows: int
    timestamp_path: str
    data_path: str
    smalldata: list[str] = field(default_factory=list)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.row_shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def open_h5(path: Path) -> h5py.File:
    check_regular(path)  # a FIFO would block HDF5's open forever
    try:
        return h5py.File(path, "r")
    except OSError as err:
        text = str(err)
        if "truncated" in text:
            raise BadInput("truncated HDF5 file", path) from None
        if "signature" in text or "not an HDF5" in text.lower():
            raise BadInput("not an HDF5 file", path) from None
        raise BadInput(f"cannot open HDF5 file: {text.splitlines()[0]}", path) from None


def check_memory(need: int, what: str, path: Path | str | None = None) -> None:
    """BadInput when ``need`` bytes exceed the memory this machine has available now."""
    avail = psutil.virtual_memory().available
    if need > avail:
        raise BadInput(f"{what} needs {human_bytes(need)} of memory; {human_bytes(avail)} is available", path)


def check_npy_header(fh: BinaryIO, holds: int, what: str, path: Path | str) -> None:
    """The shape a ``.npy`` header declares must fit the ``holds`` bytes that follow it and
    this machine's memory: NumPy allocates the declared array before reading into it."""
    try:
        major, _ = np.lib.format.read_magic(fh)
        read = (np.lib.format.read_array_header_1_0 if major == 1
                else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read(fh)
    except (ValueError, OSError, EOFError) as err:
        raise BadInput(f"{what}: not a .npy array ({str(err).splitlines()[0] if str(err) else err!r})",
                       path) from None
    need = math.prod(shape) * dtype.itemsize
    if need > holds - fh.tell():
        raise BadInput(f"{what} declares shape {shape} ({human_bytes(need)}) but holds "
                       f"{human_bytes(max(0, holds - fh.tell()))}", path)
    check_memory(need, f"reading {what}", path)


def check_storage(ds: h5py.Dataset, path: Path | str, dspath: str, whole: bool) -> int:
    """Check a dataset's declared size against the bytes the file really holds (and, when
    it is to be read ``whole``, against memory) before reading it; return the declared bytes."""
    if ds.shape is None:
        raise BadInput(f"{dspath} is an empty (null) dataspace", path)
    dcpl = ds.id.get_create_plist()
    if dcpl.get_layout() not in _LAYOUTS or dcpl.get_external_count():
        raise BadInput(f"{dspath} keeps its data outside this file (external or virtual); "
                       "not supported", path)
    declared = int(ds.size) * ds.dtype.itemsize
    stored = int(ds.id.get_storage_size())
    size = os.path.getsize(path)
    offset = ds.id.get_offset() if dcpl.get_layout() == h5py.h5d.CONTIGUOUS else None
    if stored > size or (offset is not None and offset + stored > size):
        raise BadInput(f"{dspath} ends beyond the file's {size} bytes (truncated?)", path)
    if whole:
        if dcpl.get_nfilters() == 0 and declared > stored:
            raise BadInput(f"{dspath} declares shape {ds.shape} ({human_bytes(declared)}) but the file "
                           f"stores only {human_bytes(stored)} of it", path)
        check_memory(declared, f"reading {dspath} of shape {ds.shape}", path)
    return declared


def check_timestamps(ts: np.ndarray, path: Path | str, dspath: str) -> None:
    if ts.ndim != 1:
        raise BadInput(f"{dspath} must be 1-D, has shape {ts.shape}", path)
    if ts.dtype.kind not in "iu":
        raise BadInput(f"{dspath} must hold integers, has dtype {ts.dtype}", path)
    if ts.dtype.kind == "i" and len(ts) and ts.min() < 0:
        raise BadInput(f"{dspath} holds negative values", path)
    if len(ts) > 1:
        bad = np.flatnonzero(ts[1:] <= ts[:-1])
        if len(bad):
            i = int(bad[0])
            kind = "duplicate" if ts[i] == ts[i + 1] else "unsorted"
            raise BadInput(f"{kind} timestamps in {dspath} at rows {i} and {i + 1} "
                           f"({int(ts[i])}, {int(ts[i + 1])}); they must be strictly increasing", path)


def describe(path: Path, timestamp_path: str = "/timestamp", data_path: str = "/data",
             smalldata_path: str = "/smalldata") -> tuple[SourceInfo, np.ndarray]:
    """Validate one source file and return its description and timestamps."""
    with open_h5(path) as f:
        for dspath in (timestamp_path, data_path):
            obj = f.get(dspath)
            if obj is None:
                raise BadInput(f"missing dataset {dspath}", path)
            if not isinstance(obj, h5py.Dataset):
                raise BadInput(f"{dspath} is not a dataset", path)
        tsd, dd = f[timestamp_path], f[data_path]
        check_storage(dd, path, data_path, whole=False)
        if tsd.shape is not None and len(tsd.shape) != 1:  # a scalar is no list of timestamps
            raise BadInput(f"{timestamp_path} must be 1-D, has shape {tsd.shape}", path)
        if tsd.dtype.kind not in "iu":
            raise BadInput(f"{timestamp_path} must hold integers, has dtype {tsd.dtype}", path)
        check_storage(tsd, path, timestamp_path, whole=True)
        if dd.ndim < 1 or dd.shape[0] != tsd.shape[0]:
            raise BadInput(f"length mismatch: {timestamp_path} has {tsd.shape[0]} rows, "
                           f"{data_path} has {dd.shape[0] if dd.ndim else 0}", path)
        try:
            ts = tsd[()]
        except OSError as err:
            raise BadInput(f"cannot read {timestamp_path}: {str(err).splitlines()[0]}", path) from None
        check_timestamps(ts, path, timestamp_path)
        small = []
        g = f.get(smalldata_path)
        if isinstance(g, h5py.Group):
            small = sorted(k for k, v in g.items() if isinstance(v, h5py.Dataset))
        chunk_rows = dd.chunks[0] if dd.chunks else max(1, (1 << 20) // max(1, dd.dtype.itemsize * int(np.prod(dd.shape[1:], dtype=np.int64))))
        info = SourceInfo(path=str(path), name=path.stem, n=len(ts), row_shape=tuple(dd.shape[1:]),
                          dtype=dd.dtype.str, chunk_rows=int(chunk_rows),
                          timestamp_path=timestamp_path, data_path=data_path, smalldata=small)
    return info, ts.astype(np.uint64, copy=False)


def read_smalldata(info: SourceInfo, smalldata_path: str = "/smalldata") -> dict[str, np.ndarray]:
    """All small-data fields of the principal source (1-D arrays aligned with its timestamps)."""
    out: dict[str, np.ndarray] = {}
    path = Path(info.path)
    with open_h5(path) as f:
        g = f[smalldata_path]
        for key in info.smalldata:
            ds = g[key]
            if ds.shape != (info.n,):
                raise BadInput(f"{smalldata_path}/{key} has shape {ds.shape}, expected ({info.n},)", path)
            check_storage(ds, path, f"{smalldata_path}/{key}", whole=True)
            try:
                out[key] = ds[()]
            except OSError as err:
                raise BadInput(f"cannot read {smalldata_path}/{key}: {str(err).splitlines()[0]}",
                               path) from None
    return out
