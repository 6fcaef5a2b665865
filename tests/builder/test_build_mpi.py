"""Real `mpiexec -n 2` and `-n 3`: results identical to the one-process build, dataset by
dataset, for any batch size; bad input and dead workers end the job cleanly."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from engine.builder.verify import compare_datasets, verify_built
from tests.builder.test_build_cli import assert_phases
from tests.conftest import engine_env, run_engine, run_mpi

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, small_sources: Path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ref")
    refs = {}
    for key, sel in (("all", None), ("red", 'color == "red"')):
        out = d / f"{key}.h5"
        args = ["build", small_sources, "-o", out] + (["--select", sel] if sel else [])
        run_engine(*args, check=True)
        refs[key] = out
    return refs


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize(
    ("key", "batch"), [("all", "64"), ("red", "1"), ("red", "13"), ("all", "1000")]
)
def test_identical_to_one_process(
    tmp_path: Path,
    small_sources: Path,
    reference: dict[str, Path],
    ranks: int,
    key: str,
    batch: str,
) -> None:
    out = tmp_path / "out.h5"
    args = ["build", small_sources, "-o", out, "--batch", batch, "--json"]
    if key == "red":
        args += ["--select", 'color == "red"']
    res = run_mpi(ranks, *args)
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout.strip().splitlines()[-1])  # only rank 0 prints
    assert res.stdout.count('{"output": ') == 1  # one summary (it holds nested objects: phases)
    assert_phases(rep)
    assert rep["ranks"] == ranks and rep["workers"] == ranks - 1
    assert (
        len(rep["per_rank_bytes"]) == ranks - 1 and sum(rep["per_rank_bytes"]) == rep["bytes_read"]
    )
    assert compare_datasets(reference[key], out) == []
    assert verify_built(out).ok


def test_bad_input_under_mpi(tmp_path: Path, small_sources: Path) -> None:
    res = run_mpi(3, "build", small_sources, "-o", tmp_path / "out.h5", "--select", "nosuch > 1")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing field 'nosuch'" in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_dead_worker_aborts_the_job(tmp_path: Path, small_sources: Path) -> None:
    env = engine_env(SKYDECK_FAULT="kill:2:0")  # rank 2 SIGKILLs itself before its first batch
    t0 = time.monotonic()
    res = run_mpi(
        3, "build", small_sources, "-o", tmp_path / "out.h5", "--batch", "5", env=env, timeout=60
    )
    assert time.monotonic() - t0 < 60
    assert res.returncode != 0
    assert (
        "BAD TERMINATION" in res.stdout + res.stderr
        or "killed" in (res.stdout + res.stderr).lower()
    )
    assert not (tmp_path / "out.h5").exists()
    # the dead job's temporary is swept by the next run, which succeeds
    run_engine("build", small_sources, "-o", tmp_path / "out.h5", check=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]


def _corrupt_source(d: Path) -> Path:
    """A gzip-compressed source whose timestamps are fine but one payload chunk is garbage:
    it passes validation on rank 0 and fails when a worker reads that chunk."""
    import h5py
    import numpy as np

    with h5py.File(d / "cspad.h5") as f:
        ts = f["timestamp"][()]
    bad = d / "zyla.h5"
    with h5py.File(bad, "w") as f:
        f["timestamp"] = ts
        f.create_dataset(
            "data", data=np.ones((len(ts), 100), np.int32), chunks=(10, 100), compression="gzip"
        )
    with h5py.File(bad) as f:
        info = f["data"].id.get_chunk_info(3)
    with open(bad, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)
    return bad


@pytest.mark.parametrize("ranks", [1, 3])
def test_unreadable_payload_fails_the_job(tmp_path: Path, small_sources: Path, ranks: int) -> None:
    import shutil

    d = tmp_path / "in"
    shutil.copytree(small_sources, d)
    bad = _corrupt_source(d)
    args = ["build", d, "-o", tmp_path / "out.h5", "--batch", "8"]
    res = run_engine(*args) if ranks == 1 else run_mpi(ranks, *args, timeout=60)
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "cannot read /data rows 30..39" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
