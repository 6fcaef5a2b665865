"""`skydeck-engine --help` documents every exit code and environment variable.

The codes are read from the modules that define them (engine.core.errors, engine.core.
interrupt) and the variables from the engine's sources, so a new code or variable that the
epilog does not list fails here. (That --help stays import-free: tests/test_startup.py.)
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.core import errors, interrupt
from tests.conftest import run_engine

REPO = Path(__file__).resolve().parents[1]
# variables the engine reads that are not for users, each with the reason
UNDOCUMENTED = {"SKYDECK_FAULT": "fault injection for the builder's tests"}


def _help() -> str:
    res = run_engine("--help")
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_every_exit_code_is_in_the_epilog() -> None:
    codes = {
        name: getattr(mod, name)
        for mod in (errors, interrupt)
        for name in dir(mod)
        if name.startswith("EXIT_")
    }
    assert set(codes) >= {
        "EXIT_OK",
        "EXIT_FAILED",
        "EXIT_USAGE",
        "EXIT_BUSY",
        "EXIT_INTERRUPTED",
        "EXIT_TERMINATED",
    }
    epilog = _help().split("exit codes:", 1)[1]
    listed = {int(m) for m in re.findall(r"^  (\d+) +\S", epilog, re.MULTILINE)}
    assert listed == set(codes.values())


def test_every_environment_variable_is_in_the_epilog() -> None:
    read = set()
    for path in (REPO / "engine").rglob("*.py"):
        read |= set(re.findall(r"\b(SKYDECK_[A-Z_]+)\b", path.read_text(encoding="utf-8")))
    read -= set(UNDOCUMENTED)
    assert {"SKYDECK_WORKSPACE", "SKYDECK_RESERVE_BYTES", "SKYDECK_KERNEL_CACHE"} <= read
    environment = _help().split("environment:", 1)[1]
    listed = set(re.findall(r"^  (SKYDECK_[A-Z_]+) ", environment, re.MULTILINE))
    assert listed == read


def test_a_commands_help_has_no_epilog() -> None:
    """The epilog is the program's; a command's --help stays about its options."""
    res = run_engine("locks", "--help")
    assert res.returncode == 0 and "exit codes:" not in res.stdout
