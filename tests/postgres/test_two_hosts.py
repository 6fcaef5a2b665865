"""Two hosts, one workspace, one PostgreSQL: a crashed host is taken over without
an operator.

Two ``skydeck-engine watch`` daemons run in UTS namespaces named ``hostA`` and ``hostB``
(``unshare --uts``; root only, as CI runs) over one workspace and one state database
(``SKYDECK_STATE_URL``). Mock downlinks arrive; once hostB owns a RUNNING stream with a
running job, hostB's daemon and every process below it are killed with SIGKILL, as a host
crash would end them. hostA must take over hostB's streams and locks by itself (the server
saw hostB's presence go), every downlink must be staged exactly once (one SUCCESS stream
each), the staged bytes must equal a one-daemon run on SQLite, and no lock and no temporary
may be left. The measured takeover latency (kill to hostA's ``takeover`` line) is printed.
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
from pathlib import Path

import psutil
import pytest

from engine.core.dburl import parse_state_url
from engine.core.workspace import Workspace, init_workspace
from engine.intake import manifest
from engine.mock.delivery import MockSpec, deliver
from engine.pipeline import locks
from engine.store import StateDB
from tests.pipeline.conftest import wait_for as _wait

REPO = Path(__file__).resolve().parents[2]
DLIDS = tuple(f"2512020{i:02d}" for i in range(1, 6))
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
"""

# processes that run while the stream lock halfpipe-<DLID> (created for makeEvt, removed by
# cleanup; assets/tasks/halfpipe.toml) exists
HOLDING = ("makeEvt", "mergeIndices", "mergeEvt", "propagate")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="two hosts on one machine need root and unshare (UTS namespaces); CI runs as root",
)


def _workspace(root: Path) -> Workspace:
    ws = init_workspace(root)
    cfg = ws.root / "skydeck.toml"
    text = cfg.read_text(encoding="utf-8")
    # drop the default sections these settings replace (TOML sections must be unique)
    out, skip = [], False
    for line in text.splitlines():
        if line.startswith("["):
            skip = line.strip() in ("[disk]", "[halfpipe]", "[watch]", "[pipeline]")
        if not skip:
            out.append(line)
    cfg.write_text("\n".join(out) + "\n" + SETTINGS, encoding="utf-8")
    return Workspace.open(ws.root)


def _deliver(ws: Workspace, dlid: str, seed: int) -> None:
    deliver(
        MockSpec(dlid=dlid, sources=2, events=200, event_bytes=400, runs=2, chunks=2, seed=seed),
        "level0",
        ws.incoming_level0,
    )


def _staged(ws: Workspace) -> dict[str, str]:
    return {
        str(p.relative_to(ws.stage)): manifest.md5_file(p)
        for p in sorted(ws.stage.rglob("*"))
        if p.is_file()
    }


