"""Fixtures for the pipeline tests: a real workspace, real mock deliveries, the real CLI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli.main import main as cli_main
from engine.core.workspace import Workspace, init_workspace
from engine.mock.delivery import MockSpec, deliver

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _both_backends(state_backend: str) -> str:
    """Every pipeline test runs on SQLite and on PostgreSQL (tests/postgres/plugin.py)."""
    return state_backend


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    w = init_workspace(tmp_path / "ws")
    # Tests run on small disks too: no reserve unless a test sets one; quick quiet time.
    return set_config(w, "[disk]\nreserve_bytes = 0\n")


def _set_config(w: Workspace, extra: str) -> None:
    """Append overrides to the workspace config (TOML sections must be unique: rewrite)."""
    cfg = w.root / "skydeck.toml"
    text = cfg.read_text(encoding="utf-8")
    for section in [line for line in extra.splitlines() if line.startswith("[")]:
        # drop the existing section of that name (keys are re-given in extra)
        lines, out, skip = text.splitlines(), [], False
        for line in lines:
            if line.startswith("["):
                skip = line.strip() == section.strip()
            if not skip:
                out.append(line)
        text = "\n".join(out) + "\n"
    cfg.write_text(text + "\n" + extra, encoding="utf-8")


def set_config(w: Workspace, extra: str) -> Workspace:
    _set_config(w, extra)
    return Workspace.open(w.root)


def spec(
    dlid: str,
    events: int = 50,
    chunks: int = 2,
    runs: int = 2,
    seed: int = 0,
    sources: int = 2,
    event_bytes: int = 4000,
) -> MockSpec:
    return MockSpec(
        dlid=dlid,
        sources=sources,
        events=events,
        event_bytes=event_bytes,
        runs=runs,
        chunks=chunks,
        seed=seed,
    )


def make_delivery(w: Workspace, dlid: str, as_: str = "level0", **kw) -> Path:
    target = w.incoming_level0 if as_ == "level0" else w.incoming_fcopy
    if as_ == "dir":
        target = kw.pop("target")
    return deliver(spec(dlid, **kw), as_, target)


def cli(w: Workspace | None, *args: str, capsys=None) -> tuple[int, str, str]:
    """Run the CLI in this process (fast); returns (exit code, stdout, stderr)."""
    argv = (["-w", str(w.root)] if w is not None else []) + list(args)
    rc = cli_main(argv)
    if capsys is None:
        return rc, "", ""
    out = capsys.readouterr()
    return rc, out.out, out.err


def cli_proc(w: Workspace, *args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run `python -m engine` as a real process (exit codes, signals, stderr lines)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "engine", "-w", str(w.root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kw,
    )


def start_daemon(w: Workspace, log: Path, *args: str) -> subprocess.Popen:
    """`skydeck-engine watch` as a real process, its JSON-lines log in ``log``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    fh = open(log, "ab")  # noqa: SIM115 - the daemon owns it for its lifetime
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "-w", str(w.root), "watch", *args],
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=env,
    )


FAST = {"events": 50, "event_bytes": 400, "chunks": 1, "runs": 1}


def quick(
    ws: Workspace, scan_interval: float = 300.0, quiet: float = 1.0, extra: str = ""
) -> Workspace:
    """Daemon settings for tests: a rare reconciliation scan, a short quiet time."""
    return set_config(
        ws,
        f"[watch]\nscan_interval_s = {scan_interval}\nquiet_s = {quiet}\n"
        f"poll_interval_s = 0.2\n{extra}",
    )


def stop_daemon(proc: subprocess.Popen, timeout: float = 20) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout)


def wait_for(cond, timeout: float = 60.0, every: float = 0.05, what: str = "condition"):
    import time

    t0 = time.time()
    while time.time() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wipe_state() -> None:
    """Empty the PostgreSQL state database of ``$SKYDECK_STATE_URL``, if one is in use: a
    test that removes its workspace to start again (the SQLite file goes with it) must
    start from an empty state on PostgreSQL too, where the database outlives the directory."""
    url = os.environ.get("SKYDECK_STATE_URL")
    if not url:
        return
    from engine.core.dburl import parse_state_url
    from engine.store import StateDB

    with StateDB(parse_state_url(url, None)) as db, db.tx() as c:
        for table in ("events", "files", "process_instances", "streams", "downlinks", "deliveries"):
            c.execute(f"DELETE FROM {table}")


def stream_status(w: Workspace) -> dict[str, str]:
    from engine.store import StateDB

    with StateDB(w.state) as db:
        return {s.dlid: s.status for s in db.streams()}


def log_events(log: Path) -> list[dict]:
    import json

    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def fill_disk(path: Path, leave: int = 0) -> Path:
    """Write a file at ``path`` until its file system has at most ``leave`` bytes free
    (``leave=0``: until ENOSPC)."""
    block = bytes(64 << 10)
    with open(path, "ab") as fh:
        while True:
            free = shutil.disk_usage(path.parent).free
            if free <= leave:
                break
            try:
                fh.write(block[: max(4096, min(len(block), free - leave))])
                fh.flush()
            except OSError:
                break
    return path


def db_footprint(w: Workspace) -> int:
    """Bytes the state database takes on disk (main file, WAL, shared-memory index)."""
    assert w.state_url is None, "db_footprint measures the SQLite file"
    total = 0
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(w.state_db) + suffix)
        if p.exists():
            total += p.stat().st_blocks * 512
    return total


def integrity_ok(w: Workspace) -> bool:
    import sqlite3

    assert w.state_url is None, "integrity_ok checks the SQLite file"
    conn = sqlite3.connect(w.state_db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def md5_of_zeros(n: int) -> str:
    import hashlib

    h, block = hashlib.md5(usedforsecurity=False), bytes(1 << 20)
    for _ in range(n >> 20):
        h.update(block)
    return h.hexdigest()


def has_open(pid: int, path: Path) -> bool:
    """True while process ``pid`` has ``path`` open (e.g. its verify thread hashes it)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


def with_big_file_first(delivery: Path, size: int = 256 << 20) -> str:
    """Add a sparse ``a_big.bin`` (no disk cost) listed FIRST in the delivery's manifest, so
    the daemon hashes it before the other files; returns the name of the first real file."""
    from engine.intake import manifest

    with open(delivery / "a_big.bin", "wb") as fh:
        fh.truncate(size)
    entries = manifest.parse(delivery / manifest.MANIFEST_NAME)
    lines = [("a_big.bin", md5_of_zeros(size)), *sorted(entries.items())]
    (delivery / manifest.MANIFEST_NAME).write_bytes(manifest.format_lines(lines))
    return sorted(entries)[0]


def remove_while_hashing(pid: int, big: Path, victim: Path, timeout: float = 30) -> None:
    """Delete ``victim`` while process ``pid`` is hashing ``big`` (listed before it)."""
    wait_for(lambda: has_open(pid, big), timeout, every=0.001, what=f"pid {pid} reading {big}")
    victim.unlink()
