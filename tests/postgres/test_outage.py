"""The daemon, ``run`` and ``health`` on a PostgreSQL server that goes away:
a restart, every skydeck session terminated, the server down for a while,
the server down when they start.

Each test has a server of its own (``own_pg``), restarted and stopped under a real
``skydeck-engine watch`` while deliveries (level-0 directories and fcopy packages) arrive.
What must hold: the daemon never stops, says once that the state database is unreachable
and once that it is back (with how long), ``health`` fails while it is unreachable (exit 1,
since when) and not after; every downlink is registered once, its stream run once, and
what is staged is byte for byte what a run on SQLite with no outage stages.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from engine.core.dburl import parse_state_url
from engine.core.workspace import Workspace, init_workspace
from engine.intake import manifest
from engine.mock.delivery import MockSpec, deliver
from engine.store import StateDB
from tests.pipeline.conftest import wait_for

pytest.importorskip("psycopg")

REPO = Path(__file__).resolve().parents[2]
SETTINGS = """
[disk]
reserve_bytes = 0
[halfpipe]
maxEvents = 100
[watch]
scan_interval_s = 1.0
quiet_s = 0.3
poll_interval_s = 0.2
[pipeline]
max_streams = 2
[metrics]
interval_s = 0.2
[state]
url = ""
wait_s = 2.0
"""
pytestmark = pytest.mark.slow


def _workspace(root: Path) -> Workspace:
    ws = init_workspace(root)
    cfg = ws.root / "skydeck.toml"
    out, skip = [], False
    for line in cfg.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            skip = line.strip() in (
                "[disk]",
                "[halfpipe]",
                "[watch]",
                "[pipeline]",
                "[metrics]",
                "[state]",
            )
        if not skip:
            out.append(line)
    cfg.write_text("\n".join(out) + "\n" + SETTINGS, encoding="utf-8")
    return Workspace.open(ws.root)


def _deliver(ws: Workspace, dlid: str, seed: int) -> None:
    """Odd seeds arrive as fcopy packages (extracted, then registered), even ones as
    level-0 directories."""
    form = "fcopy" if seed % 2 else "level0"
    deliver(
        MockSpec(dlid=dlid, sources=2, events=200, event_bytes=400, runs=2, chunks=2, seed=seed),
        form,
        ws.incoming_fcopy if seed % 2 else ws.incoming_level0,
    )


def _env(url: str | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("SKYDECK_STATE_URL", None)
    if url is not None:
        env["SKYDECK_STATE_URL"] = url
    return env


def _engine(
    ws: Workspace, url: str | None, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", "-w", str(ws.root), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(url),
    )


def _start(ws: Workspace, url: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    fh = open(log, "ab")  # noqa: SIM115 - the process owns it for its lifetime
    return subprocess.Popen(
        [sys.executable, "-m", "engine", "-w", str(ws.root), *args],
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=_env(url),
    )


def _lines(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


def _staged(ws: Workspace) -> dict[str, str]:
    return {
        str(p.relative_to(ws.stage)): manifest.md5_file(p)
        for p in sorted(ws.stage.rglob("*"))
        if p.is_file()
    }


def _reference(root: Path, dlids: tuple[str, ...]) -> dict[str, str]:
    """What one daemon on SQLite with no outage stages for these deliveries, at the same
    path (paths are part of what is staged); the workspace is removed afterwards."""
    ref = _workspace(root)
    for i, d in enumerate(dlids):
        _deliver(ref, d, seed=i)
    res = _engine(ref, None, "watch", "--once", timeout=180)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    staged = _staged(ref)
    assert {k.split("/")[0] for k in staged if k.endswith(".h5")} == set(dlids)
    shutil.rmtree(ref.root)
    return staged


def _all_staged(url: str, dlids: tuple[str, ...]) -> bool:
    with StateDB(parse_state_url(url, None)) as db:
        sts = {s.dlid: s.status for s in db.streams()}
    return sorted(sts) == sorted(dlids) and all(s == "SUCCESS" for s in sts.values())


def _exactly_once(
    ws: Workspace, url: str, dlids: tuple[str, ...], log: Path, reference: dict[str, str]
) -> None:
    """Each downlink registered once (one row, one 'registered' event, one log line), one
    stream, every instance's latest execution SUCCESS; staged as the reference."""
    with StateDB(parse_state_url(url, None)) as db:
        assert sorted(d.dlid for d in db.downlinks()) == sorted(dlids)
        events = Counter(r[0] for r in db.q("SELECT dlid FROM events WHERE kind='registered'"))
        assert events == Counter(dlids), events
        streams = db.streams(latest_only=False)
        assert sorted(s.dlid for s in streams) == sorted(dlids)
        assert all(s.status == "SUCCESS" for s in streams)
        for s in streams:
            assert {pi.status for pi in db.instances(s.id)} <= {"SUCCESS", "SKIPPED"}
        deliveries = {d.name: d.status for d in db.deliveries()}
        assert set(deliveries.values()) == {"ACCEPTED"}, deliveries
    logged = Counter(e["dlid"] for e in _lines(log) if e.get("event") == "registered")
    assert logged == Counter(dlids), logged
    assert _staged(ws) == reference


