"""`make demo` says where its workspace is and how big it grows; `make clean-demo` removes that
workspace and nothing else. Runs the real Makefile targets on
workspaces made by the real `skydeck-engine init`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_engine

REPO = Path(__file__).resolve().parents[1]
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make not installed")


def _make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    return subprocess.run(
        [str(MAKE), "-s", "--no-print-directory", "-C", str(REPO), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_demo_says_where_and_how_big(tmp_path: Path) -> None:
    ws = tmp_path / "demo ws"
    res = _make("demo-where", f"DEMO_WS={ws}")
    assert res.returncode == 0, res.stderr
    assert str(ws) in res.stdout and "35 MB" in res.stdout and "make clean-demo" in res.stdout
    # make demo prints it first (dry run: the console itself needs a terminal)
    dry = _make("-n", "-o", ".venv/.skydeck-installed", "demo", f"DEMO_WS={ws}")
    assert dry.returncode == 0 and "demo-where" in dry.stdout and "--demo" in dry.stdout


def test_clean_demo_removes_the_workspace_and_nothing_else(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    run_engine("-w", ws, "init", check=True)
    elsewhere = tmp_path / "elsewhere"  # an area a config moved out, reached by a link
    elsewhere.mkdir()
    (elsewhere / "keep.h5").write_bytes(b"x")
    (ws / "stage-link").symlink_to(elsewhere)
    (tmp_path / "sibling.txt").write_text("keep")
    res = _make("clean-demo", f"DEMO_WS={ws}")
    assert res.returncode == 0, res.stderr
    assert f"removed {ws}" in res.stdout
    assert not ws.exists()
    assert (elsewhere / "keep.h5").read_bytes() == b"x" and (tmp_path / "sibling.txt").exists()
    # again: nothing there is not an error
    res = _make("clean-demo", f"DEMO_WS={ws}")
    assert res.returncode == 0 and "no demo workspace" in res.stdout


def test_clean_demo_refuses_what_is_not_a_workspace(tmp_path: Path) -> None:
    plain = tmp_path / "data"
    plain.mkdir()
    (plain / "precious.h5").write_bytes(b"x")
    res = _make("clean-demo", f"DEMO_WS={plain}")
    assert res.returncode != 0
    (line,) = [ln for ln in res.stderr.splitlines() if "clean-demo:" in ln]
    assert str(plain) in line and "no skydeck.toml" in line
    assert (plain / "precious.h5").exists()
    # a link to a workspace: neither the link nor the workspace goes
    ws = tmp_path / "ws"
    run_engine("-w", ws, "init", check=True)
    link = tmp_path / "link"
    link.symlink_to(ws)
    res = _make("clean-demo", f"DEMO_WS={link}")
    assert res.returncode != 0 and "refusing" in res.stderr
    assert link.is_symlink() and (ws / "skydeck.toml").exists()
    # the checkout itself
    res = _make("clean-demo", "DEMO_WS=.")
    assert res.returncode != 0 and "refusing" in res.stderr
    assert (REPO / "Makefile").exists()
