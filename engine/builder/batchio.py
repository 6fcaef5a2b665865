"""Batch I/O: a worker copies the payload rows of a batch of output events into the output.

The one part of the builder that touches payload bytes, the same in one process and on
every MPI worker rank (``engine.builder.protocol`` decides who calls it). A batch is a run
of output rows and, per source, the source row each takes (``MISSING`` where the source
lacks the event). Rows of unfiltered sources are copied by the kernel (``copy_file_range``)
from their byte offsets in the source to their place in the output, in coalesced runs;
where the kernel cannot, they are read with ``preadv`` (contiguous datasets and chunks of
whole rows, located once by ``_RawRows``) or through h5py in chunk-aligned runs (filtered
sources), into one of two batch buffers written behind with ``pwrite`` at the payload
dataset's byte offset. Rows a source lacks stay unwritten and read as zeros.
``worker_memory`` is the bound the planner checks before any buffer exists.

Once a batch's rows are in the output's page cache, the worker asks the kernel to start
writing them to disk (``sync_file_range``, ``Writeback``), so the disk writes while the
next batches are copied and the final fsync (``engine.builder.output.commit_output``) finds
little left to do: on the development VM that fsync took 0.3-0.4 s of a 0.65-0.85 s build of 0.55 GB
when all of it was left to the end (docs/benchmarks.md).
"""

from __future__ import annotations

import errno
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from engine.builder.h5source import SourceInfo, open_h5
from engine.builder.match import MISSING
from engine.core.errors import JobFailed

# "0" turns off in-kernel copies (copy_file_range), e.g. to compare both paths
KERNEL_COPY_ENV = "SKYDECK_KERNEL_COPY"
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF}


class Writeback:
    """Starts the writeback of byte ranges of the output (``sync_file_range`` with
    ``SYNC_FILE_RANGE_WRITE``), from a thread of its own: the call queues the writes but
    blocks while the disk's queue is full, and the copy must not wait for the disk. Linux
    only; elsewhere, or if the call fails once, it does nothing and the fsync at the end
    writes everything, as before. Durability is unchanged: the fsync still decides.
    ``close`` drops ranges not yet started (the fsync writes them) and waits for the
    running call, so the output's descriptor can be closed after it."""

    SYNC_FILE_RANGE_WRITE = 2

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.call: Any = None
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skydeck-writeback")
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            call = libc.sync_file_range
            call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
            call.restype = ctypes.c_int
            self.call = call
        except (OSError, AttributeError):
            pass

    def start(self, offset: int, nbytes: int) -> None:
        if self.call is not None and nbytes > 0:
            self.thread.submit(self._sync, offset, nbytes)

    def _sync(self, offset: int, nbytes: int) -> None:
        call = self.call
        if call is not None and call(self.fd, offset, nbytes, self.SYNC_FILE_RANGE_WRITE) != 0:
            self.call = None  # e.g. a file system without it: leave it all to the fsync

    def close(self) -> None:
        self.thread.shutdown(wait=True, cancel_futures=True)


