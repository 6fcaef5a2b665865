"""Shared fixtures: run the real CLI (in a subprocess, as users do) and real mpiexec."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.postgres.plugin"]  # pg_server, pg_url, state_backend

BIN = Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=str(BIN)) or shutil.which("mpiexec")


def engine_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("SKYDECK_WORKSPACE", None)
    env.pop("SKYDECK_FAULT", None)
    env.update(extra)
    return env


def run_engine(
    *args: str | Path,
    cwd: Path | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``python -m engine ARGS``: the same code path as the ``skydeck-engine`` entry point."""
    cmd = [sys.executable, "-m", "engine", *map(str, args)]
    res = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env or engine_env()
    )
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} -> {res.returncode}\nstdout:{res.stdout}\nstderr:{res.stderr}")
    return res


def run_mpi(
    n: int,
    *args: str | Path,
    cwd: Path | None = None,
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    if MPIEXEC is None:
        pytest.skip("mpiexec not found (the mpich wheel provides it)")
    cmd = [MPIEXEC, "-n", str(n), sys.executable, "-m", "engine", *map(str, args)]
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env or engine_env()
    )


@pytest.fixture(scope="session")
def small_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mock delivery written to a plain directory: 3 sources, 400 events of 4 kB, 2 runs."""
    d = tmp_path_factory.mktemp("mock") / "src"
    run_engine(
        "mock",
        "--downlink",
        "251114005",
        "--events",
        "400",
        "--event-bytes",
        "4000",
        "--sources",
        "3",
        "--runs",
        "2",
        "--chunks",
        "3",
        "--seed",
        "7",
        "-o",
        d,
        check=True,
    )
    return d


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """A factory of small real file systems: ``mount_tmpfs("small", "size=1m")`` mounts a
    tmpfs with those options under tmp_path (needs root) and returns it; all are unmounted
    at the end. Skips with the reason where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(name: str, opts: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)], capture_output=True, text=True
        )
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip() or res.returncode}")
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], check=False, capture_output=True)