def _env(url: str | None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("SKYDECK_STATE_URL", None)
    if url is not None:
        env["SKYDECK_STATE_URL"] = url
    return env


def _daemon(ws: Workspace, host: str, url: str, log: Path) -> subprocess.Popen[bytes]:
    """``skydeck-engine watch`` on "another host": its own UTS namespace, its own session
    (process group), its log lines in ``log``."""
    inner = f'hostname {host} && exec "$0" -m engine -w "$1" watch'
    fh = open(log, "ab")  # noqa: SIM115 - the daemon owns it for its lifetime
    return subprocess.Popen(
        ["unshare", "--uts", "--", "sh", "-c", inner, sys.executable, str(ws.root)],
        stdout=fh,
        stderr=subprocess.STDOUT,
        env=_env(url),
        start_new_session=True,
    )


def _lines(log: Path) -> list[dict]:
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


def _crash(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the daemon, its process group and every process below it (its jobs run in
    sessions of their own), all at once: what a host crash does to them."""
    try:
        victims = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        victims = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for v in victims:
        with contextlib.suppress(psutil.Error):
            v.kill()
    proc.wait(10)


def test_a_crashed_host_is_taken_over_without_an_operator(tmp_path: Path, pg_url: str) -> None:
    t_test = time.time()
    # the reference: one daemon, SQLite, the same deliveries, at the same path (paths are
    # part of what is staged)
    ref = _workspace(tmp_path / "ws")
    for i, d in enumerate(DLIDS):
        _deliver(ref, d, seed=i)
    res = subprocess.run(
        [sys.executable, "-m", "engine", "-w", str(ref.root), "watch", "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(None),
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    reference = _staged(ref)
    print(f"reference run on SQLite: {time.time() - t_test:.1f} s")
    assert {k.split("/")[0] for k in reference if k.endswith(".h5")} == set(DLIDS)

    shutil.rmtree(ref.root)
    ws = _workspace(tmp_path / "ws")
    url = parse_state_url(pg_url, None)
    with StateDB(url):
        pass  # the schema, before two daemons race to create it
    log_a, log_b = tmp_path / "hostA.log", tmp_path / "hostB.log"
    a = _daemon(ws, "hostA", pg_url, log_a)
    b = _daemon(ws, "hostB", pg_url, log_b)
    try:
        _wait(
            lambda: (
                any(e.get("event") == "watching" for e in _lines(log_a))
                and any(e.get("event") == "watching" for e in _lines(log_b))
            ),
            30,
            what="both daemons",
        )
        for i, d in enumerate(DLIDS):
            _deliver(ws, d, seed=i)

        def b_runs_a_job() -> str | None:
            with StateDB(url) as db:
                for st in db.streams():
                    # a job between makeEvt and propagate: the stream lock is hostB's then
                    if (
                        st.status == "RUNNING"
                        and st.owner_host == "hostB"
                        and any(
                            pi.status == "RUNNING" and pi.pid and pi.process in HOLDING
                            for pi in db.instances(st.id)
                        )
                    ):
                        return st.dlid
            return None

        victim = _wait(b_runs_a_job, 45, what="hostB running a job of a stream", every=0.02)
        t_kill = time.time()
        _crash(b)

        def all_final() -> bool:
            with StateDB(url) as db:
                sts = {s.dlid: s.status for s in db.streams()}
            return len(sts) == len(DLIDS) and all(
                s in ("SUCCESS", "FAILED", "CANCELED") for s in sts.values()
            )

        _wait(all_final, 60, what="every stream final", every=0.2)
        print(
            f"hostB killed {t_kill - t_test:.1f} s into the test; every stream final "
            f"{time.time() - t_kill:.1f} s later"
        )
        lines_a = _lines(log_a)
        takeovers = [e for e in lines_a if e.get("event") == "takeover"]
        assert takeovers, "hostA logged no takeover"
        assert {e["old_owner"].split(":")[0] for e in takeovers} == {"hostB"}
        assert all(e["new_owner"].startswith("hostA:") for e in takeovers)
        assert victim in {e.get("dlid") for e in takeovers}
        latency = min(e["t"] for e in takeovers) - t_kill
        print(
            f"takeover latency {latency:.2f} s after kill -9 of hostB "
            f"({len(takeovers)} takeover line(s): "
            f"{', '.join(sorted(e['what'] for e in takeovers))})"
        )
        # hostB's locks went to hostA: taken over with its stream (resume), or reclaimed
        # when hostA's runner needed them
        lock_lines = [
            e
            for e in lines_a
            if e.get("what") == "lock" or "took over lock" in str(e.get("detail", ""))
        ]
        assert lock_lines, "no lock of hostB was taken over"
        assert all("hostB:" in (e.get("old_owner") or e.get("detail", "")) for e in lock_lines)

        os.kill(a.pid, signal.SIGTERM)
        assert a.wait(30) == 0
    finally:
        for p in (a, b):
            if p.poll() is None:
                _crash(p)

    with StateDB(url) as db:
        streams = db.streams(latest_only=False)
        assert sorted(s.dlid for s in streams) == sorted(DLIDS)  # one stream per downlink
        assert all(s.status == "SUCCESS" for s in streams), [(s.dlid, s.status) for s in streams]
        events = db.q("SELECT dlid, detail FROM events WHERE kind = 'takeover'")
        assert victim in {d for d, _ in events}
        assert all(json.loads(detail)["old_owner"].startswith("hostB:") for _, detail in events)
    assert _staged(ws) == reference  # staged once, byte for byte
    assert locks.list_locks(ws.lock) == []
    hidden = [
        p
        for p in [
            *ws.stage.rglob(".*"),
            *ws.downlinks.rglob(".*"),
            *ws.incoming_level0.glob(".*"),
            *ws.lock.glob(".*"),
        ]
        if p.name != ".reclaim"
    ]
    assert hidden == []  # no temporary left
    assert time.time() - t_test < 90
