"""Bad input: each case exits 2 (1 mid-job) with one line naming the file and the problem,
and leaves no output file behind."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import run_engine


def _one_line_error(res: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    line = res.stderr.strip()
    assert "\n" not in line, res.stderr
    assert line.startswith("skydeck-engine: ")
    for n in needles:
        assert n in line, (n, line)
    return line


def _no_output(d: Path) -> None:
    leftovers = [p.name for p in d.iterdir() if p.name.startswith(("out", ".out"))]
    assert leftovers == []


def _write(path: Path, ts: np.ndarray | None, data: np.ndarray | None) -> Path:
    with h5py.File(path, "w") as f:
        if ts is not None:
            f["timestamp"] = ts
        if data is not None:
            f["data"] = data
    return path


@pytest.fixture
def good(tmp_path: Path, small_sources: Path) -> Path:
    d = tmp_path / "in"
    shutil.copytree(small_sources, d)
    return d


def test_truncated_file(tmp_path: Path, good: Path) -> None:
    f = good / "epix.h5"
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 2)
    _one_line_error(run_engine("build", good, "-o", tmp_path / "out.h5"), 2, str(f), "truncated")
    _no_output(tmp_path)


def test_not_hdf5(tmp_path: Path, good: Path) -> None:
    (good / "epix.h5").write_text("timestamp,data\n1,2\n")
    _one_line_error(
        run_engine("build", good, "-o", tmp_path / "out.h5"),
        2,
        str(good / "epix.h5"),
        "not an HDF5 file",
    )
    _no_output(tmp_path)


@pytest.mark.parametrize(
    ("ts", "data", "needle"),
    [
        (None, np.zeros((3, 2), np.int32), "missing dataset /timestamp"),
        (np.arange(3, dtype=np.uint64), None, "missing dataset /data"),
        (np.arange(3, dtype=np.uint64), np.zeros((4, 2), np.int32), "length mismatch"),
        (np.array([1, 3, 2], dtype=np.uint64), np.zeros((3, 2), np.int32), "unsorted timestamps"),
        (np.array([1, 2, 2], dtype=np.uint64), np.zeros((3, 2), np.int32), "duplicate timestamps"),
        (np.array([1.0, 2.0, 3.0]), np.zeros((3, 2), np.int32), "must hold integers"),
        (np.zeros((3, 2), np.uint64), np.zeros((3, 2), np.int32), "must be 1-D"),
    ],
)
def test_bad_source(tmp_path: Path, good: Path, ts, data, needle: str) -> None:  # type: ignore[no-untyped-def]
    bad = _write(good / "zyla.h5", ts, data)
    _one_line_error(run_engine("build", good, "-o", tmp_path / "out.h5"), 2, str(bad), needle)
    _no_output(tmp_path)


def test_missing_inputs(tmp_path: Path) -> None:
    _one_line_error(
        run_engine("build", tmp_path / "nope.h5", "-o", tmp_path / "out.h5"),
        2,
        "nope.h5",
        "no such file",
    )
    (tmp_path / "empty").mkdir()
    _one_line_error(
        run_engine("build", tmp_path / "empty", "-o", tmp_path / "out.h5"), 2, "empty", "no *.h5"
    )


def test_selection_problems(tmp_path: Path, small_sources: Path) -> None:
    out = tmp_path / "out.h5"
    _one_line_error(
        run_engine("build", small_sources, "-o", out, "--select", 'colour == "red"'),
        2,
        "cspad.h5",
        "missing field 'colour'",
    )
    _one_line_error(
        run_engine("build", small_sources, "-o", out, "--select", 'color == "purple"'),
        2,
        "matches no events",
    )
    _one_line_error(
        run_engine("build", small_sources, "-o", out, "--select", "__import__('os')"),
        2,
        "not allowed",
    )
    _no_output(tmp_path)


def test_output_directory_missing(tmp_path: Path, small_sources: Path) -> None:
    _one_line_error(
        run_engine("build", small_sources, "-o", tmp_path / "no" / "out.h5"),
        2,
        str(tmp_path / "no"),
        "does not exist",
    )


def test_read_only_output_directory(small_sources: Path, mount_tmpfs) -> None:  # type: ignore[no-untyped-def]
    ro = mount_tmpfs("ro", "ro,size=1m")
    _one_line_error(
        run_engine("build", small_sources, "-o", ro / "out.h5"), 2, str(ro), "Read-only file system"
    )


def test_full_disk_refused_before_work(small_sources: Path, mount_tmpfs) -> None:  # type: ignore[no-untyped-def]
    small = mount_tmpfs("small", "size=1m")
    _one_line_error(
        run_engine("build", small_sources, "-o", small / "out.h5"), 2, "not enough disk space"
    )
    assert list(small.iterdir()) == []


def test_disk_filling_up_mid_job(small_sources: Path, mount_tmpfs) -> None:  # type: ignore[no-untyped-def]
    # a negative reserve lets the job start although it cannot fit: the write hits ENOSPC
    small = mount_tmpfs("small", "size=1m")
    res = run_engine("build", small_sources, "-o", small / "out.h5", "--reserve", "-100000000")
    _one_line_error(res, 1, "No space left on device")
    assert list(small.iterdir()) == []


def test_stale_temporary_is_swept(tmp_path: Path, small_sources: Path) -> None:
    stale = tmp_path / ".out.h5.tmp-999999999"
    stale.write_bytes(b"half-written")
    run_engine("build", small_sources, "-o", tmp_path / "out.h5", check=True)
    assert not stale.exists() and (tmp_path / "out.h5").exists()


def test_usage_errors_exit_2(tmp_path: Path, small_sources: Path) -> None:
    res = run_engine("build", small_sources)
    assert res.returncode == 2 and "required" in res.stderr
    _one_line_error(
        run_engine("build", small_sources, "-o", tmp_path / "out.h5", "--batch", "0"), 2, "--batch"
    )
