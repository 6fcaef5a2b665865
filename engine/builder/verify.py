"""Verify built events against their sources, row by row and payload by payload.

For every event and source: the recorded source row holds the same timestamp, the payload
equals that row of the source (zeros where the source lacks the event), and where the
source carries the mock's payload scheme the payload equals the one derived from the
timestamp. Reads in bounded blocks, so it checks files of any size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np

from engine.builder.h5source import open_h5
from engine.builder.match import MISSING
from engine.builder.payload import PAYLOAD_SCHEME, rows_for
from engine.core.errors import BadInput

BLOCK_BYTES = 64 << 20


@dataclass
class VerifyReport:
    path: str
    events: int = 0
    sources: list[str] = field(default_factory=list)
    rows_checked: int = 0
    payload_scheme_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "ok": self.ok}


def verify_built(path: Path, max_problems: int = 20) -> VerifyReport:
    rep = VerifyReport(path=str(path))
    with open_h5(path) as out:
        if "timestamp" not in out or "sources" not in out:
            raise BadInput("not a built-events file (no /timestamp or /sources)", path)
        ts = out["timestamp"][()]
        rep.events = len(ts)
        if len(ts) > 1 and not np.all(ts[1:] > ts[:-1]):
            rep.problems.append("/timestamp is not strictly increasing")
        tpath = str(out.attrs.get("timestamp_path", "/timestamp"))
        dpath = str(out.attrs.get("data_path", "/data"))
        for name, g in out["sources"].items():
            rep.sources.append(name)
            src_path = Path(str(g.attrs["path"]))
            with open_h5(src_path) as src:  # per source where the paths had placeholders
                _verify_source(
                    rep,
                    name,
                    g,
                    src,
                    ts,
                    str(g.attrs.get("timestamp_path", tpath)),
                    str(g.attrs.get("data_path", dpath)),
                    max_problems,
                )
    return rep


def _verify_source(
    rep: VerifyReport,
    name: str,
    g: h5py.Group,
    src: h5py.File,
    ts: np.ndarray,
    tpath: str,
    dpath: str,
    max_problems: int,
) -> None:
    rows = g["row"][()]
    data = g["data"]
    for dspath in (tpath, dpath):  # the source may have changed since the build
        if not isinstance(src.get(dspath), h5py.Dataset):
            raise BadInput(
                f"source {name} has no dataset {dspath} (changed since the build?)", src.filename
            )
    sdata, sts = src[dpath], src[tpath][()]
    scheme = sdata.attrs.get("payload_scheme")
    salt = int(sdata.attrs.get("payload_salt", 0))
    row_bytes = max(1, int(np.prod(data.shape[1:], dtype=np.int64)) * data.dtype.itemsize)
    block = max(1, BLOCK_BYTES // row_bytes)
    for a in range(0, len(ts), block):
        b = min(a + block, len(ts))
        got = data[a:b]
        r = rows[a:b]
        valid = r != MISSING
        if np.any(got[~valid] != 0):
            rep.problems.append(f"{name}: nonzero payload where the source lacks the event")
        vr = r[valid]
        if len(vr):
            if np.any(sts[vr] != ts[a:b][valid]):
                i = int(np.flatnonzero(sts[vr] != ts[a:b][valid])[0])
                rep.problems.append(f"{name}: source row {int(vr[i])} has another timestamp")
            want = sdata[vr] if np.all(np.diff(vr) > 0) else sdata[()][vr]
            bad = np.flatnonzero(np.any((got[valid] != want).reshape(len(vr), -1), axis=1))
            if len(bad):
                rep.problems.append(f"{name}: payload differs from source row {int(vr[bad[0]])}")
            if scheme == PAYLOAD_SCHEME and got.ndim == 2:
                exp = rows_for(ts[a:b][valid], got.shape[1], salt)
                if np.any(exp != got[valid]):
                    rep.problems.append(f"{name}: payload does not derive from its timestamp")
                rep.payload_scheme_checked += len(vr)
            rep.rows_checked += len(vr)
        if len(rep.problems) >= max_problems:
            return
    # every source row that holds a selected timestamp must have been found
    sel = np.searchsorted(sts, ts)
    present = (sel < len(sts)) & (sts[np.minimum(sel, len(sts) - 1)] == ts)
    if np.any(present != (rows != MISSING)):
        rep.problems.append(f"{name}: row table misses events the source holds")


def _walk(f: h5py.File) -> dict[str, h5py.Dataset]:
    out: dict[str, h5py.Dataset] = {}
    f.visititems(
        lambda name, obj: out.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None
    )
    return out


def compare_datasets(a: Path, b: Path) -> list[str]:
    """Differences between two HDF5 files, dataset by dataset (names, shapes, dtypes, values)."""
    diffs: list[str] = []
    with open_h5(a) as fa, open_h5(b) as fb:
        da, db = _walk(fa), _walk(fb)
        for name in sorted(set(da) ^ set(db)):
            diffs.append(f"{name}: only in {a if name in da else b}")
        for name in sorted(set(da) & set(db)):
            x, y = da[name], db[name]
            if x.shape != y.shape or x.dtype != y.dtype:
                diffs.append(f"{name}: {x.shape} {x.dtype} vs {y.shape} {y.dtype}")
                continue
            row_bytes = max(1, x.dtype.itemsize * int(np.prod(x.shape[1:], dtype=np.int64)))
            step = max(1, BLOCK_BYTES // row_bytes)
            n = x.shape[0] if x.ndim else 1
            for s in range(0, n, step):
                sl = np.s_[s : s + step] if x.ndim else ()
                if not np.array_equal(x[sl], y[sl]):
                    diffs.append(f"{name}: values differ from row {s}")
                    break
    return diffs
