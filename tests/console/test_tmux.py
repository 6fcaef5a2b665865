"""`skydeck` in a real terminal (tmux): it paints the workspace, and `q` quits it cleanly."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import fill_evil, fill_fixed, mock

TMUX = shutil.which("tmux")
REPO = Path(__file__).resolve().parents[2]


def _capture(session: str) -> str:
    return subprocess.run(
        [TMUX, "capture-pane", "-p", "-t", session],
        capture_output=True,  # type: ignore[list-item]
        text=True,
    ).stdout


def _wait_for(session: str, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _capture(session)
        if text in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not on screen within {timeout}s:\n{screen}")


def _start(ws, session: str, size: tuple[int, int] = (140, 40)) -> None:  # type: ignore[no-untyped-def]
    exe = shutil.which("skydeck", path=str(Path(sys.executable).parent))
    argv = [exe] if exe else [sys.executable, "-m", "console.app"]
    cmd = (
        f"cd {shlex.quote(str(REPO))} && {shlex.join(argv)} -w {shlex.quote(str(ws.root))}; "
        "echo SKYDECK-EXITED $?; sleep 30"
    )
    env = dict(os.environ, TERM="xterm-256color")
    subprocess.run(
        [TMUX, "new-session", "-d", "-s", session, "-x", str(size[0]), "-y", str(size[1]), cmd],
        check=True,
        env=env,
    )


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (make sysdeps installs it)")
@pytest.mark.parametrize("size", [(120, 40), (160, 48)])
def test_text_from_outside_shows_literally_in_a_terminal(ws, size) -> None:
    """A stream note with Rich markup and terminal escapes: the terminal shows the
    characters (the escapes written out), and nothing of it was interpreted."""
    fill_fixed(ws, now=time.time())
    fill_evil(ws, now=time.time())
    session = f"skydeck-evil-{os.getpid()}-{size[0]}"
    _start(ws, session, size)
    try:
        screen = _wait_for(session, "251126004")
        screen = _wait_for(session, "[link=https://evil.example]click[/link]")
        assert "\\x1b[31m" in screen  # the ESC written out, in the table or the detail line
        subprocess.run([TMUX, "send-keys", "-t", session, "/"], check=True)
        _wait_for(session, "! inverts; esc clears")  # the input has the focus: type into it
        subprocess.run([TMUX, "send-keys", "-t", session, "-l", "state:failed"], check=True)
        screen = _wait_for(session, "Downlinks 2/4")
        assert "state:failed" in screen  # the input stays open while a filter is set
        subprocess.run([TMUX, "send-keys", "-t", session, "Escape"], check=True)
        screen = _wait_for(session, "Downlinks 4/4")
        subprocess.run([TMUX, "send-keys", "-t", session, "q"], check=True)
        _wait_for(session, "SKYDECK-EXITED 0", timeout=15)
    finally:
        subprocess.run([TMUX, "kill-session", "-t", session], capture_output=True)


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (make sysdeps installs it)")
def test_skydeck_in_tmux_paints_and_quits(ws) -> None:
    mock(ws, "251125001", events=60)
    exe = shutil.which("skydeck", path=str(Path(sys.executable).parent))
    argv = [exe] if exe else [sys.executable, "-m", "console.app"]
    session = f"skydeck-test-{os.getpid()}"
    cmd = (
        f"cd {shlex.quote(str(REPO))} && {shlex.join(argv)} -w {shlex.quote(str(ws.root))}; "
        "echo SKYDECK-EXITED $?; sleep 30"
    )
    env = dict(os.environ, TERM="xterm-256color")
    subprocess.run(
        [TMUX, "new-session", "-d", "-s", session, "-x", "140", "-y", "40", cmd],
        check=True,
        env=env,
    )
    try:
        # the rows can be painted a frame before the tab labels (rows arrive as soon as the
        # first poll ends): wait for the whole first screen, every part of it checked
        screen = _wait_for(session, "251125001")
        for part in ("Downlinks", "arrived", "Locks"):
            screen = _wait_for(session, part, timeout=5.0)
        assert "Downlinks" in screen and "arrived" in screen and "Locks" in screen
        assert "251125001" in screen
        subprocess.run([TMUX, "send-keys", "-t", session, "q"], check=True)
        _wait_for(session, "SKYDECK-EXITED 0", timeout=15)
    finally:
        subprocess.run([TMUX, "kill-session", "-t", session], capture_output=True)
