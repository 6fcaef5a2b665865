"""Level-0 source files: open, validate and describe them (docs/design.md, "Level-0 source files").

Every check the builder relies on happens here, before any output exists, so bad input
ends as one line naming the file: not HDF5 or truncated, a missing dataset, length
mismatch, timestamps that are not 1-D integers or not strictly increasing.

Shapes and dtypes are declared by the file, so they are checked before anything is read
or allocated (``check_storage``): a 1.6 kB file may declare 2**40 rows. A dataset that is
read whole (timestamps, small data, a saved match table) must store what it declares
(unless compressed) and fit in the memory this machine has available; no dataset may keep
its data outside the file (external or virtual layouts) or end beyond the file's end.

Dataset paths may differ per file, as in the seed's own files (``timestamp1`` in
``file1.h5``, ``timestamp2`` in ``file2.h5``): a path template's ``{n}`` is the number that
ends the file's stem (its digits as written) and ``{stem}`` the stem (``expand_path``).
Small data is read per field, only the fields a selection names (``SmallData``), so small
data may sit at the root beside the payload (``--smalldata-path /``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from engine.core.diskspace import human_bytes
from engine.core.errors import BadInput
from engine.core.inputs import check_regular
from engine.core.memory import check_memory

_LAYOUTS = (h5py.h5d.COMPACT, h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED)
# "{{" and "}}" are literal braces; "{name}" a placeholder; any other brace is an error
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_TRAILING_NUMBER = re.compile(r"[0-9]+\Z")
PLACEHOLDERS = ("n", "stem")


def parse_path_template(template: str, what: str) -> list[str | tuple[str]]:
    """Split a dataset path template into literal text and placeholders (1-tuples).

    BadInput for an unknown placeholder, a lone brace, a NUL or text that is not UTF-8
    (HDF5 names are UTF-8): checked once, before any file is opened."""
    if not isinstance(template, str) or not template:
        raise BadInput(f"{what} must be non-empty text, got {template!r}")
    if "\0" in template:
        raise BadInput(f"{what} {template!r} holds a NUL character")
    try:
        template.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(f"{what} {template!r} is not valid UTF-8") from None
    parts: list[str | tuple[str]] = []
    pos = 0
    for m in _TOKEN.finditer(template):
        parts.append(template[pos : m.start()])
        pos = m.end()
        tok = m.group(0)
        if tok in ("{{", "}}"):
            parts.append(tok[0])
        elif m.group(1) in PLACEHOLDERS:
            parts.append((m.group(1),))
        else:
            raise BadInput(
                f"{what} {template!r}: {tok!r} is no placeholder (use {{n}} or {{stem}}; "
                "{{{{ and }}}} for literal braces)"
            )
    parts.append(template[pos:])
    return [p for p in parts if p != ""]


def expand_path(template: str, source: Path, what: str = "dataset path") -> str:
    """The dataset path ``template`` names in ``source``: ``{n}`` is the number that ends the
    file's stem (digits as written: ``file07.h5`` gives ``07``), ``{stem}`` the stem.
    BadInput naming the file when ``{n}`` is used and the stem ends in no number."""
    out = []
    for part in parse_path_template(template, what):
        if isinstance(part, str):
            out.append(part)
        elif part[0] == "stem":
            out.append(source.stem)
        else:
            num = _TRAILING_NUMBER.search(source.stem)
            if num is None:
                raise BadInput(
                    f"{what} {template!r} uses {{n}}, but the file name's stem "
                    f"{source.stem!r} does not end in a number",
                    source,
                )
            out.append(num.group(0))
    path = "".join(out)
    try:
        path.encode("utf-8")  # a stem from a non-UTF-8 file name
    except UnicodeEncodeError:
        raise BadInput(
            f"{what} {template!r} gives {path!r}, which is not valid UTF-8", source
        ) from None
    if "\0" in path:
        raise BadInput(f"{what} {template!r} gives {path!r}, which holds a NUL character", source)
    return path


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


def check_storage(ds: h5py.Dataset, path: Path | str, dspath: str, whole: bool) -> int:
    """Check a dataset's declared size against the bytes the file really holds (and, when
    it is to be read ``whole``, against memory) before reading it; return the declared bytes."""
    if ds.shape is None:
        raise BadInput(f"{dspath} is an empty (null) dataspace", path)
    dcpl = ds.id.get_create_plist()
    if dcpl.get_layout() not in _LAYOUTS or dcpl.get_external_count():
        raise BadInput(
            f"{dspath} keeps its data outside this file (external or virtual); not supported", path
        )
    declared = int(ds.size) * ds.dtype.itemsize
    stored = int(ds.id.get_storage_size())
    size = os.path.getsize(path)
    offset = ds.id.get_offset() if dcpl.get_layout() == h5py.h5d.CONTIGUOUS else None
    if stored > size or (offset is not None and offset + stored > size):
        raise BadInput(f"{dspath} ends beyond the file's {size} bytes (truncated?)", path)
    if whole:
        if dcpl.get_nfilters() == 0 and declared > stored:
            raise BadInput(
                f"{dspath} declares shape {ds.shape} ({human_bytes(declared)}) but the file "
                f"stores only {human_bytes(stored)} of it",
                path,
            )
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
            raise BadInput(
                f"{kind} timestamps in {dspath} at rows {i} and {i + 1} "
                f"({int(ts[i])}, {int(ts[i + 1])}); they must be strictly increasing",
                path,
            )


def describe(
    path: Path,
    timestamp_path: str = "/timestamp",
    data_path: str = "/data",
    smalldata_path: str = "/smalldata",
) -> tuple[SourceInfo, np.ndarray]:
    """Validate one source file and return its description and timestamps.

    ``timestamp_path`` and ``data_path`` are templates (``expand_path``); the description
    holds the paths they name in this file. Its ``smalldata`` lists the datasets under
    ``smalldata_path``; none of them is read here."""
    timestamp_path = expand_path(timestamp_path, path, "--timestamp-path")
    data_path = expand_path(data_path, path, "--data-path")
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
            raise BadInput(
                f"length mismatch: {timestamp_path} has {tsd.shape[0]} rows, "
                f"{data_path} has {dd.shape[0] if dd.ndim else 0}",
                path,
            )
        try:
            ts = tsd[()]
        except OSError as err:
            raise BadInput(
                f"cannot read {timestamp_path}: {str(err).splitlines()[0]}", path
            ) from None
        check_timestamps(ts, path, timestamp_path)
        small = []
        g = f.get(smalldata_path)
        if isinstance(g, h5py.Group):
            small = sorted(k for k, v in g.items() if isinstance(v, h5py.Dataset))
        chunk_rows = (
            dd.chunks[0]
            if dd.chunks
            else max(
                1,
                (1 << 20) // max(1, dd.dtype.itemsize * int(np.prod(dd.shape[1:], dtype=np.int64))),
            )
        )
        info = SourceInfo(
            path=str(path),
            name=path.stem,
            n=len(ts),
            row_shape=tuple(dd.shape[1:]),
            dtype=dd.dtype.str,
            chunk_rows=int(chunk_rows),
            timestamp_path=timestamp_path,
            data_path=data_path,
            smalldata=small,
        )
    return info, ts.astype(np.uint64, copy=False)


class SmallData(Mapping[str, np.ndarray]):
    """The small-data fields of the principal source, each read when first looked up.

    Its keys are every dataset under the small-data path, so a selection that names a
    missing field can list the ones there are; only the fields a selection names are read
    (the group may be the file's root, beside the timestamps and the payload). A field must
    be 1-D and aligned with the source's timestamps."""

    def __init__(self, info: SourceInfo, smalldata_path: str = "/smalldata") -> None:
        self.info = info
        self.group = smalldata_path
        self._read: dict[str, np.ndarray] = {}

    def __iter__(self) -> Iterator[str]:
        return iter(self.info.smalldata)

    def __len__(self) -> int:
        return len(self.info.smalldata)

    def __contains__(self, key: object) -> bool:
        return key in self.info.smalldata

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self.info.smalldata:
            raise KeyError(key)
        if key not in self._read:
            self._read[key] = self._load(key)
        return self._read[key]

    def _load(self, key: str) -> np.ndarray:
        path, n = Path(self.info.path), self.info.n
        name = f"{self.group.rstrip('/')}/{key}"
        with open_h5(path) as f:
            ds = f[self.group][key]
            if ds.shape != (n,):
                raise BadInput(
                    f"small-data field {name} has shape {ds.shape}, expected ({n},) "
                    f"like {self.info.timestamp_path}",
                    path,
                )
            check_storage(ds, path, name, whole=True)
            try:
                return ds[()]
            except OSError as err:
                raise BadInput(f"cannot read {name}: {str(err).splitlines()[0]}", path) from None
