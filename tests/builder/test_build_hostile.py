"""Hostile input to `build`: an output that aliases an input, sizes declared by a
tiny file, absurd CLI numbers, scalar timestamps, runaway selections. Each is exit 2 with
one line naming the file, and nothing is lost or half-written."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import engine_env, run_engine, run_mpi


def _one_line(res: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    line = res.stderr.strip()
    assert "\n" not in line and line.startswith("skydeck-engine: "), res.stderr
    for n in needles:
        assert n in line, (n, line)
    return line


def _digests(d: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.iterdir())
        if p.is_file()
    }


@pytest.fixture
def src(tmp_path: Path, small_sources: Path) -> Path:
    d = tmp_path / "in"
    shutil.copytree(small_sources, d)
    return d


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink", "hardlink"])
def test_output_aliasing_an_input_is_refused(tmp_path: Path, src: Path, spelling: str) -> None:
    """Found by the hostile-input review: `build DIR -o DIR/epix.h5` replaced its source and exited 0."""
    before = _digests(src)
    target = src / "epix.h5"
    out = {
        "same": target,
        "dotdot": src / ".." / src.name / "epix.h5",
        "symlink": tmp_path / "link.h5",
        "hardlink": tmp_path / "hard.h5",
    }[spelling]
    if spelling == "symlink":
        out.symlink_to(target)
    elif spelling == "hardlink":
        os.link(target, out)
    res = run_engine("build", src, "-o", out)
    _one_line(res, 2, str(out), "input", "epix.h5")
    assert _digests(src) == before  # every source intact
    assert not [p for p in src.iterdir() if ".tmp-" in p.name]


def test_index_out_aliasing_an_input_is_refused(tmp_path: Path, src: Path) -> None:
    before = _digests(src)
    res = run_engine("build", src, "-o", tmp_path / "out.h5", "--index-out", src / "cspad.h5")
    _one_line(res, 2, "--index-out", "cspad.h5")
    assert _digests(src) == before
    assert not (tmp_path / "out.h5").exists()


def test_declared_rows_beyond_the_file_are_refused(tmp_path: Path) -> None:
    """Found by the hostile-input review: a 2 kB file declaring 2**40 timestamps made build allocate 8 TiB."""
    d = tmp_path / "in"
    d.mkdir()
    bomb = d / "bomb.h5"
    with h5py.File(bomb, "w") as f:
        f.create_dataset("timestamp", shape=(2**40,), dtype="u8")
        f.create_dataset("data", shape=(2**40, 4), dtype="u1")
    assert bomb.stat().st_size < 10_000
    res = run_engine("build", d, "-o", tmp_path / "out.h5")
    _one_line(res, 2, str(bomb), "/timestamp", "stores only")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_declared_row_size_beyond_memory_is_refused(tmp_path: Path) -> None:
    """A row shape of 2**36 bytes: the batch buffers alone would exceed any memory."""
    d = tmp_path / "in"
    d.mkdir()
    wide = d / "wide.h5"
    with h5py.File(wide, "w") as f:
        f["timestamp"] = np.arange(1, 4, dtype=np.uint64)
        f.create_dataset("data", shape=(3, 2**36), dtype="u1")
    res = run_engine("build", d, "-o", tmp_path / "out.h5", "--batch", "1")
    _one_line(res, 2, str(wide), "memory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_index_in_declaring_more_than_it_holds_is_refused(tmp_path: Path, src: Path) -> None:
    idx = tmp_path / "index.h5"
    with h5py.File(idx, "w") as f:
        f.create_dataset("timestamp", shape=(2**40,), dtype="u8")
    res = run_engine("build", src, "-o", tmp_path / "out.h5", "--index-in", idx)
    _one_line(res, 2, str(idx), "stores only")


@pytest.mark.parametrize("value", ["99999999999999", "0", "-3", "inf", "1e400", "lots"])
def test_batch_is_bounded_at_parse_time(tmp_path: Path, src: Path, value: str) -> None:
    """`--batch 99999999999999` tried to allocate 88.8 PiB."""
    res = run_engine("build", src, "-o", tmp_path / "out.h5", "--batch", value)
    _one_line(res, 2, "--batch")
    assert not (tmp_path / "out.h5").exists()


def test_scalar_timestamp_is_refused(tmp_path: Path, src: Path) -> None:
    """Found by the hostile-input review: a 0-d /timestamp was taken for a one-row source."""
    bad = src / "zyla.h5"
    with h5py.File(bad, "w") as f:
        f["timestamp"] = np.uint64(5)
        f["data"] = np.zeros((1, 2), np.int32)
    _one_line(
        run_engine("build", src, "-o", tmp_path / "out.h5"), 2, str(bad), "/timestamp must be 1-D"
    )
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize(
    "expr",
    ["not " * 5000 + "x", "not " * 1000 + "x", "(" * 200 + "x" + ")" * 200],
    ids=["not5000", "not1000", "parens200"],
)
def test_runaway_selection_is_one_line(tmp_path: Path, src: Path, expr: str) -> None:
    """Found by the hostile-input review: a 5000-deep `not` ended in a RecursionError traceback."""
    res = run_engine("build", src, "-o", tmp_path / "out.h5", "--select", expr)
    _one_line(res, 2, "selection")
    assert not (tmp_path / "out.h5").exists()


@pytest.mark.parametrize(
    ("fault", "code", "word"), [("term", 143, "terminated"), ("int", 130, "interrupted")]
)
def test_signal_mid_build_removes_the_temporary(
    tmp_path: Path, small_sources: Path, fault: str, code: int, word: str
) -> None:
    """Found by the hostile-input review for build: SIGTERM killed it outright, leaving `.out.h5.tmp-<pid>`;
    now SIGTERM and SIGINT both clean up and exit 143 / 130. The build signals itself after
    its second batch (SKYDECK_FAULT), so the moment is exact."""
    env = engine_env(SKYDECK_FAULT=f"{fault}:0:2")
    res = run_engine("build", small_sources, "-o", tmp_path / "out.h5", "--batch", "8", env=env)
    assert res.returncode == code, res.stderr
    assert res.stderr.strip() == f"skydeck-engine: {word}"
    assert list(tmp_path.iterdir()) == []


def test_sigterm_to_one_mpi_rank_fails_the_job_cleanly(tmp_path: Path, small_sources: Path) -> None:
    """Under mpiexec a rank signalled alone tells rank 0, which stops the other ranks and
    removes the temporary output (exit 1, one line naming the rank)."""
    env = engine_env(SKYDECK_FAULT="term:1:1")
    res = run_mpi(
        3, "build", small_sources, "-o", tmp_path / "out.h5", "--batch", "5", env=env, timeout=120
    )
    assert res.returncode == 1, res.stderr
    line = res.stderr.strip()
    assert "\n" not in line and "rank 1 terminated" in line, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_fifo_among_the_sources_is_refused(tmp_path: Path, src: Path) -> None:
    """A FIFO named like a source blocked HDF5's open forever; it is not a regular file."""
    fifo = src / "zyla.h5"
    os.mkfifo(fifo)
    res = run_engine("build", src, "-o", tmp_path / "out.h5", timeout=30)
    _one_line(res, 2, str(fifo), "not a regular file")
    assert not (tmp_path / "out.h5").exists()


def test_a_reserve_that_is_no_number_is_refused(tmp_path: Path, src: Path) -> None:
    """SKYDECK_RESERVE_BYTES=lots was silently read as no reserve at all."""
    res = run_engine(
        "build", src, "-o", tmp_path / "out.h5", env=engine_env(SKYDECK_RESERVE_BYTES="lots")
    )
    _one_line(res, 2, "SKYDECK_RESERVE_BYTES")
    assert not (tmp_path / "out.h5").exists()
