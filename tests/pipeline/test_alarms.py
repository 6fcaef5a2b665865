"""Alarms and alerts: a FAILED stream fails `health` until an operator acts (ack, rollback),
the failure counters, the `[alerts] command` hook (real processes: the hook script, `run`,
`watch --once`), and `halt`/`resume`."""

from __future__ import annotations

import json
import shlex
import sys
import threading
import time
from pathlib import Path

from engine.api.alarms import engine_status
from engine.cli import HALT_FLAGS_HELP
from engine.core.alerts import ENDED, Alerter
from engine.core.heartbeat import write_heartbeat
from engine.core.owner import Owner
from engine.daemon.exporter import render
from engine.pipeline.alarms import whoami
from engine.pipeline.halts import HALT_FLAGS, HALT_MEANING
from engine.store import Downlink, StateDB

from .conftest import FAST, cli, cli_proc, make_delivery, set_config, wait_for

HOOK = """\
import json, sys
doc = json.load(sys.stdin)
with open(sys.argv[1], "a") as fh:
    fh.write(json.dumps(doc) + "\\n")
"""


def _hook(tmp_path: Path) -> tuple[str, Path]:
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    out = tmp_path / "alerts.jsonl"
    return shlex.join([sys.executable, str(script), str(out)]), out


def _alerts(out: Path) -> list[dict]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines()]


def _failing(ws, tmp_path: Path, hook: str):
    task = tmp_path / "task.toml"
    task.write_text(
        '[task]\nname = "halfpipe"\n'
        '[[process]]\nname = "bad"\n'
        'command = ["{python}", "-c", "import sys; print(\'boom: no good\', file=sys.stderr); '
        'sys.exit(3)"]\n'
    )
    ws = set_config(
        ws,
        f'[pipeline]\ntask = "{task}"\n[alerts]\ncommand = {json.dumps(hook)}\ntimeout_s = 20.0\n',
    )
    with StateDB(ws.state) as db:
        t = time.time()
        db.register_downlink(
            Downlink("251125001", "level0", str(ws.incoming_level0 / "x"), 1, False, None, t, t)
        )
    return ws


def test_failed_stream_alarm_until_ack_then_again_after_rollback(ws, tmp_path, capsys):
    hook, out = _hook(tmp_path)
    ws = _failing(ws, tmp_path, hook)
    write_heartbeat(ws, Owner.me(), 15.0)  # a live "daemon": only the stream check fails
    r = cli_proc(ws, "run", "251125001")
    assert r.returncode == 1
    # the real `run` process sent the alert before it exited: once, with every field
    (a,) = _alerts(out)
    assert a["event"] == "stream_failed" and a["dlid"] == "251125001"
    assert a["process"] == "bad" and a["host"] and a["time"].endswith("Z")
    # the job's own last error line travels with the alert (its log's, not just the code)
    assert a["reason"] == "exit code 3: boom: no good"
    assert a["detail"]["note"] == "failed: bad (bad: exit code 3: boom: no good)"

    r = cli_proc(ws, "health")
    assert r.returncode == 1
    (line,) = r.stdout.splitlines()
    assert line.startswith("failed:251125001: stream ") and "(251125001) FAILED process bad" in line

    # the counters: one failed instance of "bad", one stream failed
    text = render(ws).decode()
    assert 'skydeck_instances_failed_total{process="bad"} 1.0' in text
    assert "skydeck_streams_failed_total 1.0" in text

    # an acknowledgement: who and why, shown by streams; health passes
    rc, o, _ = cli(ws, "ack", "251125001", "--reason", "known bad input, ticket 7", capsys=capsys)
    assert rc == 0 and f"as {whoami()}" in o
    r = cli_proc(ws, "health")
    assert r.returncode == 0, r.stdout
    rc, o, _ = cli(ws, "streams", "251125001", capsys=capsys)
    assert f"acknowledged by {whoami()} at " in o and "known bad input, ticket 7" in o
    rc, o, _ = cli(ws, "streams", "--json", capsys=capsys)
    assert json.loads(o)[0]["acknowledgements"][0]["why"] == "known bad input, ticket 7"
    assert engine_status(ws).alarms == []

    # a rollback and a second failure: a new alarm (the old ack does not cover it)
    rc, _, _ = cli(ws, "rollback", "251125001", capsys=capsys)
    assert rc == 0
    assert cli_proc(ws, "health").returncode == 0  # WAITING: rolled back, nothing to alarm
    time.sleep(0.05)
    assert cli_proc(ws, "run", "251125001").returncode == 1
    r = cli_proc(ws, "health")
    assert r.returncode == 1 and "FAILED process bad" in r.stdout
    (alarm,) = engine_status(ws).alarms
    assert alarm.kind == "FAILED" and alarm.process == "bad"
    # the same failure again is the same alert: deduplicated across processes
    assert len(_alerts(out)) == 1
    text = render(ws).decode()
    assert 'skydeck_instances_failed_total{process="bad"} 2.0' in text  # the fixed one counts


