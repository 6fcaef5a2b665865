"""The systemd unit in contrib/ (README, "The daemon as a systemd service") is one an operator can install.

It is read the way systemd reads it (sections, ``key=value``, specifiers), its ``ExecStart=``
command line is parsed by the engine's own parser (a renamed option would break the service
only on the host that runs it), its stop timeout is checked against the cancel grace the
daemon's launcher really waits, and where ``systemd-analyze`` exists it verifies the unit.
"""

from __future__ import annotations

import configparser
import inspect
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli.main import build_parser
from engine.core.errors import EXIT_UNAVAILABLE
from engine.core.interrupt import STOP_GRACE_S
from engine.pipeline.launchers.local import LocalLauncher

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "contrib" / "systemd" / "skydeck-watch@.service"
WORKSPACE = "/srv/skydeck/ws"  # what %f expands to for the instance below
INSTANCE = "srv-skydeck-ws"  # systemd-escape --path /srv/skydeck/ws


def _unit() -> configparser.ConfigParser:
    # systemd allows a key more than once (ExecStartPre=...); none of ours repeats
    cp = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    cp.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    cp.read_string(UNIT.read_text())
    return cp


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}
    for suffix, factor in sorted(units.items(), key=lambda kv: -len(kv[0])):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)  # systemd: a bare number is seconds


def _exec_start(workspace: str) -> list[str]:
    return shlex.split(_unit()["Service"]["ExecStart"].replace("%f", workspace))


def test_the_unit_has_what_a_template_service_needs() -> None:
    unit = _unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    # SIGTERM to the daemon only: it stops its jobs itself, in order, and records them
    assert service["KillMode"] == "mixed"
    assert "2" in service["RestartPreventExitStatus"].split()  # a bad config stays down
    # an unreachable state database is a wait or exit 75, which the unit restarts
    assert str(EXIT_UNAVAILABLE) not in service["RestartPreventExitStatus"].split()
    assert str(EXIT_UNAVAILABLE) not in service.get("SuccessExitStatus", "").split()
    assert unit["Unit"]["RequiresMountsFor"] == "%f"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    # no ProtectSystem=strict without the workspace as ReadWritePaths (it would be read-only)
    if service.get("ProtectSystem") == "strict":
        assert "%f" in service.get("ReadWritePaths", "").split()


def test_exec_start_parses_with_the_engines_own_parser() -> None:
    argv = _exec_start(WORKSPACE)
    assert Path(argv[0]).name == "skydeck-engine" and Path(argv[0]).is_absolute()
    args = build_parser().parse_args(argv[1:])
    assert args.command == "watch"
    assert args.workspace == WORKSPACE
    assert not args.once  # a daemon, not one pass
    assert _unit()["Service"]["WorkingDirectory"] == "%f"


def test_stop_timeout_is_above_the_daemons_cancel_grace() -> None:
    """On SIGTERM the daemon cancels its jobs (SIGTERM, the launcher's grace, then SIGKILL);
    systemd must not SIGKILL it before that ends, or streams stay RUNNING until reconciled."""
    grace = inspect.signature(LocalLauncher.cancel_all).parameters["grace_s"].default
    timeout = _seconds(_unit()["Service"]["TimeoutStopSec"])
    assert timeout > 2 * (grace + STOP_GRACE_S), (timeout, grace)


def test_the_instance_name_is_the_escaped_workspace_path() -> None:
    escape = shutil.which("systemd-escape")
    if escape is None:
        pytest.skip("systemd-escape not installed (no systemd on this machine)")
    out = subprocess.run([escape, "--path", WORKSPACE], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == INSTANCE
    back = subprocess.run(
        [escape, "--unescape", "--path", INSTANCE], capture_output=True, text=True, check=True
    )
    assert back.stdout.strip() == WORKSPACE  # what %f gives the daemon


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (no systemd on this machine)")
    # verify checks that ExecStart's program exists: point it at this venv's entry point
    engine = Path(sys.executable).parent / "skydeck-engine"
    if not engine.exists():
        pytest.skip(f"{engine} missing (the project is not installed in this venv)")
    text = UNIT.read_text().replace("/opt/skydeck/bin/skydeck-engine", str(engine))
    assert text != UNIT.read_text()
    (tmp_path / "skydeck-watch@.service").write_text(text)
    instance = tmp_path / f"skydeck-watch@{INSTANCE}.service"
    instance.symlink_to("skydeck-watch@.service")
    res = subprocess.run(
        [analyze, "verify", str(instance)], capture_output=True, text=True, timeout=60
    )
    # verify also reports on units the host's own configuration pulls in; ours must be clean
    ours = [ln for ln in (res.stdout + res.stderr).splitlines() if "skydeck-watch" in ln]
    assert ours == [], res.stdout + res.stderr
    if res.returncode != 0:
        pytest.fail(f"systemd-analyze verify exited {res.returncode}: {res.stdout}{res.stderr}")
