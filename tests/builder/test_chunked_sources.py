"""Chunked unfiltered sources are copied chunk by chunk at the byte offsets HDF5 reports:
a build from them equals the build from contiguous sources of the same data,
byte for byte, payload and index, for any batch size, read path and number of ranks."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import engine_env, run_engine, run_mpi

# odd dtypes and row shapes; the principal (s0) has every event, the others lack 30-60 %
DTYPES = [(">i2", (7, 3)), ("<f8", (5,)), ("u1", (13,)), ("<c8", (2, 2))]
EVENTS = 103  # not a multiple of any chunk or batch size: partial last chunks and batches
CHUNK_ROWS = [8, 5, 16, 3]


def _data(seed: int = 13) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    ts = np.uint64(10**18) + np.cumsum(rng.integers(1000, 2000, EVENTS)).astype(np.uint64)
    out = []
    for k, (dtype, shape) in enumerate(DTYPES):
        keep = np.ones(EVENTS, bool) if k == 0 else rng.random(EVENTS) >= rng.uniform(0.3, 0.6)
        n = int(keep.sum())
        out.append((ts[keep], rng.integers(-1000, 1000, (n, *shape)).astype(dtype)))
    return out


def _write(d: Path, chunked: bool, hole: bool = False) -> Path:
    """The sources, contiguous or chunked; ``hole``: one chunk of s1 is never written, so
    HDF5 has no offset for it (it reads as the fill value, zeros, as the contiguous twin)."""
    d.mkdir()
    for k, (ts, data) in enumerate(_data()):
        if hole and k == 1:
            data = data.copy()
            data[CHUNK_ROWS[1] : 2 * CHUNK_ROWS[1]] = 0
        with h5py.File(d / f"s{k}.h5", "w") as f:
            f["timestamp"] = ts
            if k == 0:
                f["smalldata/run"] = np.full(len(ts), 7, dtype=np.int64)
            if not chunked:
                f.create_dataset("data", data=data)
                continue
            ds = f.create_dataset(
                "data", shape=data.shape, dtype=data.dtype, chunks=(CHUNK_ROWS[k], *data.shape[1:])
            )
            c = CHUNK_ROWS[k]
            for a in range(0, len(data), c):
                if hole and k == 1 and a == c:
                    continue
                ds[a : a + c] = data[a : a + c]
    return d


def _datasets(path: Path) -> dict[str, bytes]:
    """Every dataset of a built file as raw bytes, with its dtype and shape."""
    out: dict[str, bytes] = {}

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            a = obj[()]
            out[name] = f"{a.dtype.str}{a.shape}".encode() + np.ascontiguousarray(a).tobytes()

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def _build(src: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> dict:
    res = run_engine("build", src, "-o", out, "--json", *extra, env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("layouts")
    src = {
        "contiguous": _write(d / "contiguous", chunked=False),
        "chunked": _write(d / "chunked", chunked=True),
        "contiguous-hole": _write(d / "contiguous-hole", chunked=False, hole=True),
        "chunked-hole": _write(d / "chunked-hole", chunked=True, hole=True),
    }
    return src


@pytest.fixture(scope="module")
def reference(
    tmp_path_factory: pytest.TempPathFactory, layouts: dict[str, Path]
) -> dict[str, dict[str, bytes]]:
    d = tmp_path_factory.mktemp("ref")
    refs = {}
    for key in ("contiguous", "contiguous-hole"):
        _build(layouts[key], d / f"{key}.h5")
        refs[key] = _datasets(d / f"{key}.h5")
    return refs


def test_sources_are_what_the_test_means(layouts: dict[str, Path]) -> None:
    with h5py.File(layouts["chunked"] / "s1.h5") as f:
        d = f["data"]
        assert d.chunks == (CHUNK_ROWS[1], 5) and d.compression is None
        assert d.id.get_num_chunks() == -(-d.shape[0] // CHUNK_ROWS[1])
    with h5py.File(layouts["chunked-hole"] / "s1.h5") as f:
        d = f["data"]
        assert d.id.get_num_chunks() == -(-d.shape[0] // CHUNK_ROWS[1]) - 1
    with h5py.File(layouts["contiguous"] / "s0.h5") as f:
        assert f["data"].chunks is None and f["data"].dtype == np.dtype(">i2")


@pytest.mark.parametrize("batch", ["1", "7", "64", "1000"])
def test_chunked_equals_contiguous(
    tmp_path: Path, layouts: dict[str, Path], reference: dict[str, dict[str, bytes]], batch: str
) -> None:
    rep = _build(layouts["chunked"], tmp_path / "out.h5", "--batch", batch)
    built = _datasets(tmp_path / "out.h5")
    assert sorted(built) == sorted(reference["contiguous"])
    for name, raw in reference["contiguous"].items():
        assert built[name] == raw, name
    # every present row read once at its own offset: no chunk-aligned h5py spans
    present = sum(len(data) * data[0].nbytes for _, data in _data())
    assert rep["bytes_read"] == present
    assert rep["events"] == EVENTS


def test_chunked_without_kernel_copy_equals_contiguous(
    tmp_path: Path, layouts: dict[str, Path], reference: dict[str, dict[str, bytes]]
) -> None:
    """The preadv path reads the same chunk offsets."""
    _build(
        layouts["chunked"],
        tmp_path / "out.h5",
        "--batch",
        "9",
        env=engine_env(SKYDECK_KERNEL_COPY="0"),
    )
    assert _datasets(tmp_path / "out.h5") == reference["contiguous"]


@pytest.mark.parametrize("batch", ["1", "6", "64"])
def test_unallocated_chunk_reads_as_zeros(
    tmp_path: Path, layouts: dict[str, Path], reference: dict[str, dict[str, bytes]], batch: str
) -> None:
    """A chunk HDF5 has no offset for goes through HDF5 (the fill value), the rest by offset."""
    _build(layouts["chunked-hole"], tmp_path / "out.h5", "--batch", batch)
    assert _datasets(tmp_path / "out.h5") == reference["contiguous-hole"]


@pytest.mark.mpi
@pytest.mark.parametrize(("ranks", "batch"), [(2, "5"), (3, "1"), (3, "64")])
def test_chunked_under_mpi_equals_contiguous(
    tmp_path: Path,
    layouts: dict[str, Path],
    reference: dict[str, dict[str, bytes]],
    ranks: int,
    batch: str,
) -> None:
    out = tmp_path / "out.h5"
    res = run_mpi(ranks, "build", layouts["chunked"], "-o", out, "--batch", batch)
    assert res.returncode == 0, res.stderr
    assert _datasets(out) == reference["contiguous"]