def test_ack_refuses_without_reason_or_stream(ws, capsys):
    rc, _, err = cli(ws, "ack", "251125009", "--reason", "x", capsys=capsys)
    assert rc == 2 and "no stream" in err and err.count("\n") == 1
    rc, _, err = cli(ws, "ack", "251125009", "--reason", "  ", capsys=capsys)
    assert rc == 2 and "--reason" in err


def test_alerter_never_blocks_times_out_dedups_and_rate_limits(tmp_path):
    # a hanging hook (and its child): send returns at once; the hook's process group is
    # killed after the timeout, said in one line
    lines: list[dict] = []
    a = Alerter("sh -c 'sleep 30 & wait'", timeout_s=0.5, marks=tmp_path / "m", report=lines.append)
    t0 = time.monotonic()
    assert a.send("stream_failed", "251125001", "bad", "boom")
    assert time.monotonic() - t0 < 0.2
    assert not a.send("stream_failed", "251125001", "bad", "boom")  # duplicate
    a.close(wait_s=5)
    (line,) = lines
    assert line["event"] == "alert_failed" and line["error"] == "timed out after 0.5 s"
    assert time.monotonic() - t0 < 3

    # a failing hook: one line with its exit code and last stderr line
    lines.clear()
    b = Alerter("sh -c 'echo nope >&2; exit 4'", marks=tmp_path / "m2", report=lines.append)
    b.send("halt_set", None, None, "x")
    b.close(wait_s=5)
    assert [x["error"] for x in lines] == ["exit 4: nope"]

    # no shell: the reason reaches only stdin; the command's words are not expanded
    hook, out = _hook(tmp_path)
    marker = tmp_path / "pwned"
    c = Alerter(hook + " '$(touch " + str(marker) + ")'", max_per_minute=2, marks=tmp_path / "m3")
    assert c.send("delivery_rejected", None, None, f"bad; touch {marker}")
    assert c.send("delivery_rejected", None, None, "two")
    assert not c.send("delivery_rejected", None, None, "three")  # over the rate
    c.close(wait_s=10)
    assert not marker.exists()
    assert [x["reason"] for x in _alerts(out)] == [f"bad; touch {marker}", "two"]

    # a command that cannot start: one line, the caller unaffected
    lines.clear()
    d = Alerter(str(tmp_path / "missing-hook"), marks=None, report=lines.append)
    assert d.send("takeover", None, None, "x")
    d.close(wait_s=5)
    assert [x["error"][:13] for x in lines] == ["cannot start:"]


