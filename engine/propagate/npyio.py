"""Streaming .npy writer: append rows of unknown total count with bounded memory.

Hits arrive chunk by chunk and their number is unknown until the end; holding them all in
memory would defeat production mode at billions of photons. The header is written with a
fixed-size placeholder and rewritten in place with the real row count on close; the file
lives under a temporary name until the event directory is renamed into place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

_HEADER_LEN = 128  # magic(6) + version(2) + len(2) + dict, padded: room for 20-digit counts


def _header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    text = repr(d).encode("latin1")
    body_len = _HEADER_LEN - 10
    if len(text) + 1 > body_len:
        raise ValueError("npy header too long")
    text = text + b" " * (body_len - len(text) - 1) + b"\n"
    return b"\x93NUMPY\x01\x00" + body_len.to_bytes(2, "little") + text


class NpyStream:
    """Append arrays of shape (k, *row_shape) and dtype ``dtype``; ``close`` fixes the count."""

    def __init__(self, path: Path, row_shape: tuple[int, ...], dtype: np.dtype | type) -> None:
        self.path = path
        self.row_shape = tuple(row_shape)
        self.dtype = np.dtype(dtype)
        self.count = 0
        self._fh: BinaryIO | None = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._fh.write(_header(self.dtype, (0, *self.row_shape)))

    def append(self, rows: np.ndarray) -> None:
        assert self._fh is not None
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"row shape {rows.shape[1:]} != {self.row_shape}")
        self._fh.write(rows.tobytes())
        self.count += rows.shape[0]

    def close(self) -> int:
        """Rewrite the header with the final count, fsync, close; returns the row count."""
        if self._fh is None:
            return self.count
        self._fh.seek(0)
        self._fh.write(_header(self.dtype, (self.count, *self.row_shape)))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        return self.count

    def abort(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
