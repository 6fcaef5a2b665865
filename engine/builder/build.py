"""The event builder: match sources by timestamp, select, and write built events.

Done the way the trilogy's authors wished it were (reference/eventbuilder.md A.7):

- rank 0 validates the inputs and reads only timestamps and small data, selects events
  (``engine.builder.select``), matches every source with a sorted search (``engine.builder.match``);
- it creates the output file with all metadata and the small datasets, and the payload
  datasets *contiguous and allocated up front* (fill never, so the file is sparse), then
  hands out batches of output rows to workers that ask for them (pull-based, explicit tags,
  NumPy buffers, never pickles of event data);
- each worker keeps its source datasets open, reads the rows of a batch in coalesced,
  chunk-aligned runs (``read_direct``), and writes the batch's payload straight to its place
  in the output with ``pwrite`` at the dataset's byte offset. No HDF5 metadata is touched
  after rank 0 closed the file, so any number of writers is safe, and the result is one
  self-contained file, identical for 1, 2 or K ranks and any batch size.

Run plainly it works in one process (the same worker code, called in a loop). The output
is written under a temporary name and renamed on success; any failure removes it.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
import threading
import time
from collections import ChainMap
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from engine import __version__
from engine.builder.h5source import (
    SmallData,
    SourceInfo,
    check_memory,
    describe,
    open_h5,
    parse_path_template,
)
from engine.builder.match import MISSING, MatchTable, match_sorted
from engine.builder.select import Selection
from engine.core import mpi
from engine.core.atomic import fsync_dir, refuse_alias, remove_path, sweep_stale_temps, temp_name
from engine.core.diskspace import check_space
from engine.core.errors import EXIT_FAILED, BadInput, JobFailed, SkydeckError
from engine.core.ids import NS
from engine.core.inputs import check_regular
from engine.core.interrupt import abort_job, probe, reason
from engine.core.progress import Progress
from engine.intake.retdef import parse as parse_retdef

TAG_REQUEST, TAG_WORK, TAG_STOP, TAG_ERROR = 11, 12, 13, 14
ERRLEN = 2048  # bytes of an error message a worker sends to rank 0
# fault injection for tests: "<kill|term|int>:<rank>:<after batches>" sends that rank
# SIGKILL, SIGTERM or SIGINT once it has done that many batches
FAULT_ENV = "SKYDECK_FAULT"
_FAULT_SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT}
# "0" turns off in-kernel copies (copy_file_range), e.g. to compare both paths
KERNEL_COPY_ENV = "SKYDECK_KERNEL_COPY"
MAX_BATCH = 1 << 20  # events per batch: each worker holds two batch buffers per source
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF}


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
    elapsed_s: float
    events_per_s: float = 0.0
    gb_per_s: float = 0.0
    per_rank_bytes: list[int] = field(default_factory=list)
    peak_rss_bytes: list[int] = field(default_factory=list)  # per worker rank

    def finish(self) -> BuildReport:
        el = max(self.elapsed_s, 1e-9)
        self.events_per_s = self.events / el
        self.gb_per_s = self.bytes_read / el / 1e9
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- planning (rank 0)

def expand_inputs(inputs: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            found = sorted(q for q in p.glob("*.h5") if not q.name.startswith("."))
            if not found:
                raise BadInput("directory holds no *.h5 source files", p)
            files.extend(found)
        else:
            files.append(p)
    if not files:
        raise BadInput("no input files given")
    return files


def check_output(out: Path) -> Path:
    """Refuse an unusable output path before any work; return the temporary name."""
    parent = out.parent
    if not parent.exists():
        raise BadInput("output directory does not exist", parent)
    if not parent.is_dir():
        raise BadInput("output parent is not a directory", parent)
    if out.is_dir():
        raise BadInput("output is a directory, expected a file name", out)
    sweep_stale_temps(out)
    tmp = temp_name(out)
    try:
        with open(tmp, "wb"):
            pass
    except OSError as err:
        raise BadInput(f"cannot write output: {err.strerror}", parent) from None
    return tmp


@dataclass
class Plan:
    sources: list[SourceInfo]  # principal first
    table: MatchTable
    selection: str
    tmp: Path
    offsets: list[int] = field(default_factory=list)  # payload byte offset per source


def plan_build(opt: BuildOptions) -> Plan:
    files = expand_inputs(opt.inputs)
    read = [*files, *(p for p in (opt.retdef, opt.index_in) if p is not None)]
    for p in read:
        check_regular(p)  # before any library opens it: a FIFO would block forever
    refuse_alias(opt.output, read)
    if opt.index_out is not None:
        refuse_alias(opt.index_out, [*read, opt.output], what="--index-out")
    tmp = check_output(opt.output)
    try:
        return _plan(opt, files, tmp)
    except BaseException:
        remove_path(tmp)
        raise


def _plan(opt: BuildOptions, files: list[Path], tmp: Path) -> Plan:
    parse_path_template(opt.timestamp_path, "--timestamp-path")  # before any file is opened
    parse_path_template(opt.data_path, "--data-path")
    text = (opt.select or "").strip()
    selection = Selection(text) if text and opt.index_in is None else None
    infos, stamps = [], []
    for f in files:
        info, ts = describe(f, opt.timestamp_path, opt.data_path, opt.smalldata_path)
        if np.dtype(info.dtype).kind not in "iufcb":
            raise BadInput(f"{info.data_path} has dtype {info.dtype}; fixed-size numbers expected", f)
        infos.append(info)
        stamps.append(ts)
    widest = max(infos, key=lambda i: i.row_bytes)
    check_memory(worker_memory(infos, opt.batch), f"--batch {opt.batch} with rows of "
                 f"{widest.row_bytes} bytes (a worker's buffers)", widest.path)
    names = [i.name for i in infos]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise BadInput(f"two input files share the source name {sorted(dup)[0]!r} (file stem)")
    if opt.principal:
        if opt.principal not in names:
            raise BadInput(f"--principal {opt.principal!r} is not among the sources {names}")
        p = names.index(opt.principal)
    else:  # the first source with small data, the first with every field selected if any
        named = selection.names - {"timestamp"} if selection else set()
        with_small = ([k for k, i in enumerate(infos) if i.smalldata and named <= set(i.smalldata)]
                      or [k for k, i in enumerate(infos) if i.smalldata])
        p = with_small[0] if with_small else 0
    order = [p] + [k for k in range(len(infos)) if k != p]
    infos = [infos[k] for k in order]
    stamps = [stamps[k] for k in order]
    principal, pts = infos[0], stamps[0]

    small = SmallData(principal, opt.smalldata_path)  # reads only the fields looked up
    if opt.index_in is not None:
        table = MatchTable.load(opt.index_in)
        table.check_inputs([i.path for i in infos], [i.n for i in infos], opt.index_in)
        table.rows = table.rows[[table.sources.index(i.name) for i in infos]]
        table.sources, table.paths = [i.name for i in infos], [i.path for i in infos]
    else:
        mask = np.ones(principal.n, dtype=bool)
        if selection is not None:
            fields = ChainMap(small, {"timestamp": pts})  # a field named timestamp wins
            mask &= selection.evaluate(fields, principal.n, principal.path)
        if opt.retdef is not None:
            rd = parse_retdef(opt.retdef)
            win = np.zeros(principal.n, dtype=bool)
            for s in rd.spans:
                win |= (pts >= np.uint64(round(s.tbeg * NS))) & (pts < np.uint64(round(s.tend * NS)))
            mask &= win
        sel = np.flatnonzero(mask)
        if len(sel) == 0:
            what = f"selection {text!r}" if text else "the requested window"
            raise BadInput(f"{what} matches no events", opt.retdef or principal.path)
        wanted = pts[sel]
        rows = np.empty((len(infos), len(sel)), dtype=np.int64)
        rows[0] = sel
        for k in range(1, len(infos)):
            rows[k] = match_sorted(wanted, stamps[k])
        run = small["run"][sel].astype(np.int64) if "run" in small else None
        table = MatchTable(timestamps=wanted, run=run, sources=[i.name for i in infos],
                           paths=[i.path for i in infos], lengths=[i.n for i in infos], rows=rows)
    if opt.index_out is not None:
        table.save(opt.index_out)
    need = len(table) * sum(i.row_bytes for i in infos) + len(table) * 8 * (len(infos) + 2) + (1 << 20)
    check_space(opt.output, need, opt.reserve, "built events")
    return Plan(sources=infos, table=table, selection=text, tmp=tmp)


def worker_memory(sources: list[SourceInfo], batch: int) -> int:
    """Bytes a BatchWorker allocates: two batch buffers per source, plus a scratch buffer
    of up to ``max(batch, chunk) + chunk`` rows for a source read through HDF5."""
    return sum((2 * batch + max(batch, s.chunk_rows) + s.chunk_rows) * s.row_bytes for s in sources)


def create_output(plan: Plan, opt: BuildOptions) -> None:
    """Write every small dataset and allocate the payload datasets; record their offsets."""
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
            d = sg.create_dataset("data", shape=(len(t), *info.row_shape), dtype=np.dtype(info.dtype),
                                  dcpl=dcpl, track_times=False)
            datasets.append(d)
        f.flush()
        plan.offsets = [int(d.id.get_offset()) if info.row_bytes and len(t) else 0
                        for d, info in zip(datasets, plan.sources, strict=True)]


# --------------------------------------------------------------------------- the worker side

class _RawRows:
    """Byte offsets of the rows of an unfiltered source, so rows are read with ``preadv``
    straight from the file: no HDF5 call, no type conversion, no chunk cache, GIL released.
    Valid for contiguous datasets and for chunks that hold whole rows."""

    def __init__(self, d: h5py.Dataset, row_bytes: int) -> None:
        self.row_bytes = row_bytes
        self.base: int | None = None
        self.chunk_offsets: np.ndarray | None = None
        if d.chunks is None:
            self.base = d.id.get_offset()
            self.crow = 1
            return
        self.crow = d.chunks[0]
        nchunks = -(-d.shape[0] // self.crow)
        offs = np.full(nchunks, -1, dtype=np.int64)

        def note(info) -> None:  # type: ignore[no-untyped-def]
            offs[info.chunk_offset[0] // self.crow] = info.byte_offset

        d.id.chunk_iter(note)
        self.chunk_offsets = offs

    @classmethod
    def usable(cls, d: h5py.Dataset) -> bool:
        if d.id.get_create_plist().get_nfilters() != 0 or d.dtype.hasobject:
            return False
        if d.chunks is None:
            return d.id.get_offset() is not None
        return tuple(d.chunks[1:]) == tuple(d.shape[1:]) and hasattr(d.id, "chunk_iter")

    def offsets(self, rows: np.ndarray) -> np.ndarray | None:
        if self.base is not None:
            return self.base + rows * self.row_bytes
        assert self.chunk_offsets is not None
        c = self.chunk_offsets[rows // self.crow]
        if np.any(c < 0):
            return None  # an unallocated chunk reads as fill value: let HDF5 do it
        return c + (rows % self.crow) * self.row_bytes


class BatchWorker:
    """Reads the payload rows of a batch from open sources and writes them into the output.

    Rows of unfiltered sources are copied by the kernel (``copy_file_range``) from their byte
    offsets in the source to their place in the output, in coalesced runs: one memory copy
    instead of two, and no user buffer. Where the kernel cannot (another file system), they
    are read with ``preadv`` into a batch buffer; filtered (compressed) sources go through
    h5py in chunk-aligned runs. Buffers are written behind by one thread (``pwrite``
    releases the GIL) while the next batch is read. Rows a source lacks are left unwritten:
    the output was created empty, so they read as zeros.
    Memory: at most two batch buffers per source, plus one scratch buffer of at most
    ``batch + chunk`` rows for filtered sources, whatever the size of the inputs.
    """

    def __init__(self, sources: list[SourceInfo], output: str, offsets: list[int], batch: int,
                 label: str = "", io_threads: int = 1) -> None:
        self.sources = sources
        self.label = label or output
        self.lock = threading.Lock()
        # kernel copies of different sources run in parallel (copy_file_range releases the GIL)
        self.copier = ThreadPoolExecutor(max_workers=max(1, io_threads), thread_name_prefix="skydeck-copy")
        self.files = [open_h5(Path(s.path)) for s in sources]
        self.dsets = [f[s.data_path] for f, s in zip(self.files, sources, strict=True)]
        self.contiguous = [d.chunks is None for d in self.dsets]
        self.raw = [_RawRows(d, s.row_bytes) if _RawRows.usable(d) else None
                    for d, s in zip(self.dsets, sources, strict=True)]
        self.rawfd = [os.open(s.path, os.O_RDONLY) if r else -1
                      for s, r in zip(sources, self.raw, strict=True)]
        self.offsets = offsets
        self.batch = batch
        self.fd = os.open(output, os.O_WRONLY)
        self.bufsets = [[np.zeros((batch, *s.row_shape), dtype=np.dtype(s.dtype)) for s in sources]
                        for _ in range(2)]
        self.pending: list[Future[None] | None] = [None, None]
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skydeck-write")
        self.scratch: list[np.ndarray | None] = [None] * len(sources)
        kernel = os.environ.get(KERNEL_COPY_ENV, "1") != "0"
        self.kernel_copy = [kernel and r is not None for r in self.raw]
        self.copied = [False] * len(sources)
        self.bytes_read = 0
        self.events = 0
        self.batches = 0

    def finish(self) -> None:
        """Wait for every write; raises the first write error (e.g. a full disk)."""
        for i, fut in enumerate(self.pending):
            if fut is not None:
                self.pending[i] = None
                fut.result()

    def close(self) -> None:
        self.writer.shutdown(wait=True)
        self.copier.shutdown(wait=True)
        for f in self.files:
            f.close()
        for fd in (*self.rawfd, self.fd):
            if fd >= 0:
                os.close(fd)

    def _runs(self, k: int, rows: np.ndarray) -> list[tuple[int, int, int, int]]:
        """Split sorted valid rows into runs of adjacent chunks: (i0, i1, span0, span1)."""
        s = self.sources[k]
        crow = 1 if self.contiguous[k] else s.chunk_rows
        cid = rows // crow
        cuts = np.flatnonzero(np.diff(cid) > 1) + 1
        limit = max(self.batch, crow)
        out = []
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(rows)], strict=True):
            a, b = int(a), int(b)
            while a < b:
                s0 = int(cid[a]) * crow
                # extend the run while it stays within `limit` rows of span
                e = a + int(np.searchsorted(rows[a:b], s0 + limit, side="left"))
                e = max(e, a + 1)
                s1 = min((int(cid[e - 1]) + 1) * crow, s.n)
                out.append((a, e, s0, s1))
                a = e
        return out

    def process(self, start: int, rows: np.ndarray) -> None:
        """Build output rows ``start .. start+len`` whose source rows are ``rows`` (S, count)."""
        count = rows.shape[1]
        slot = self.batches % 2
        fut = self.pending[slot]
        if fut is not None:  # this buffer set is still being written
            self.pending[slot] = None
            fut.result()
        bufs: list[np.ndarray | None] = [None] * len(self.sources)
        valid = [rows[k] != MISSING for k in range(len(self.sources))]
        pos = [np.flatnonzero(v) for v in valid]
        copies = {k: self.copier.submit(self._copy, k, rows[k][pos[k]], pos[k], start)
                  for k in range(len(self.sources)) if self.kernel_copy[k]}
        done = {k: fut.result() for k, fut in copies.items()}  # kernel copies run concurrently
        for k in range(len(self.sources)):
            if done.get(k):
                continue
            r, pk = rows[k], pos[k]
            buf = bufs[k] = self.bufsets[slot][k][:count]
            if len(pk) < count:
                buf[~valid[k]] = 0
            if len(pk):
                self._read(k, r[pk], pk, buf)
        if any(b is not None for b in bufs):
            self.pending[slot] = self.writer.submit(self._write, start, bufs)
        self.events += count
        self.batches += 1

    def _copy(self, k: int, src_rows: np.ndarray, dest: np.ndarray, start: int) -> bool:
        """Kernel copy of a batch's rows of source ``k``; False if this source can't use it."""
        if len(src_rows) == 0:
            return True  # nothing to copy: the rows stay unwritten, hence zero
        raw = self.raw[k]
        assert raw is not None
        offs = raw.offsets(src_rows)
        if offs is None:
            return False
        s, rb = self.sources[k], self.sources[k].row_bytes
        cuts = np.flatnonzero((np.diff(offs) != rb) | (np.diff(dest) != 1)) + 1
        base = self.offsets[k] + start * rb
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(offs)], strict=True):
            want = (int(b) - int(a)) * rb
            src_off, dst_off = int(offs[a]), base + int(dest[a]) * rb
            got = 0
            while got < want:
                try:
                    n = os.copy_file_range(self.rawfd[k], self.fd, want - got, src_off + got, dst_off + got)
                except OSError as err:
                    if err.errno in _NO_KERNEL_COPY and not self.copied[k] and got == 0:
                        self.kernel_copy[k] = False  # e.g. across file systems: use preadv
                        return False
                    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                        raise JobFailed(f"cannot write built events: {err.strerror}", self.label) from None
                    raise JobFailed(f"cannot copy {s.data_path} at byte {src_off + got}: {err.strerror}",
                                    s.path) from None
                if n == 0:
                    raise JobFailed(f"cannot read {s.data_path} at byte {src_off + got}: "
                                    "file ends early (truncated?)", s.path)
                got += n
                self.copied[k] = True
            with self.lock:
                self.bytes_read += want
        return True

    def _write(self, start: int, bufs: list[np.ndarray | None]) -> None:
        for k, s in enumerate(self.sources):
            buf = bufs[k]
            if buf is None:
                continue
            nbytes = len(buf) * s.row_bytes
            if not nbytes:
                continue
            off = self.offsets[k] + start * s.row_bytes
            view = memoryview(buf).cast("B")
            done = 0
            try:
                while done < nbytes:
                    done += os.pwrite(self.fd, view[done:nbytes], off + done)
            except OSError as err:
                raise JobFailed(f"cannot write built events: {err.strerror}", self.label) from None

    def _read(self, k: int, src_rows: np.ndarray, dest: np.ndarray, buf: np.ndarray) -> None:
        raw = self.raw[k]
        offs = raw.offsets(src_rows) if raw is not None else None
        if offs is not None:
            self._read_raw(k, offs, dest, buf)
        else:
            self._read_h5(k, src_rows, dest, buf)

    def _read_raw(self, k: int, offs: np.ndarray, dest: np.ndarray, buf: np.ndarray) -> None:
        s = self.sources[k]
        rb = s.row_bytes
        cuts = np.flatnonzero((np.diff(offs) != rb) | (np.diff(dest) != 1)) + 1
        flat = memoryview(buf).cast("B")
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(offs)], strict=True):
            want = (int(b) - int(a)) * rb
            d0 = int(dest[a]) * rb
            got = 0
            try:
                while got < want:
                    n = os.preadv(self.rawfd[k], [flat[d0 + got:d0 + want]], int(offs[a]) + got)
                    if n == 0:
                        raise OSError(0, "file ends early (truncated?)")
                    got += n
            except OSError as err:
                raise JobFailed(f"cannot read {s.data_path} at byte {int(offs[a])}: "
                                f"{err.strerror or err}", s.path) from None
            self.bytes_read += want

    def _read_h5(self, k: int, src_rows: np.ndarray, dest: np.ndarray, buf: np.ndarray) -> None:
        d, s = self.dsets[k], self.sources[k]
        for a, b, s0, s1 in self._runs(k, src_rows):
            span = s1 - s0
            self.bytes_read += span * s.row_bytes
            dense = (b - a == span and src_rows[a] == s0 and dest[b - 1] - dest[a] == b - a - 1)
            try:
                if dense:
                    d.read_direct(buf, np.s_[s0:s1], np.s_[int(dest[a]):int(dest[a]) + span])
                    continue
                sc = self.scratch[k]
                if sc is None or len(sc) < span:
                    sc = self.scratch[k] = np.empty((span, *s.row_shape), dtype=np.dtype(s.dtype))
                d.read_direct(sc, np.s_[s0:s1], np.s_[0:span])
            except OSError as err:
                reason = str(err).splitlines()[0]
                raise JobFailed(f"cannot read {s.data_path} rows {s0}..{s1 - 1}: {reason}", s.path) from None
            buf[dest[a:b]] = sc[src_rows[a:b] - s0]


def _fault_check(rank: int, batches: int) -> None:
    kind, _, where = os.environ.get(FAULT_ENV, "").partition(":")
    if kind in _FAULT_SIGNALS:
        r, n = where.split(":")
        if int(r) == rank and batches == int(n):
            os.kill(os.getpid(), _FAULT_SIGNALS[kind])


# --------------------------------------------------------------------------- drivers

def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB


def _batches(n: int, batch: int) -> list[tuple[int, int]]:
    return [(a, min(batch, n - a)) for a in range(0, n, batch)]


def run_serial(opt: BuildOptions, progress: Progress | None = None) -> BuildReport:
    """One process: plan, then the worker loop in-process."""
    plan = plan_build(opt)
    if progress:
        progress.set_total(len(plan.table))
    try:
        create_output(plan, opt)
        threads = opt.io_threads or min(4, len(os.sched_getaffinity(0)))
        worker = BatchWorker(plan.sources, str(plan.tmp), plan.offsets, opt.batch, str(opt.output),
                             threads)
        try:
            t0 = time.perf_counter()
            for start, count in _batches(len(plan.table), opt.batch):
                worker.process(start, plan.table.rows[:, start:start + count])
                _fault_check(0, worker.batches)
                if progress:
                    progress.advance(count)
            worker.finish()
            elapsed = time.perf_counter() - t0
        finally:
            worker.close()
        _commit(plan, opt)
    except SkydeckError:
        remove_path(plan.tmp)
        raise
    except OSError as err:
        remove_path(plan.tmp)
        raise JobFailed(f"I/O error while building: {err.strerror or err}", err.filename or opt.output) from None
    except BaseException:
        remove_path(plan.tmp)
        raise
    return BuildReport(output=str(opt.output), events=len(plan.table), sources=plan.table.sources,
                       selection=plan.selection, ranks=1, workers=1, batch=opt.batch,
                       batches=worker.batches, bytes_read=worker.bytes_read,
                       bytes_written=len(plan.table) * sum(s.row_bytes for s in plan.sources),
                       elapsed_s=elapsed, per_rank_bytes=[worker.bytes_read],
                       peak_rss_bytes=[peak_rss()]).finish()


def _commit(plan: Plan, opt: BuildOptions) -> None:
    fd = os.open(plan.tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(plan.tmp, opt.output)
    fsync_dir(opt.output.parent)


def run_mpi(opt: BuildOptions, progress: Progress | None = None) -> BuildReport | None:
    """Under mpiexec: rank 0 plans and distributes, ranks 1.. work. Returns the report on rank 0."""
    comm = mpi.world()
    if comm.Get_size() == 1:
        return run_serial(opt, progress)
    held: dict[str, Path] = {}
    try:
        return _run_ranks(comm, opt, progress, held)
    except KeyboardInterrupt as err:
        if comm.Get_rank() != 0:
            raise  # rank 0 got the signal too (mpiexec forwards it) and ends the job
        # the workers wait inside MPI calls and cannot be told: remove the temporary output,
        # then end every rank with 130/143
        if "tmp" in held:
            remove_path(held["tmp"])
        abort_job(comm, err)


def _run_ranks(comm: Any, opt: BuildOptions, progress: Progress | None,
               held: dict[str, Path]) -> BuildReport | None:
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    setup: dict[str, Any] | None = None
    plan: Plan | None = None
    if rank == 0:
        try:
            plan = plan_build(opt)
            held["tmp"] = plan.tmp
            try:
                create_output(plan, opt)
            except BaseException:
                remove_path(plan.tmp)
                raise
            if progress:
                progress.set_total(len(plan.table))
            setup = {"sources": plan.sources, "output": str(plan.tmp), "offsets": plan.offsets,
                     "label": str(opt.output), "io_threads": opt.io_threads or 1,
                     "nsrc": len(plan.sources)}
        except SkydeckError as err:
            setup = {"error": str(err), "code": err.exit_code}
        except Exception as err:  # noqa: BLE001 - report any planning failure to every rank
            setup = {"error": f"{opt.output}: {err}", "code": EXIT_FAILED}
    setup = comm.bcast(setup, root=0)
    assert setup is not None
    if "error" in setup:
        if rank == 0:
            raise _rebuild_error(setup)
        raise _QuietExit(setup["code"])

    comm.Barrier()
    t0 = MPI.Wtime()
    if rank == 0:
        assert plan is not None
        error, stats = _master(comm, plan, opt, progress)
    else:
        error, stats = _worker(comm, rank, setup, opt.batch), None
    comm.Barrier()
    elapsed = MPI.Wtime() - t0
    error = next((e for e in comm.allgather(error) if e), "")
    if rank != 0:
        if error:
            raise _QuietExit(EXIT_FAILED)
        return None
    assert plan is not None and stats is not None
    if error:
        remove_path(plan.tmp)
        raise JobFailed(error)
    try:
        _commit(plan, opt)
    except OSError as err:
        remove_path(plan.tmp)
        raise JobFailed(f"cannot rename output into place: {err.strerror}", opt.output) from None
    per_rank = [int(stats[r][3]) for r in range(1, size)]
    return BuildReport(output=str(opt.output), events=len(plan.table), sources=plan.table.sources,
                       selection=plan.selection, ranks=size, workers=size - 1, batch=opt.batch,
                       batches=int(sum(stats[r][1] for r in range(1, size))), bytes_read=sum(per_rank),
                       bytes_written=len(plan.table) * sum(s.row_bytes for s in plan.sources),
                       elapsed_s=elapsed, per_rank_bytes=per_rank,
                       peak_rss_bytes=[int(stats[r][4]) for r in range(1, size)]).finish()


class _QuietExit(SystemExit):
    """A non-zero exit of a worker rank; rank 0 prints the message."""


def _rebuild_error(setup: dict[str, Any]) -> SkydeckError:
    err = SkydeckError(setup["error"])
    err.exit_code = setup["code"]
    return err


def _master(comm: Any, plan: Plan, opt: BuildOptions,
            progress: Progress | None) -> tuple[str, np.ndarray]:
    from mpi4py import MPI

    size = comm.Get_size()
    nsrc = len(plan.sources)
    work = _batches(len(plan.table), opt.batch)
    msg = np.zeros(2 + nsrc * opt.batch, dtype=np.int64)
    req = np.zeros(5, dtype=np.int64)
    errbuf = np.zeros(ERRLEN, dtype=np.uint8)
    stats = np.zeros((size, 5), dtype=np.int64)
    last_events = np.zeros(size, dtype=np.int64)
    status = MPI.Status()
    active, nxt, error = size - 1, 0, ""
    while active:
        probe(comm, MPI.ANY_SOURCE, MPI.ANY_TAG, status)  # SIGTERM/Ctrl-C can stop the wait
        src, tag = status.Get_source(), status.Get_tag()
        if tag == TAG_ERROR:
            comm.Recv([errbuf, MPI.BYTE], source=src, tag=TAG_ERROR)
            error = error or bytes(errbuf).rstrip(b"\0").decode(errors="replace")
            comm.Send([msg[:0], MPI.INT64_T], dest=src, tag=TAG_STOP)
            active -= 1
            continue
        comm.Recv([req, MPI.INT64_T], source=src, tag=TAG_REQUEST)
        stats[src] = req
        if progress and req[2] > last_events[src]:
            progress.advance(int(req[2] - last_events[src]))
            last_events[src] = req[2]
        if nxt < len(work) and not error:
            start, count = work[nxt]
            nxt += 1
            msg[0], msg[1] = start, count
            block = plan.table.rows[:, start:start + count]
            msg[2:2 + nsrc * count] = block.ravel()
            comm.Send([msg[:2 + nsrc * count], MPI.INT64_T], dest=src, tag=TAG_WORK)
        else:
            comm.Send([msg[:0], MPI.INT64_T], dest=src, tag=TAG_STOP)
            active -= 1
    return error, stats


def _worker(comm: Any, rank: int, setup: dict[str, Any], batch: int) -> str:
    from mpi4py import MPI

    nsrc = setup["nsrc"]
    msg = np.zeros(2 + nsrc * batch, dtype=np.int64)
    status = MPI.Status()
    try:
        worker = BatchWorker(setup["sources"], setup["output"], setup["offsets"], batch,
                             setup["label"], setup["io_threads"])
    except Exception as err:  # noqa: BLE001 - tell rank 0, which stops the job
        return _send_error(comm, f"rank {rank}: {err}")
    try:
        _fault_check(rank, 0)
        while True:
            req = np.array([rank, worker.batches, worker.events, worker.bytes_read, peak_rss()],
                           dtype=np.int64)
            comm.Send([req, MPI.INT64_T], dest=0, tag=TAG_REQUEST)
            comm.Recv([msg, MPI.INT64_T], source=0, tag=MPI.ANY_TAG, status=status)
            if status.Get_tag() == TAG_STOP:
                try:
                    worker.finish()  # the last writes; an error here is reported after the barrier
                except SkydeckError as err:
                    return f"{err} (rank {rank})"
                return ""
            start, count = int(msg[0]), int(msg[1])
            rows = msg[2:2 + nsrc * count].reshape(nsrc, count)
            worker.process(start, rows)
            _fault_check(rank, worker.batches)
    except SkydeckError as err:
        return _send_error(comm, f"{err} (rank {rank})")
    except KeyboardInterrupt as err:  # this rank alone was signalled: rank 0 stops the job
        return _send_error(comm, f"{setup['label']}: rank {rank} {reason(err)}")
    except OSError as err:
        return _send_error(comm, f"{err.filename or setup['label']}: "
                                 f"I/O error while building: {err.strerror or err} (rank {rank})")
    except Exception as err:  # noqa: BLE001
        return _send_error(comm, f"rank {rank}: {type(err).__name__}: {err}")
    finally:
        worker.close()


def _send_error(comm: Any, text: str) -> str:
    from mpi4py import MPI

    buf = np.zeros(ERRLEN, dtype=np.uint8)
    raw = text.encode()[:ERRLEN]
    buf[:len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    comm.Send([buf, MPI.BYTE], dest=0, tag=TAG_ERROR)
    comm.Recv([np.zeros(0, np.int64), MPI.INT64_T], source=0, tag=TAG_STOP)
    return text


def build(opt: BuildOptions, progress: Progress | None = None) -> BuildReport | None:
    """Build events; under mpiexec the job is distributed. Returns the report (rank 0)."""
    if not 1 <= opt.batch <= MAX_BATCH:
        raise BadInput(f"--batch must be within 1..{MAX_BATCH}")
    if mpi.launched():
        return run_mpi(opt, progress)
    return run_serial(opt, progress)


def is_rank0() -> bool:
    if not mpi.launched():
        return True
    return int(mpi.world().Get_rank()) == 0


