"""`--json` on every command that prints: one JSON object on stdout with the same
facts as the human lines, for init, unlock and rollback, which lacked it; and a check that no
command that prints is left without it."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli.main import build_parser
from engine.core.owner import Owner
from engine.core.workspace import AREAS, Workspace, init_workspace
from engine.store import Downlink, StateDB
from tests.conftest import run_engine
from tests.pipeline.conftest import cli, set_config

# commands without --json, each with the reason
NO_JSON = {
    "run": "prints the stream's events as JSON lines already",
    "watch": "prints the daemon's events as JSON lines already",
    "completion": "prints a shell script",
    "kernel": "only groups subcommands (kernel build has --json)",
    "db": "only groups subcommands (db copy has --json)",
    "geant4": "only groups subcommands (geant4 propagate and geant4 gensteps have --json)",
    "geometry": "only groups subcommands (geometry check has --json)",
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _has_json(parser: argparse.ArgumentParser) -> bool:
    return any("--json" in a.option_strings for a in parser._actions)


def test_every_command_that_prints_takes_json() -> None:
    commands = _subparsers(build_parser())
    missing = sorted(n for n, p in commands.items() if not _has_json(p) and n not in NO_JSON)
    assert missing == []
    assert set(NO_JSON) <= set(commands)
    assert all(_has_json(p) for p in _subparsers(commands["kernel"]).values())
    assert all(_has_json(p) for p in _subparsers(commands["geant4"]).values())
    assert all(_has_json(p) for p in _subparsers(commands["geometry"]).values())


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return set_config(init_workspace(tmp_path / "ws"), "[disk]\nreserve_bytes = 0\n")


def test_init_json(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    res = run_engine("-w", root, "init", "--json", check=True)
    (line,) = res.stdout.splitlines()  # one object, one line
    data = json.loads(line)
    assert data["workspace"] == str(root.resolve())
    assert list(data["areas"]) == list(AREAS)
    assert all(Path(p).is_dir() for p in data["areas"].values())
    # the same facts as the human listing (init is idempotent)
    human = run_engine("-w", root, "init", check=True).stdout.splitlines()
    assert human[0] == f"workspace {data['workspace']}"
    assert [ln.split() for ln in human[1:]] == [
        *([a, p] for a, p in data["areas"].items()),
        ["state", data["state"]],
    ]
    assert data["state"] == str(root.resolve() / "state.db")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _dead_lock(ws: Workspace, name: str, pid: int) -> Path:
    me = Owner.me()
    path = ws.lock / name
    path.write_text(
        json.dumps(
            {
                "pid": pid,
                "host": me.host,
                "start": me.start,
                "stream": "251125004",
                "process": "makeEvt",
                "created": time.time(),
            }
        )
    )
    return path


def test_unlock_json(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    pid = _dead_pid()
    path = _dead_lock(ws, "halfpipe-251125004", pid)
    rc, out, err = cli(ws, "unlock", "halfpipe-251125004", "--json", capsys=capsys)
    assert rc == 0, err
    removed = json.loads(out)["removed"]
    assert removed["name"] == "halfpipe-251125004" and removed["kind"] == "stream"
    assert removed["stale"] is True and "not running" in removed["reason"]
    assert removed["owner"] == f"{Owner.me().host}:{pid}" and removed["pid"] == pid
    assert not path.exists()
    # the human line says the same
    _dead_lock(ws, "halfpipe-251125004", pid)
    rc, out, _ = cli(ws, "unlock", "halfpipe-251125004", capsys=capsys)
    assert out.strip() == (
        f"removed halfpipe-251125004 (stream, owner {removed['owner']}): {removed['reason']}"
    )
    # a refusal is still one line on stderr and nothing on stdout
    rc, out, err = cli(ws, "unlock", "nosuch", "--json", capsys=capsys)
    assert rc == 2 and out == "" and "no such lock" in err


def test_rollback_json(ws: Workspace, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task = tmp_path / "task.toml"
    task.write_text(
        '[task]\nname = "halfpipe"\n'
        '[[process]]\nname = "job"\ncommand = ["false"]\n'
        '[[process]]\nname = "after"\nafter = ["job"]\ncommand = ["true"]\n'
    )
    ws = set_config(ws, f'[pipeline]\ntask = "{task}"\n')
    with StateDB(ws.state) as db:
        db.register_downlink(
            Downlink(
                "251125001",
                "level0",
                str(ws.incoming_level0 / "251125001"),
                1,
                False,
                None,
                time.time(),
                time.time(),
            )
        )
    assert cli(ws, "run", "251125001", capsys=capsys)[0] == 1
    rc, out, err = cli(ws, "rollback", "251125001", "--json", capsys=capsys)
    assert rc == 0, err
    data = json.loads(out)
    assert data["dlid"] == "251125001" and data["stream_status"] == "WAITING"
    assert data["rolled_back"] == ["job e1"] and len(data["instance_ids"]) == 1
    with StateDB(ws.state) as db:
        st = db.latest_stream("251125001", "halfpipe")
        assert st is not None and st.status == "WAITING"
    # a named process and what is downstream of it; the human lines name the same instances
    task.write_text(task.read_text().replace('"false"', '"true"'))
    assert cli(ws, "run", "251125001", capsys=capsys)[0] == 0
    rc, out, err = cli(ws, "rollback", "251125001", "job", "--json", capsys=capsys)
    assert rc == 0, err
    named = json.loads(out)
    assert (
        sorted(named["rolled_back"]) == ["after e1", "job e2"] and len(named["instance_ids"]) == 2
    )
    assert cli(ws, "run", "251125001", capsys=capsys)[0] == 0
    rc, out, _ = cli(ws, "rollback", "251125001", "job", capsys=capsys)
    lines = out.splitlines()
    # the same instances, one execution later
    assert [ln.split()[2] for ln in lines[:-1]] == [lb.split()[0] for lb in named["rolled_back"]]
    assert all(ln.startswith("rolled back ") for ln in lines[:-1])
    assert lines[-1].startswith("stream 251125001 is WAITING again")
    # a refusal is one line on stderr and nothing on stdout
    rc, out, err = cli(ws, "rollback", "251125001", "nosuch", "--json", capsys=capsys)
    assert rc == 2 and out == "" and "no process 'nosuch'" in err
