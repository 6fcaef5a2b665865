"""Memory stays bounded by the batch whatever the input size; progress shows on a terminal."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import engine_env, run_engine, run_mpi


@pytest.fixture(scope="module")
def big_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 MB of payload: 4 sources x 100 events of 1 MB."""
    d = tmp_path_factory.mktemp("big") / "src"
    run_engine(
        "mock", "--downlink", "251114007", "--events", "100", "--sources", "4",
        "--event-bytes", str(1 << 20), "-o", d, check=True,
    )  # fmt: skip
    return d


@pytest.mark.parametrize("kernel_copy", ["1", "0"])
def test_worker_memory_bounded_by_batch(
    tmp_path: Path, big_sources: Path, kernel_copy: str
) -> None:
    batch = 4
    res = run_mpi(
        2,
        "build",
        big_sources,
        "-o",
        tmp_path / "out.h5",
        "--batch",
        str(batch),
        "--json",
        env=engine_env(SKYDECK_KERNEL_COPY=kernel_copy),
    )
    assert res.returncode == 0, res.stderr
    rep = json.loads(res.stdout.strip().splitlines()[-1])
    input_bytes = sum(p.stat().st_size for p in big_sources.glob("*.h5"))
    batch_bytes = batch * 4 * 1_000_000
    (peak,) = rep["peak_rss_bytes"]
    assert input_bytes > 300e6
    # loading the inputs (or the output) whole would need > 300 MB on top of the interpreter
    assert peak < 2 * batch_bytes + 300e6, (peak, batch_bytes)


def test_progress_bar_on_a_terminal(tmp_path: Path, small_sources: Path) -> None:
    script = shutil.which("script")
    if script is None:
        pytest.skip("util-linux `script` (a pseudo-terminal) is not installed")
    cmd = shlex.join(
        [
            sys.executable,
            "-m",
            "engine",
            "build",
            str(small_sources),
            "-o",
            str(tmp_path / "out.h5"),
            "--batch",
            "1",
        ]
    )
    res = subprocess.run(
        [script, "-qec", cmd, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=120,
        env=engine_env(TERM="xterm-256color", COLUMNS="100"),
    )
    assert res.returncode == 0, res.stdout
    assert "/400" in res.stdout  # the bar's "done/total" column
    assert "built 400 events" in res.stdout
