"""`python -m console` and `skydeck --version`: the console starts without its entry
point script, and both say which skydeck they are."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import __version__
from engine.core.workspace import init_workspace
from tests.conftest import BIN, engine_env


def _console(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=engine_env(),
    )


def test_version_of_python_m_console_and_the_entry_point() -> None:
    res = _console("--version")
    assert res.returncode == 0 and res.stdout == f"skydeck {__version__}\n"
    script = BIN / "skydeck"
    if not script.exists():
        pytest.skip(f"{script} missing (the project is not installed in this venv)")
    res = subprocess.run(
        [str(script), "--version"], capture_output=True, text=True, timeout=60, env=engine_env()
    )
    assert res.returncode == 0 and res.stdout == f"skydeck {__version__}\n"


def test_python_m_console_help_and_bad_workspace(tmp_path: Path) -> None:
    res = _console("--help")
    assert res.returncode == 0 and res.stdout.startswith("usage: skydeck ")
    res = _console("-w", str(tmp_path / "nowhere"))
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "not a skydeck workspace" in res.stderr


def test_python_m_console_runs_the_app_and_quits_on_q(tmp_path: Path) -> None:
    """On a real pseudo-terminal: the console paints its panels, and `q` ends it with 0."""
    ws = init_workspace(tmp_path / "ws")
    env = engine_env(TERM="xterm-256color", COLUMNS="120", LINES="40")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "console", "-w", str(ws.root), "--read-only"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        start_new_session=True,
    )
    os.close(follower)
    seen = b""
    try:
        deadline = time.time() + 60
        while b"Downlinks" not in seen and time.time() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(leader, 65536)
                except OSError:  # the console exited: its pty closed
                    break
        assert b"Downlinks" in seen, seen[-2000:]
        os.write(leader, b"q")
        while proc.poll() is None and time.time() < deadline + 30:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    os.read(leader, 65536)  # keep the pty drained while it exits
                except OSError:
                    break
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
