"""Start-up: `skydeck-engine --help` and `--version` import no NumPy, h5py, mpi4py
or Rich, and a command imports only its own module; the listing it prints is the same as
the one every command module registers. Every command's own `--help` is as light,
its machinery imported only when it runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from engine.cli import COMMAND_MODULES
from engine.cli.main import build_parser, command_in
from tests.conftest import engine_env

# what no --help may import; the last three take 19-81 ms each after engine.cli.main
# (prometheus_client 35, watchdog.observers 19, psycopg 81; defusedxml's 3 ms is no reason)
HEAVY = (
    "numpy",
    "h5py",
    "mpi4py",
    "rich",
    "textual",
    "psutil",
    "shtab",
    "prometheus_client",
    "watchdog",
    "psycopg",
)


def imported_by(*argv: str) -> tuple[int, list[str], list[str]]:
    """Run the CLI's ``main`` in a fresh interpreter; its exit code, heavy and command modules."""
    code = (
        "import sys\n"
        "from engine.cli.main import main\n"
        f"try:\n    rc = main({list(argv)!r})\nexcept SystemExit as e:\n    rc = e.code\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "cmds = sorted(m for m in sys.modules if m.startswith('engine.cli.') and m != 'engine.cli.main')\n"
        "print(rc, ','.join(heavy), ','.join(cmds), sep='|', file=sys.stderr)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=engine_env()
    )
    rc, heavy, cmds = res.stderr.strip().splitlines()[-1].split("|")
    return int(rc or 0), [m for m in heavy.split(",") if m], [m for m in cmds.split(",") if m]


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["-w", "x", "--help"], []])
def test_help_and_version_import_nothing_heavy(argv: list[str]) -> None:
    rc, heavy, cmds = imported_by(*argv)
    assert rc == (2 if not argv else 0)
    assert heavy == [] and cmds == []


def test_python_m_engine_help_lists_every_command() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "engine", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=engine_env(),
    )
    assert res.returncode == 0
    assert all(f"    {name} " in res.stdout for name in COMMAND_MODULES)


def test_a_command_imports_only_its_own_module() -> None:
    rc, _, cmds = imported_by("-w", "build", "locks", "--help")  # -w's value is no command
    assert rc == 0 and cmds == ["engine.cli.locks"]


@pytest.mark.parametrize(
    "argv",
    [[name, "--help"] for name in COMMAND_MODULES]
    + [["kernel", "build", "--help"], ["db", "copy", "--help"]],
    ids=" ".join,
)
def test_a_commands_help_imports_nothing_heavy(argv: list[str]) -> None:
    """`CMD --help` needs only the parser: what the command runs is imported in its run()."""
    rc, heavy, cmds = imported_by(*argv)
    assert rc == 0
    assert heavy == []
    assert f"engine.cli.{argv[0]}" in cmds
    assert set(cmds) <= {f"engine.cli.{argv[0]}", "engine.cli.numbers"}


@pytest.mark.parametrize("name", COMMAND_MODULES)
def test_the_listing_matches_what_the_commands_register(name: str) -> None:
    """The summaries `--help` shows without importing are the help each command registers."""
    assert build_parser(name, everything=False).format_help() == build_parser().format_help()


def test_command_in() -> None:
    assert command_in(["-w", "build", "verify", "x.h5"]) == "verify"
    assert command_in(["--workspace=build", "locks"]) == "locks"
    assert command_in(["nosuch", "build"]) is None
    assert command_in([]) is None
