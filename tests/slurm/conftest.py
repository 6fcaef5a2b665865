"""The real Slurm cluster the `slurm`-marked tests run against (tests/slurm/cluster.sh).

A session fixture uses a running cluster (its env file is there and ``sinfo`` answers), or
starts one with ``cluster.sh up`` when running as root (and stops only what it started);
elsewhere every `slurm` test is skipped with the reason. ``SKYDECK_SLURM_DIR`` moves the
scratch directory (default /tmp/skydeck-slurm), as for the script.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services import read_env_file

HERE = Path(__file__).resolve().parent
CLUSTER = HERE / "cluster.sh"
SLURM_DIR = Path(os.environ.get("SKYDECK_SLURM_DIR", "/tmp/skydeck-slurm"))


def _env_file() -> dict[str, str]:
    return read_env_file(SLURM_DIR / "env")


def node_takes_jobs(env: dict[str, str]) -> bool:
    """sinfo answers and the node takes jobs."""
    if not env or shutil.which("sinfo") is None:
        return False
    try:
        res = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%t"],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, **env},
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and any(
        s.strip().rstrip("*~#") in ("idle", "mix", "alloc") for s in res.stdout.splitlines()
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[dict[str, str]]:
    """SLURM_CONF=... of a running cluster, exported into os.environ for the session."""
    started = False
    env = _env_file()
    if not node_takes_jobs(env):
        if os.geteuid() != 0:
            pytest.skip(
                f"no Slurm cluster answers ({SLURM_DIR}/env) and not root to start "
                "one: run tests/slurm/cluster.sh up as root"
            )
        res = subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            tail = (res.stderr.strip().splitlines() or ["?"])[-1]
            pytest.skip(f"tests/slurm/cluster.sh up failed: {tail}")
        started = True
        env = _env_file()
        if not node_takes_jobs(env):
            pytest.skip(f"cluster.sh up ran but sinfo does not answer (logs in {SLURM_DIR})")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if started:
            subprocess.run([str(CLUSTER), "down"], capture_output=True, timeout=120)


@pytest.fixture(autouse=True)
def _on_the_cluster(slurm_cluster: dict[str, str]) -> dict[str, str]:
    """Every test in this folder runs against the cluster (or is skipped with the reason)."""
    return slurm_cluster


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test in this folder is a `slurm` test (``-m 'not slurm'`` leaves them out)."""
    for item in items:
        if Path(str(item.fspath)).is_relative_to(HERE):
            item.add_marker(pytest.mark.slurm)


def squeue_names(with_dirs: bool = False) -> dict[str, str]:
    """job id -> name of every job in the queue (``with_dirs``: its working directory)."""
    res = subprocess.run(
        ["squeue", "-h", "-o", "%i|%Z" if with_dirs else "%i|%j"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return dict(line.split("|", 1) for line in res.stdout.split() if "|" in line)