def _health(ws: Workspace, url: str) -> tuple[int, str]:
    res = _engine(ws, url, "health")
    return res.returncode, res.stdout + res.stderr


def test_the_daemon_rides_over_restarts_and_an_outage(own_pg: Any, tmp_path: Path) -> None:
    """Deliveries keep arriving while the server is restarted twice (pg_ctl restart -m
    fast) and then stopped until a running job has ended. The daemon lives on, logs the
    outage once each way, health fails during it (exit 1, "since") and passes after; the
    job that ended during the outage has its exit recorded; everything is staged once."""
    dlids = tuple(f"2512030{i:02d}" for i in range(1, 7))
    reference = _reference(tmp_path / "ws", dlids)
    ws = _workspace(tmp_path / "ws")
    url = own_pg.new_database()
    log = tmp_path / "daemon.log"
    daemon = _start(ws, url, log, "watch")
    try:
        wait_for(
            lambda: any(e.get("event") == "watching" for e in _lines(log)),
            30,
            what="the daemon watching",
        )
        for i, d in enumerate(dlids[:2]):
            _deliver(ws, d, seed=i)
        wait_for(lambda: _running_job(url), 60, what="a job running", every=0.05)
        own_pg.restart()  # 1: mid-stream
        _deliver(ws, dlids[2], seed=2)
        _deliver(ws, dlids[3], seed=3)
        time.sleep(0.5)
        own_pg.restart(crash=True)  # 2: a crash, while deliveries are verified
        pi = wait_for(lambda: _running_job(url), 60, what="a job running", every=0.05)
        t_down = time.time()
        own_pg.stop()  # 3: down until that job ended
        wait_for(
            lambda: (
                not psutil.pid_exists(pi["pid"])
                or psutil.Process(pi["pid"]).status() == psutil.STATUS_ZOMBIE
            ),
            60,
            what="the job to end while the server is down",
        )
        wait_for(
            lambda: any(
                e.get("event") == "state_unreachable" and e["t"] >= t_down for e in _lines(log)
            ),
            30,
            what="state_unreachable",
        )
        _deliver(ws, dlids[4], seed=4)  # arrives during the outage
        wait_for(lambda: _heartbeat_unreachable(ws), 10, what="the heartbeat saying so")
        wait_for(lambda: "skydeck_state_up 0.0" in _textfile(ws), 10, what="skydeck_state_up 0")
        rc, out = _health(ws, url)
        assert rc == 1, out
        state = [line for line in out.splitlines() if line.startswith("state:")]
        assert len(state) == 1 and "state database unreachable since " in state[0], out
        assert not any(line.startswith("daemon:") for line in out.splitlines()), out
        assert daemon.poll() is None
        own_pg.start()
        _deliver(ws, dlids[5], seed=5)
        wait_for(lambda: _all_staged(url, dlids), 180, what="every downlink staged", every=0.3)
        rc, out = _health(ws, url)
        assert rc == 0, out
        assert "skydeck_state_up 1.0" in _textfile(ws)
        lines = _lines(log)
        ups = [e for e in lines if e.get("event") == "state_reachable"]
        downs = [e for e in lines if e.get("event") == "state_unreachable"]
        assert downs and len(ups) == len(downs), (downs, ups)  # paired: once each way
        assert max(e["down_s"] for e in ups) >= 1.0
        assert not [e for e in lines if e.get("event") == "error"], [
            e for e in lines if e.get("event") == "error"
        ]
        with StateDB(parse_state_url(url, None)) as db:
            ended = db.instance(pi["id"])
        assert ended.status == "SUCCESS" and ended.ended is not None
        # its job ended while the server was down; recorded once it was back
        assert t_down <= ended.ended <= max(e["t"] for e in ups)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(30)
    _exactly_once(ws, url, dlids, log, reference)


def _running_job(url: str) -> dict[str, Any] | None:
    with StateDB(parse_state_url(url, None)) as db:
        for st in db.streams():
            for pi in db.instances(st.id):
                if (
                    pi.status == "RUNNING"
                    and pi.pid
                    and psutil.pid_exists(pi.pid)
                    and pi.process in ("makeEvt", "mergeEvt", "mergeIndices")
                ):
                    return {"id": pi.id, "pid": pi.pid}
    return None


def _textfile(ws: Workspace) -> str:
    try:
        return (ws.root / "metrics" / "skydeck.prom").read_text()
    except OSError:
        return ""


def _heartbeat_unreachable(ws: Workspace) -> bool:
    from engine.core.heartbeat import read_heartbeats

    return any(not hb.state_reachable and hb.state_since for hb in read_heartbeats(ws))