def test_alerts_from_many_threads_do_not_block(tmp_path):
    a = Alerter(
        "sleep 5", timeout_s=0.2, marks=tmp_path / "m", max_per_minute=10_000, report=[].append
    )
    t0 = time.monotonic()
    threads = [
        threading.Thread(target=lambda i=i: a.send("halt_set", None, None, f"r{i}"))
        for i in range(200)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - t0 < 2.0  # a full queue drops, never waits


def test_halt_and_resume(ws, tmp_path, capsys):
    hook, out = _hook(tmp_path)
    ws = set_config(ws, f"[alerts]\ncommand = {json.dumps(hook)}\n")
    assert HALT_MEANING == HALT_FLAGS_HELP and tuple(HALT_FLAGS) == tuple(HALT_FLAGS_HELP)
    r = cli_proc(ws, "halt", "--help")
    for flag, meaning in HALT_MEANING.items():
        assert flag in r.stdout and meaning.split(":")[0] in " ".join(r.stdout.split())
    assert "haltL1" not in r.stdout
    r = cli_proc(ws, "halt", "haltL1")
    assert r.returncode == 2 and "invalid choice: 'haltL1'" in r.stderr
    r = cli_proc(ws, "halt", "halted")
    assert r.returncode == 0 and (ws.path("flags") / "halted").is_file()
    (a,) = _alerts(out)
    assert a["event"] == "halt_set" and "halted set globally" in a["reason"]
    write_heartbeat(ws, Owner.me(), 15.0)
    r = cli_proc(ws, "health")
    assert r.returncode == 1 and "halt:halted: halt flag halted is set globally" in r.stdout
    st = engine_status(ws)
    assert st.halts == {"halted": ["global"]} and st.daemon_alive
    assert st.heartbeat_age_s is not None and st.heartbeat_age_s < 60

    # a new delivery registered while halted sits arrived, its note names the halt
    make_delivery(ws, "251125002", **FAST)
    rc, _, _ = cli(ws, "watch", "--once", capsys=capsys)
    assert rc == 0
    rc, o, _ = cli(ws, "downlinks", capsys=capsys)
    (row,) = [ln for ln in o.splitlines() if ln.startswith("251125002")]
    assert "held: halt flag halted set globally" in row
    from engine.api.rows import downlink_rows

    with StateDB(ws.state) as db:
        r2 = downlink_rows(ws, db)["251125002"]
    assert r2.state == "arrived" and "halt flag halted" in r2.note

    r = cli_proc(ws, "halt", "haltStage", "251125002")
    assert r.returncode == 0 and (ws.downlinks / "251125002" / "haltStage").is_file()
    assert engine_status(ws, per_downlink=True).halts == {
        "halted": ["global"],
        "haltStage": ["251125002"],
    }
    assert engine_status(ws).halts == {"halted": ["global"]}
    r = cli_proc(ws, "resume", "halted")
    assert r.returncode == 0 and "halted cleared globally" in r.stdout
    r = cli_proc(ws, "resume", "halted")
    assert r.returncode == 0 and "was not set" in r.stdout
    assert [x["event"] for x in _alerts(out)] == ["halt_set", "halt_set"]


def test_daemon_alerts_rejected_delivery_and_halt(ws, tmp_path, capsys):
    hook, out = _hook(tmp_path)
    ws = set_config(
        ws,
        f"[alerts]\ncommand = {json.dumps(hook)}\n"
        "[watch]\nscan_interval_s = 300.0\nquiet_s = 0.2\npoll_interval_s = 0.2\n",
    )
    (ws.incoming_fcopy / "251125008.tar").write_bytes(b"garbage" * 50)
    from engine.intake import manifest

    manifest.write(ws.incoming_fcopy, ["251125008.tar"], ws.incoming_fcopy / "251125008.md5")
    (ws.path("flags")).mkdir(parents=True, exist_ok=True)
    (ws.path("flags") / "haltCleanup").touch()  # set by hand: the daemon's scan says so
    rc, _, _ = cli(ws, "watch", "--once", capsys=capsys)
    assert rc == 2
    got = wait_for(lambda: len(_alerts(out)) >= 2 and _alerts(out), 20, what="two alerts")
    by = {a["event"]: a for a in got}
    assert by["delivery_rejected"]["dlid"] == "251125008"
    assert "unreadable tar" in by["delivery_rejected"]["reason"]
    assert by["halt_set"]["reason"].startswith("halt flag haltCleanup set globally")


def test_the_daemons_scan_alerts_stuck_streams_and_the_disk_reserve_once(ws, tmp_path):
    """alarm_scan (the daemon's reconciliation scan): a stream whose runner died is STUCK
    once no daemon took it over, alerted once however often the scan runs; launching paused
    under the reserve is alerted too. Then an ack: health passes, the alarm stays listed."""
    import os
    import subprocess

    from engine.api.alarms import acknowledge, alarms
    from engine.api.health import health
    from engine.core.workspace import Workspace
    from engine.pipeline.alarms import alarm_scan

    hook, out = _hook(tmp_path)
    ws = set_config(ws, f"[alerts]\ncommand = {json.dumps(hook)}\n")
    with StateDB(ws.state) as db:
        t = time.time()
        db.register_downlink(Downlink("251125003", "level0", "/x", 1, False, None, t, t))
    code = (
        "import sys; from engine.store import StateDB; from engine.core.workspace import "
        "Workspace\nwith StateDB(Workspace.open(sys.argv[1]).state) as db:\n"
        "    assert db.claim_stream('251125003', 'halfpipe')[0] is not None\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    subprocess.run([sys.executable, "-c", code, str(ws.root)], check=True, env=env)
    later = time.time() + 1000
    a = Alerter(hook, marks=ws.path("logs") / "alerts")
    with StateDB(ws.state) as db:
        alarm_scan(ws, db, a, now=later)
        alarm_scan(ws, db, a, now=later + 60)  # the same alarm: not sent again
    a.close(wait_s=20)
    (stuck,) = _alerts(out)
    assert stuck["event"] == "stream_stuck" and stuck["dlid"] == "251125003"
    assert (
        stuck["reason"].endswith("stuck: runner gone")
        and "runner gone" in stuck["detail"]["detail"]
    )

    full = Workspace.open(set_config(ws, "[disk]\nreserve_bytes = 9000000000000000\n").root)
    b = Alerter(hook, marks=full.path("logs") / "alerts")
    with StateDB(full.state) as db:
        alarm_scan(full, db, b, now=later)
    b.close(wait_s=20)
    assert [x["event"] for x in _alerts(out)] == ["stream_stuck", "disk_paused"]
    assert _alerts(out)[-1]["reason"].startswith("launching paused: free space on ")

    # (the daemon check fails too, 1000 s on: no heartbeat that young)
    assert [c.name for c in health(ws, now=later) if not c.ok] == ["daemon", "stuck:251125003"]
    acknowledge(ws, "251125003", reason="host rebooting, will resume")
    checks = health(ws, now=later)
    assert [c.name for c in checks if not c.ok] == ["daemon"]
    assert [c.detail for c in checks if c.name == "streams"] == [
        "1 stream(s) running, none stuck or failed (1 acknowledged)"
    ]
    (alarm,) = alarms(ws, now=later, heartbeat_max_age=100)
    assert alarm.kind == "STUCK" and not alarm.open and alarm.ack is not None
    assert alarm.ack.who == whoami()


def test_a_hanging_hook_never_holds_the_daemon(ws, tmp_path):
    """watch --once (a real process) with a hook that hangs: the deliveries are handled as
    ever, each alert is one alert_failed line, no hook outlives the daemon."""
    import psutil

    pids = tmp_path / "hook-pids"
    hook = shlex.join(["sh", "-c", f"echo $$ >> {pids}; exec sleep 120"])
    ws = set_config(
        ws,
        f"[alerts]\ncommand = {json.dumps(hook)}\ntimeout_s = 1.0\n[watch]\nquiet_s = 0.2\n",
    )
    for i in range(3):
        (ws.incoming_fcopy / f"25112501{i}.tar").write_bytes(b"garbage" * 50)
        from engine.intake import manifest

        manifest.write(
            ws.incoming_fcopy, [f"25112501{i}.tar"], ws.incoming_fcopy / f"25112501{i}.md5"
        )
    make_delivery(ws, "251125020", **FAST)
    t0 = time.monotonic()
    r = cli_proc(ws, "watch", "--once", "--log-format", "json")
    took = time.monotonic() - t0
    assert r.returncode == 2 and r.stderr.count("unreadable tar") == 3, r.stderr
    assert pids.exists()
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert any(x["event"] == "stream_success" and x["dlid"] == "251125020" for x in lines)
    failed = [x for x in lines if x["event"] == "alert_failed"]
    # each hung hook: killed at its timeout, or (the last, on a loaded machine) when watch
    # ended first; never another reason
    assert failed and all(x["error"] in ("timed out after 1 s", ENDED) for x in failed)
    assert took < 60
    alive = [int(x) for x in pids.read_text().split() if psutil.pid_exists(int(x))]
    assert [p for p in alive if psutil.Process(p).status() != psutil.STATUS_ZOMBIE] == []
