"""The numpy backend under real ``mpiexec -n K``: rank 0 collects and writes, the other
ranks compute; the event is identical to a plain run, and refusals exit 2 with one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.propagate.event import Request, propagate
from tests.propagate.conftest import TBOX_DETECT

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich)"),
]


def mpirun(k: int, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MPIEXEC, "-n", str(k), sys.executable, "-m", "engine", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_mpi_ranks_give_the_same_event(tmp_path):
    ref = tmp_path / "ref"
    propagate(Request(TBOX_DETECT, ref, photons=60_000, seed=9, backend="numpy", workers=1))
    out = tmp_path / "mpi"
    r = mpirun(
        3,
        "propagate",
        TBOX_DETECT,
        "-o",
        out,
        "--photons",
        "60000",
        "--seed",
        "9",
        "--chunk",
        "7000",
        "--backend",
        "numpy",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("photons ->") == 1  # only rank 0 reports
    assert np.array_equal(np.load(out / "ht.npy"), np.load(ref / "ht.npy"))
    import json

    meta = json.loads((out / "meta.json").read_text())
    assert "MPI 3 ranks" in meta["device"] and meta["workers"] == 2


def test_mpi_refusal_is_one_line_exit_2(tmp_path):
    r = mpirun(2, "propagate", TBOX_DETECT, "-o", tmp_path / "ev", "--hitmask", "QQ")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "unknown flag 'QQ'" in r.stderr
    assert not (tmp_path / "ev").exists()
