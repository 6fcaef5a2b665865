"""Metrics and health: the textfile `watch --once` and the daemon write holds what
the state database and the workspace hold; it is replaced atomically while a reader reads it;
`--metrics-port` serves the same families; `skydeck-engine health` says 0 with a live daemon
and 1 once it is killed, a halt flag is set or a stream is stuck; bad `[metrics]` values are
exit 2 with one line."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from engine import __version__
from engine.api.health import health
from engine.core.errors import BadInput
from engine.core.heartbeat import read_heartbeats, write_heartbeat
from engine.core.owner import Owner
from engine.core.settings import Settings, parse_settings
from engine.core.workspace import Workspace, init_workspace
from engine.daemon.exporter import Exporter, _quantile, render, textfile_path
from engine.pipeline.halts import set_halt
from engine.pipeline.usage import usage_report
from engine.store import Downlink, StateDB
from tests.conftest import run_engine
from tests.pipeline.conftest import (
    FAST,
    _set_config,
    cli,
    cli_proc,
    log_events,
    make_delivery,
    quick,
    set_config,
    start_daemon,
    wait_for,
)


@pytest.fixture
def ws(tmp_path: Path, state_backend: str) -> Workspace:
    """A workspace whose state is SQLite or PostgreSQL (tests/postgres/plugin.py): the
    metrics are read from the database, on both backends."""
    return set_config(init_workspace(tmp_path / "ws"), "[disk]\nreserve_bytes = 0\n")


Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def parse(text: str) -> Samples:
    """{sample name: {sorted labels: value}} of a text exposition (the parser raises on a
    malformed or truncated one)."""
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def by(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(k)[label]: v for k, v in samples.get(name, {}).items()}


def _claimed_by_a_process_that_exits(ws: Workspace, dlid: str) -> int:
    """Claim ``dlid``'s stream in a child process that then exits (a runner that died);
    returns its pid."""
    code = (
        "import sys; from pathlib import Path; from engine.store import StateDB\n"
        "from engine.core.workspace import Workspace\n"
        "with StateDB(Workspace.open(Path(sys.argv[1])).state) as db:\n"
        "    assert db.claim_stream(sys.argv[2], 'halfpipe')[0] is not None\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(ws.root), dlid],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert proc.wait(60) == 0
    return proc.pid


# ------------------------------------------------------------------ watch --once


def test_watch_once_textfile_matches_the_database_and_the_workspace(ws, capsys):
    ws = quick(ws)
    for i, dl in enumerate(("251125001", "251125002")):
        make_delivery(ws, dl, seed=i, **FAST)
    rc, _, err = cli(ws, "watch", "--once", capsys=capsys)
    assert rc == 0, err
    path = textfile_path(ws)
    assert path == ws.root / "metrics" / "skydeck.prom"
    assert sorted(p.name for p in path.parent.iterdir()) == ["skydeck.prom"]  # no temporary
    m = parse(path.read_text())

    with StateDB(ws.state) as db:
        streams = db.streams()
        instances = [pi for s in streams for pi in db.instances(s.id)]
        dls = db.downlinks()
        dels = db.deliveries()
    assert Counter(s.status for s in streams) == {"SUCCESS": 2}
    assert {k: v for k, v in by(m, "skydeck_streams", "status").items() if v} == {"SUCCESS": 2}
    assert set(by(m, "skydeck_streams", "status")) >= {"WAITING", "RUNNING", "FAILED"}  # 0s too
    got = {
        (dict(k)["process"], dict(k)["status"]): v
        for k, v in m["skydeck_process_instances"].items()
        if v
    }
    assert got == Counter((pi.process, pi.status) for pi in instances)
    assert len(got) >= 3 and sum(got.values()) == len(instances)
    assert by(m, "skydeck_queue_depth", "status") == {"WAITING": 0, "READY": 0, "QUEUED": 0}
    assert (
        {k: v for k, v in by(m, "skydeck_deliveries", "status").items() if v}
        == Counter(d.status for d in dels)
        == {"ACCEPTED": 2}
    )
    assert m["skydeck_oldest_pending_delivery_age_seconds"][()] == 0
    lat = sorted(d.registered - d.delivered for d in dls)
    assert m["skydeck_registration_latency_seconds_count"][()] == 2
    assert math.isclose(m["skydeck_registration_latency_seconds_sum"][()], sum(lat), abs_tol=1e-6)
    q = by(m, "skydeck_registration_latency_seconds", "quantile")
    assert math.isclose(q["1.0"], lat[-1], abs_tol=1e-6) and q["0.5"] <= q["1.0"]

    rep = usage_report(ws)  # nothing was written since (no heartbeat with --once)
    assert by(m, "skydeck_area_bytes", "area") == {a: u.bytes for a, u in rep.areas.items()}
    assert by(m, "skydeck_area_files", "area") == {a: u.files for a, u in rep.areas.items()}
    assert by(m, "skydeck_area_bytes", "area")["stage"] > 0
    assert m["skydeck_disk_reserve_bytes"][()] == 0 and m["skydeck_disk_reserve_paused"][()] == 0
    assert set(by(m, "skydeck_disk_free_bytes", "area")) == {"downlinks", "stage"}
    assert m["skydeck_info"] == {(("version", __version__),): 1.0}
    assert set(by(m, "skydeck_halt_flag", "flag").values()) == {0}
    assert m["skydeck_daemons"][()] == 0 and "skydeck_daemon_heartbeat_timestamp_seconds" not in m
    assert all(name.startswith("skydeck_") for name in m)
    assert read_heartbeats(ws) == []  # --once is no daemon


def test_textfile_off_and_elsewhere(ws, tmp_path, capsys):
    ws = set_config(ws, '[metrics]\ntextfile = ""\n')
    assert textfile_path(ws) is None
    assert cli(ws, "watch", "--once", capsys=capsys)[0] == 0
    assert not (ws.root / "metrics").exists()
    target = tmp_path / "node_exporter" / "textfile" / "sky.prom"
    ws = set_config(ws, f'[metrics]\ntextfile = "{target}"\n')
    assert cli(ws, "watch", "--once", capsys=capsys)[0] == 0
    assert parse(target.read_text())["skydeck_streams"]


def test_pending_delivery_and_halt_flag_show(ws):
    set_halt(ws, "halted")
    with StateDB(ws.state) as db:
        db.claim_delivery("level0:251125009", "level0", "251125009", "/x")
        db.release_delivery("level0:251125009", pending="manifest incomplete")
        seen = db.delivery("level0:251125009").seen
    m = parse(render(ws).decode())
    assert by(m, "skydeck_deliveries", "status")["PENDING"] == 1
    assert m["skydeck_oldest_pending_delivery_age_seconds"][()] >= time.time() - seen - 5
    assert by(m, "skydeck_halt_flag", "flag")["halted"] == 1
    assert "skydeck_area_bytes" not in m  # no usage scan given: the family is left out


def test_nearest_rank_quantiles():
    v = [float(i) for i in range(1, 11)]
    assert [_quantile(v, q) for q in (0.5, 0.9, 1.0)] == [5.0, 9.0, 10.0]
    assert _quantile([3.0], 0.5) == 3.0


# ------------------------------------------------------------------ the daemon


def test_daemon_textfile_http_heartbeat_and_health(ws, tmp_path):
    ws = quick(ws, extra="")
    ws = set_config(ws, "[metrics]\ninterval_s = 0.1\nusage_interval_s = 1.0\n")
    make_delivery(ws, "251125001", **FAST)
    log = tmp_path / "daemon.log"
    proc = start_daemon(ws, log, "--metrics-port", "0", "--metrics-addr", "127.0.0.1")
    try:
        path = textfile_path(ws)
        assert path is not None

        def ready() -> bool:
            if not path.exists():
                return False
            m = parse(path.read_text())
            return (
                by(m, "skydeck_streams", "status").get("SUCCESS") == 1 and "skydeck_area_bytes" in m
            )

        wait_for(ready, 60, what="the textfile with the stream done and the usage scan")

        # a reader never sees a partial file while the daemon replaces it every 0.1 s
        reads, inodes = 0, set()
        t_end = time.time() + 2.0
        while time.time() < t_end:
            fd = os.open(path, os.O_RDONLY)
            with os.fdopen(fd, "rb") as fh:
                inodes.add(os.fstat(fh.fileno()).st_ino)
                text = fh.read().decode()
            m = parse(text)
            assert text.endswith("\n") and "skydeck_daemons" in m and "skydeck_info" in m
            reads += 1
        assert reads > 20 and len(inodes) > 3  # it was replaced while we read
        assert not [
            p for p in path.parent.iterdir() if p.name != path.name and p.name.endswith(".prom")
        ]

        (ev,) = [e for e in log_events(log) if e.get("event") == "metrics_http"]
        body = urllib.request.urlopen(f"http://127.0.0.1:{ev['port']}/metrics", timeout=10).read()
        served = parse(body.decode())
        assert set(served) == set(parse(path.read_text()))
        assert by(served, "skydeck_streams", "status")["SUCCESS"] == 1

        (hb,) = read_heartbeats(ws)
        assert hb.pid == proc.pid and time.time() - hb.t < 5
        m = parse(path.read_text())
        assert m["skydeck_daemons"][()] == 1
        assert m["skydeck_daemon_heartbeat_timestamp_seconds"][()] > time.time() - 5

        r = cli_proc(ws, "health")
        assert r.returncode == 0 and r.stdout.startswith("healthy: daemon pid"), r.stdout + r.stderr
        js = json.loads(cli_proc(ws, "health", "--json").stdout)
        assert js["healthy"] is True and {c["check"] for c in js["checks"]} == {
            "daemon",
            "state",
            "disk",
            "streams",
        }

        set_halt(ws, "haltStage")
        r = cli_proc(ws, "health")
        assert r.returncode == 1
        assert r.stdout.splitlines() == [
            f"halt:haltStage: halt flag haltStage is set globally ({ws.path('flags')}/haltStage)"
        ]
        (ws.path("flags") / "haltStage").unlink()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(20)
    r = cli_proc(ws, "health")
    assert r.returncode == 1 and r.stderr == ""
    (line,) = r.stdout.splitlines()
    assert line.startswith(f"daemon: daemon pid {proc.pid} on ") and "not running" in line
    js = json.loads(cli_proc(ws, "health", "--json").stdout)
    assert js["healthy"] is False
    assert [c["check"] for c in js["checks"] if not c["ok"]] == ["daemon"]


def test_a_stopped_daemon_removes_its_heartbeat(ws, tmp_path):
    ws = set_config(quick(ws), "[metrics]\ninterval_s = 0.1\n")
    proc = start_daemon(ws, tmp_path / "d.log")
    try:
        wait_for(lambda: read_heartbeats(ws), 30, what="a heartbeat")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    assert read_heartbeats(ws) == []
    r = cli_proc(ws, "health")
    assert r.returncode == 1 and r.stdout.startswith("daemon: no daemon heartbeat in ")


# ------------------------------------------------------------------ health, in process


def _register(ws: Workspace, dlid: str) -> None:
    with StateDB(ws.state) as db:
        t = time.time()
        db.register_downlink(Downlink(dlid, "level0", "/x", 1, False, None, t, t))


def test_health_heartbeat_age_and_stuck_streams(ws):
    me = Owner.me()
    write_heartbeat(ws, me, ws.settings.metrics.interval_s)
    assert all(c.ok for c in health(ws))
    later = time.time() + 1000
    (bad,) = [c for c in health(ws, now=later) if not c.ok]
    assert bad.name == "daemon" and "older than 60 s" in bad.detail  # 4 x interval_s
    assert all(c.ok for c in health(ws, now=later, heartbeat_max_age=2000))

    _register(ws, "251125001")
    _register(ws, "251125002")
    claimed = time.time()
    with StateDB(ws.state) as db:
        assert db.claim_stream("251125001", "halfpipe")[0] is not None  # this (live) process
    dead = _claimed_by_a_process_that_exits(ws, "251125002")
    # just now: nothing is stuck (a daemon would take the dead one over within a beat)
    assert all(c.ok for c in health(ws))
    # 100 s later (the heartbeat is stale too, its own check): the dead runner's stream is
    # stuck (no daemon took it over within 60 s), the live one is not
    fails = _stuck(health(ws, now=time.time() + 100))
    assert [c.name for c in fails] == ["stuck:251125002"]
    assert f"pid {dead} is not running" in fails[0].detail and "runner gone" in fails[0].detail
    # past --stuck-after: both, whatever the runner
    # (100 s after the claim, not after the slow child above: the age printed is exact)
    fails = _stuck(health(ws, now=claimed + 100, heartbeat_max_age=1000, stuck_after=50))
    assert [c.name for c in fails] == ["stuck:251125001", "stuck:251125002"]
    assert "nothing happened for 100 s (over 50 s; 0 job(s) in flight)" in fails[0].detail
    # a stream held by its downlink's halt flag is held, not stuck
    set_halt(ws, "haltStage", "251125001")
    # (100 s after the claim, not after the slow child above: the age printed is exact)
    fails = _stuck(health(ws, now=claimed + 100, heartbeat_max_age=1000, stuck_after=50))
    assert [c.name for c in fails] == ["stuck:251125002"]


def test_health_fails_while_the_daemon_cannot_reach_the_state_database(ws):
    """Health itself reaches the state database, but the live daemon's heartbeat says it
    cannot (a network cut between the two): the state check fails with since when and why,
    and passes once a heartbeat says it is reachable again."""
    from engine.store.outage import Outage

    me = Owner.me()
    outage = Outage()
    outage.down("cannot connect: connection refused")
    write_heartbeat(ws, me, ws.settings.metrics.interval_s, state=outage.as_json())
    (bad,) = [c for c in health(ws) if not c.ok]
    assert bad.name == "state"
    assert bad.detail.startswith("state database unreachable since ")
    assert (
        f"daemon pid {me.pid} on {me.host} cannot reach it: cannot connect: "
        "connection refused" in bad.detail
    )
    (hb,) = read_heartbeats(ws)
    assert not hb.state_reachable and hb.state_since == outage.since
    outage.up()
    write_heartbeat(ws, me, ws.settings.metrics.interval_s, state=outage.as_json())
    assert all(c.ok for c in health(ws))
    assert [c.detail for c in health(ws) if c.name == "state"] == ["state database reachable"]


def _stuck(checks: list) -> list:
    assert all(c.ok for c in checks if c.name == "streams")
    return [c for c in checks if c.name.startswith("stuck:")]


def test_health_cli_exit_codes_and_json(ws, capsys):
    write_heartbeat(ws, Owner.me(), 15.0)
    rc, out, _ = cli(ws, "health", capsys=capsys)
    assert rc == 0 and out.startswith("healthy: ")
    rc, out, _ = cli(ws, "health", "--json", capsys=capsys)
    doc = json.loads(out)
    assert rc == 0 and doc == {"workspace": str(ws.root), "healthy": True, "checks": doc["checks"]}
    assert all(c["ok"] and c["detail"] for c in doc["checks"])
    ws = set_config(ws, "[disk]\nreserve_bytes = 9_000_000_000_000_000\n")
    rc, out, _ = cli(ws, "health", capsys=capsys)
    assert rc == 1 and out.startswith("disk: free space on ") and len(out.splitlines()) == 1
    for bad in (["--stuck-after", "0"], ["--stuck-after", "nan"], ["--heartbeat-max-age", "-1"]):
        rc, out, err = cli(ws, "health", *bad, capsys=capsys)
        assert rc == 2 and out == "" and len(err.splitlines()) == 1, (bad, err)
    r = run_engine("-w", ws.root / "nowhere", "health")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not a skydeck workspace" in r.stderr


# ------------------------------------------------------------------ [metrics] settings


@pytest.mark.parametrize(
    "line,message",
    [
        ("interval_s = 0", "metrics.interval_s = 0 is outside 0.1..86400"),
        ('interval_s = "fast"', "metrics.interval_s must be a number"),
        ("textfile = 5", 'metrics.textfile must be a path, or "" for off'),
        ("usage_interval_s = -3.0", "metrics.usage_interval_s = -3.0 is outside"),
        ("intervall_s = 3.0", "did you mean interval_s?"),
    ],
)
def test_bad_metrics_values_are_exit_2_with_one_line(ws, line, message):
    _set_config(ws, f"[metrics]\n{line}\n")
    for cmd in (["health"], ["watch", "--once"]):
        r = run_engine("-w", ws.root, *cmd)
        assert r.returncode == 2, (cmd, r.stderr)
        assert r.stderr.count("\n") == 1 and "skydeck.toml" in r.stderr and message in r.stderr
        assert r.stdout == ""


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(10**6), 10**6),
        st.text(max_size=5),
        st.booleans(),
    )
)
def test_interval_is_accepted_exactly_in_range(v):
    ok = not isinstance(v, bool | str) and math.isfinite(v) and 0.1 <= v <= 86400
    try:
        s = parse_settings({"metrics": {"interval_s": v}})
    except BadInput as err:
        assert not ok and "metrics.interval_s" in str(err) and "\n" not in str(err)
    else:
        assert ok and s.metrics.interval_s == float(v)
        assert s.metrics.textfile == Settings().metrics.textfile


def test_exporter_tick_writes_when_due_only(ws):
    ex = Exporter(ws)
    try:
        assert ex.tick() and not ex.tick()  # interval_s (15 s) not over yet
        assert ex.tick(force=True)
        (hb,) = read_heartbeats(ws)
        assert hb.pid == os.getpid()
        wait_for(lambda: ex.usage() is not None, 30, what="the usage scan thread")
    finally:
        ex.close()
    assert read_heartbeats(ws) == []
