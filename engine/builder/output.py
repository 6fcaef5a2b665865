"""The built-events file: created with all its metadata before any payload row, committed after.

``create_output`` writes, under the temporary name ``check_output`` chose, every attribute
(docs/design.md "Built events"), the timestamps, runs and per-source row indices, and allocates
each payload dataset contiguous and up front (fill never, so the file stays sparse until the
workers write). It records the payload datasets' byte offsets in the plan: from then on the
workers write with ``pwrite`` at those offsets and no HDF5 metadata changes, which is what
makes any number of writers safe. ``commit_output`` makes the finished file durable and
moves it into place in one rename; until then a reader never sees it.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from engine import __version__
from engine.builder.options import BuildOptions
from engine.builder.plan import Plan
from engine.core.atomic import fsync_dir


def create_output(plan: Plan, opt: BuildOptions) -> int:
    """Write every small dataset and allocate the payload datasets; record their offsets.
    Returns the bytes of the small datasets written (timestamps, runs, row indices)."""
    t = plan.table
    with h5py.File(plan.tmp, "w") as f:
        f.attrs["skydeck_version"] = __version__
        f.attrs["kind"] = "built-events"
        f.attrs["inputs"] = [str(Path(i.path).resolve()) for i in plan.sources]
        f.attrs["principal"] = plan.sources[0].name
        f.attrs["selection"] = plan.selection
        f.attrs["timestamp_path"] = opt.timestamp_path
        f.attrs["data_path"] = opt.data_path
        if opt.retdef is not None:
            f.attrs["retdef"] = str(opt.retdef)
        f.create_dataset("timestamp", data=t.timestamps.astype(np.uint64), track_times=False)
        if t.run is not None:
            f.create_dataset("run", data=t.run.astype(np.int64), track_times=False)
        g = f.create_group("sources")
        datasets = []
        for k, info in enumerate(plan.sources):
            sg = g.create_group(info.name)
            sg.attrs["path"] = str(Path(info.path).resolve())
            sg.attrs["rows_in_source"] = info.n
            sg.attrs["timestamp_path"] = info.timestamp_path  # the templates, expanded
            sg.attrs["data_path"] = info.data_path
            sg.create_dataset("row", data=t.rows[k], track_times=False)
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
            d = sg.create_dataset(
                "data",
                shape=(len(t), *info.row_shape),
                dtype=np.dtype(info.dtype),
                dcpl=dcpl,
                track_times=False,
            )
            datasets.append(d)
        f.flush()
        plan.offsets = [
            int(d.id.get_offset()) if info.row_bytes and len(t) else 0
            for d, info in zip(datasets, plan.sources, strict=True)
        ]
    return len(t) * 8 * (len(plan.sources) + 1 + (t.run is not None))


def commit_output(tmp: Path, output: Path) -> None:
    """fsync the finished temporary file, rename it to ``output`` and fsync the directory."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, output)
    fsync_dir(output.parent)
