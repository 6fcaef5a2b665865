"""printable(): text from outside printed inert (engine/core/text.py); a Hypothesis property
over any text, the listings' human lines, and a real terminal (tmux) where a lock's host
holding ESC[2J and OSC 52 neither clears the screen nor writes the clipboard."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tests.props  # noqa: F401 (the project's Hypothesis profile)
from engine.core.log import HumanFormatter
from engine.core.text import printable
from engine.core.workspace import init_workspace

UNSAFE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
TMUX = shutil.which("tmux")
REPO = Path(__file__).resolve().parents[2]
EVIL = "evil\x1b[2J\x1b]52;c;cHduZWQ=\x07\r\nforged line \u202egnp.exe\x9b31m"


def _unescape(text: str) -> str:
    named = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\"}

    def one(m: re.Match[str]) -> str:
        s = m.group(1)
        return named[s] if s in named else chr(int(s[1:], 16))

    return re.sub(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[nrt\\])", one, text)


def _inert(text: str) -> bool:
    return all(unicodedata.category(c) not in UNSAFE for c in text)


@given(st.text())
def test_printable_is_inert_and_loses_nothing(s: str) -> None:
    out = printable(s)
    assert _inert(out)
    assert _unescape(out) == s  # escaped, never dropped: what is printed is what is there
    if _inert(s) and "\\" not in s:
        assert out == s  # ordinary text, accents and CJK included, is left alone


@given(st.dictionaries(st.sampled_from(["dlid", "why", "process", "note", "x"]), st.text()))
def test_human_log_lines_are_inert(fields: dict[str, str]) -> None:
    rec = logging.LogRecord("skydeck.t", logging.INFO, __file__, 1, "ev", None, None)
    rec.skydeck_event = {"event": "rejected\x1b[2J", **fields}
    line = HumanFormatter().format(rec)
    assert _inert(line) and "\n" not in line


def test_known_sequences() -> None:
    assert printable(EVIL) == (
        "evil\\x1b[2J\\x1b]52;c;cHduZWQ=\\x07\\r\\nforged line \\u202egnp.exe\\x9b31m"
    )
    assert printable("251125001") == "251125001" and printable(None) == "-"
    assert printable("caf\u00e9 \u65e5\u672c") == "caf\u00e9 \u65e5\u672c"


def _capture(session: str) -> str:
    return subprocess.run(
        [str(TMUX), "capture-pane", "-p", "-t", session], capture_output=True, text=True
    ).stdout


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed (make sysdeps installs it)")
def test_a_hostile_lock_and_delivery_do_not_act_on_a_terminal(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    ws.lock.mkdir(parents=True, exist_ok=True)
    lock = {"pid": 1, "host": EVIL, "start": 0.0, "stream": EVIL, "process": EVIL, "created": 0}
    (ws.lock / "halfpipe-251125001").write_text(json.dumps(lock))
    bad = ws.incoming_level0 / "2511\x1b[2J25009\x1b]52;c;cHduZWQ=\x07"
    bad.mkdir(parents=True)
    (bad / "MANIFEST.md5").write_text("")
    session = f"skydeck-esc-{os.getpid()}"
    engine = shlex.join([sys.executable, "-m", "engine", "-w", str(ws.root)])
    cmd = (
        f"cd {shlex.quote(str(REPO))} && echo BEFORE-MARK && {engine} locks; "
        f"{engine} watch --once --log-format human >/dev/null 2>&1; {engine} downlinks; "
        "echo AFTER-MARK; sleep 30"
    )
    env = dict(os.environ, TERM="xterm-256color", PYTHONPATH=str(REPO))
    subprocess.run(
        [str(TMUX), "new-session", "-d", "-s", session, "-x", "200", "-y", "50", cmd],
        check=True,
        env=env,
    )
    try:
        subprocess.run([str(TMUX), "set-option", "-t", session, "set-clipboard", "on"])
        deadline, screen = time.monotonic() + 60, ""
        while time.monotonic() < deadline and "AFTER-MARK" not in screen:
            time.sleep(0.2)
            screen = _capture(session)
        assert "AFTER-MARK" in screen, screen
        assert "BEFORE-MARK" in screen  # ESC[2J did not clear the screen
        assert "\\x1b[2J\\x1b]52;c;cHduZWQ=\\x07" in screen  # shown escaped, lock host
        assert "\\x1b[2J25009" in screen  # the rejected delivery's name too
        assert "\nforged line" not in screen  # CR/LF did not forge a line
        bufs = subprocess.run(
            [str(TMUX), "list-buffers", "-F", "#{buffer_sample}"], capture_output=True, text=True
        ).stdout
        assert "pwned" not in bufs  # OSC 52 did not reach the clipboard
    finally:
        subprocess.run([str(TMUX), "kill-session", "-t", session], capture_output=True)