def test_every_skydeck_session_terminated_again_and_again(own_pg: Any, tmp_path: Path) -> None:
    """A DBA (or a failover) ends every skydeck session on the server, again and again,
    while a daemon registers and runs deliveries: the daemon's main connection, its verify
    threads', its presence, the jobs'. Nothing is lost, nothing done twice, no error line;
    the lost presence is noticed and taken again."""
    dlids = tuple(f"2512040{i:02d}" for i in range(1, 5))
    reference = _reference(tmp_path / "ws", dlids)
    ws = _workspace(tmp_path / "ws")
    url = own_pg.new_database()
    log = tmp_path / "daemon.log"
    daemon = _start(ws, url, log, "watch")
    killed = 0
    try:
        wait_for(
            lambda: any(e.get("event") == "watching" for e in _lines(log)),
            30,
            what="the daemon watching",
        )
        for i, d in enumerate(dlids):
            _deliver(ws, d, seed=i)
            time.sleep(0.2)
        deadline = time.monotonic() + 180
        while not _all_staged(url, dlids):
            assert time.monotonic() < deadline, "not every downlink staged"
            killed += own_pg.terminate()
            time.sleep(0.4)
        assert daemon.poll() is None
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(30)
    assert killed >= 10
    lines = _lines(log)
    assert any(e.get("event") == "presence_lost" for e in lines)
    assert not [e for e in lines if e.get("event") in ("error", "stream_lost")], [
        e for e in lines if e.get("event") in ("error", "stream_lost")
    ]
    _exactly_once(ws, url, dlids, log, reference)


def test_started_while_the_server_is_down(own_pg: Any, tmp_path: Path) -> None:
    """The daemon and `run` started while the server is down wait for it (a log line, not
    exit 2), beat meanwhile (health: the state is unreachable), and work once it is up.
    `watch --once` gives up after [state] wait_s with exit 75 (try again later), one line.
    SIGTERM while waiting stops the daemon."""
    ws = _workspace(tmp_path / "ws")
    url = own_pg.new_database()
    with StateDB(parse_state_url(url, None)):
        pass  # the schema exists; the server then goes away
    own_pg.stop()

    t0 = time.monotonic()
    res = _engine(ws, url, "watch", "--once")
    assert res.returncode == 75, res.stdout + res.stderr
    assert 1.5 < time.monotonic() - t0 < 30
    assert len(res.stderr.splitlines()) == 1 and "state database unreachable" in res.stderr

    rc, out = _health(ws, url)  # no daemon, no server: exit 1, not 2
    assert rc == 1 and "state: state database unreachable: " in out, out

    log, run_log = tmp_path / "daemon.log", tmp_path / "run.log"
    quitter = _start(ws, url, tmp_path / "quitter.log", "watch")
    daemon = _start(ws, url, log, "watch")
    runner = None
    try:
        for p in (log, tmp_path / "quitter.log"):
            wait_for(
                lambda p=p: any(e.get("event") == "state_unreachable" for e in _lines(p)),
                30,
                what="the daemon saying it waits",
            )
        quitter.send_signal(signal.SIGTERM)  # stopped while it waits
        assert quitter.wait(30) in (0, 143)
        wait_for(lambda: _heartbeat_unreachable(ws), 10, what="a heartbeat while waiting")
        rc, out = _health(ws, url)
        assert rc == 1 and "state: state database unreachable since " in out, out
        assert daemon.poll() is None
        _deliver(ws, "251205001", seed=0)
        own_pg.start()
        wait_for(
            lambda: _all_staged(url, ("251205001",)), 120, what="the delivery staged", every=0.3
        )
        assert any(e.get("event") == "state_reachable" for e in _lines(log))
        assert _health(ws, url)[0] == 0

        # `run` of a delivery that arrived after the daemon stopped, started while the
        # server is down: it registers it and runs its stream once the server is back
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
        _deliver(ws, "251205002", seed=2)
        time.sleep(0.5)  # older than quiet_s
        own_pg.stop()
        runner = _start(ws, url, run_log, "run", "251205002")
        wait_for(
            lambda: any(e.get("event") == "state_unreachable" for e in _lines(run_log)),
            30,
            what="run saying it waits",
        )
        time.sleep(1.0)
        assert runner.poll() is None
        own_pg.start()
        wait_for(
            lambda: _running_job(url) or runner.poll() is not None,
            60,
            what="run's job running",
            every=0.05,
        )
        own_pg.restart()  # and once more, mid-run
        assert runner.wait(120) == 0, run_log.read_text()[-2000:]
        assert sum(e.get("event") == "state_reachable" for e in _lines(run_log)) >= 1
        assert _all_staged(url, ("251205001", "251205002"))
        with StateDB(parse_state_url(url, None)) as db:
            assert len(db.streams(latest_only=False)) == 2  # each run once
    finally:
        for p in (daemon, quitter, runner):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(30)