def worker_memory(sources: list[SourceInfo], batch: int) -> int:
    """Bytes a BatchWorker allocates: two batch buffers per source, plus a scratch buffer
    of up to ``max(batch, chunk) + chunk`` rows for a source read through HDF5."""
    return sum((2 * batch + max(batch, s.chunk_rows) + s.chunk_rows) * s.row_bytes for s in sources)


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

        # the offsets HDF5 reports for every allocated chunk: one pass over the chunk index
        # (H5Dchunk_iter) where the library has it, else chunk by chunk (H5Dget_chunk_info)
        if hasattr(d.id, "chunk_iter"):
            d.id.chunk_iter(note)
        else:
            for i in range(d.id.get_num_chunks()):
                note(d.id.get_chunk_info(i))
        self.chunk_offsets = offs

    @classmethod
    def usable(cls, d: h5py.Dataset) -> bool:
        if d.id.get_create_plist().get_nfilters() != 0 or d.dtype.hasobject:
            return False
        if d.chunks is None:
            return d.id.get_offset() is not None
        # chunks of whole rows: a row's bytes sit at chunk offset + row-in-chunk x row bytes
        return tuple(d.chunks[1:]) == tuple(d.shape[1:]) and (
            hasattr(d.id, "chunk_iter") or hasattr(d.id, "get_chunk_info")
        )

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

    def __init__(
        self,
        sources: list[SourceInfo],
        output: str,
        offsets: list[int],
        batch: int,
        label: str = "",
        io_threads: int = 1,
    ) -> None:
        self.sources = sources
        self.label = label or output
        self.lock = threading.Lock()
        # kernel copies of different sources run in parallel (copy_file_range releases the GIL)
        self.copier = ThreadPoolExecutor(
            max_workers=max(1, io_threads), thread_name_prefix="skydeck-copy"
        )
        self.files = [open_h5(Path(s.path)) for s in sources]
        self.dsets = [f[s.data_path] for f, s in zip(self.files, sources, strict=True)]
        self.contiguous = [d.chunks is None for d in self.dsets]
        self.raw = [
            _RawRows(d, s.row_bytes) if _RawRows.usable(d) else None
            for d, s in zip(self.dsets, sources, strict=True)
        ]
        self.rawfd = [
            os.open(s.path, os.O_RDONLY) if r else -1
            for s, r in zip(sources, self.raw, strict=True)
        ]
        self.offsets = offsets
        self.batch = batch
        self.fd = os.open(output, os.O_WRONLY)
        self.writeback = Writeback(self.fd)
        self.bufsets = [
            [np.zeros((batch, *s.row_shape), dtype=np.dtype(s.dtype)) for s in sources]
            for _ in range(2)
        ]
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
        self.writeback.close()
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
        copies = {
            k: self.copier.submit(self._copy, k, rows[k][pos[k]], pos[k], start)
            for k in range(len(self.sources))
            if self.kernel_copy[k]
        }
        done = {k: fut.result() for k, fut in copies.items()}  # kernel copies run concurrently
        for k, copied in done.items():
            if copied:
                rb = self.sources[k].row_bytes
                self.writeback.start(self.offsets[k] + start * rb, count * rb)
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
                    n = os.copy_file_range(
                        self.rawfd[k], self.fd, want - got, src_off + got, dst_off + got
                    )
                except OSError as err:
                    if err.errno in _NO_KERNEL_COPY and not self.copied[k] and got == 0:
                        self.kernel_copy[k] = False  # e.g. across file systems: use preadv
                        return False
                    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                        raise JobFailed(
                            f"cannot write built events: {err.strerror}", self.label
                        ) from None
                    raise JobFailed(
                        f"cannot copy {s.data_path} at byte {src_off + got}: {err.strerror}", s.path
                    ) from None
                if n == 0:
                    raise JobFailed(
                        f"cannot read {s.data_path} at byte {src_off + got}: "
                        "file ends early (truncated?)",
                        s.path,
                    )
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
            view = buf.data.cast("B")
            done = 0
            try:
                while done < nbytes:
                    done += os.pwrite(self.fd, view[done:nbytes], off + done)
            except OSError as err:
                raise JobFailed(f"cannot write built events: {err.strerror}", self.label) from None
            self.writeback.start(off, nbytes)

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
        flat = buf.data.cast("B")
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(offs)], strict=True):
            want = (int(b) - int(a)) * rb
            d0 = int(dest[a]) * rb
            got = 0
            try:
                while got < want:
                    n = os.preadv(self.rawfd[k], [flat[d0 + got : d0 + want]], int(offs[a]) + got)
                    if n == 0:
                        raise OSError(0, "file ends early (truncated?)")
                    got += n
            except OSError as err:
                raise JobFailed(
                    f"cannot read {s.data_path} at byte {int(offs[a])}: {err.strerror or err}",
                    s.path,
                ) from None
            self.bytes_read += want

    def _read_h5(self, k: int, src_rows: np.ndarray, dest: np.ndarray, buf: np.ndarray) -> None:
        d, s = self.dsets[k], self.sources[k]
        for a, b, s0, s1 in self._runs(k, src_rows):
            span = s1 - s0
            self.bytes_read += span * s.row_bytes
            dense = b - a == span and src_rows[a] == s0 and dest[b - 1] - dest[a] == b - a - 1
            try:
                if dense:
                    d.read_direct(buf, np.s_[s0:s1], np.s_[int(dest[a]) : int(dest[a]) + span])
                    continue
                sc = self.scratch[k]
                if sc is None or len(sc) < span:
                    sc = self.scratch[k] = np.empty((span, *s.row_shape), dtype=np.dtype(s.dtype))
                d.read_direct(sc, np.s_[s0:s1], np.s_[0:span])
            except OSError as err:
                reason = str(err).splitlines()[0]
                raise JobFailed(
                    f"cannot read {s.data_path} rows {s0}..{s1 - 1}: {reason}", s.path
                ) from None
            buf[dest[a:b]] = sc[src_rows[a:b] - s0]
