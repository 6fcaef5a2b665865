"""What the local launcher tells an operator is true: a failed job's own error line travels
with its status (instance note, stream note, ``streams --json``, ``downlinks``, the
console's engine.api), escaped and bounded; a local job goes straight to RUNNING (no queue
time); a FAILED stream leaves no stream lock behind.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.api.listings import stream_views
from engine.core.workspace import Workspace
from engine.pipeline import joblog

from .conftest import cli, make_delivery, set_config

TASK = """[task]
name = "t"

[[process]]
name = "first"
command = ["{python}", "-c", "import time; time.sleep(0.3)"]
stream_lock = "halfpipe-{dlid}"

[[process]]
name = "second"
after = ["first"]
command = ["{python}", "-c", CODE]
"""


def _task(w: Workspace, code: str) -> Workspace:
    path = w.root / "t.toml"
    path.write_text(TASK.replace("CODE", json.dumps(code)), encoding="utf-8")
    return set_config(w, f'[pipeline]\ntask = "{path}"\n')


def _instances(w: Workspace, dlid: str) -> dict:
    views = stream_views(w, dlid) if w.state_url or w.state_db.exists() else []
    return {pi.process: pi for v in views for pi in v.instances}


def test_a_traceback_s_final_line_reaches_every_listing(ws, capsys):
    dlid = "251207301"
    code = (
        "import h5py\n"
        "def read(p):\n    raise OSError(p + ': truncated HDF5 file')\n"
        "print('reading epix.h5: no error so far')\nread('epix.h5')\n"
    )
    w = _task(ws, code)
    make_delivery(w, dlid, events=50, chunks=1, runs=1)
    rc, _, err = cli(w, "run", dlid, capsys=capsys)
    assert rc == 1, err
    by = _instances(w, dlid)
    why = "exit code 1: OSError: epix.h5: truncated HDF5 file"
    assert (by["second"].status, by["second"].note) == ("FAILED", why)
    # a local job runs from its submission: no queue time, its run time its own
    first = by["first"]
    assert first.status == "SUCCESS" and first.submitted is not None and first.started
    assert first.queue_s(0.0) is not None and first.queue_s(0.0) < 0.5
    assert 0.3 <= (first.run_s(0.0) or 0) < 5
    rc, out, _ = cli(w, "streams", "--json", capsys=capsys)
    (view,) = json.loads(out)
    assert [p["note"] for p in view["instances"]] == [None, why]
    assert view["stream"]["note"] == f"failed: second (second: {why})"
    rc, out, _ = cli(w, "downlinks", capsys=capsys)
    assert "FAILED" in out and "epix.h5: truncated HDF5 file" in out
    rc, out, _ = cli(w, "streams", capsys=capsys)
    assert why in out and "run " in out and "queued " in out
    # what the console reads through engine.api: the downlinks table's note, the tree's
    from engine.api.rows import DownlinkRows
    from engine.store import StateDB

    with StateDB(w.state) as db:
        row = DownlinkRows(w).read(db, incoming=False)[dlid]
    assert (row.state, row.note) == ("failed", f"failed: second (second: {why})")
    assert _instances(w, dlid)["second"].note == why


def test_a_failed_stream_leaves_no_stream_lock_behind(ws, capsys):
    dlid = "251207302"
    w = _task(ws, "import sys; sys.exit(3)")
    make_delivery(w, dlid, events=50, chunks=1, runs=1)
    rc, _, _ = cli(w, "watch", "--once", capsys=capsys)
    by = _instances(w, dlid)
    assert by["second"].status == "FAILED" and by["second"].exit_code == 3
    assert not (w.lock / f"halfpipe-{dlid}").exists()
    rc, out, _ = cli(w, "locks", "--json", capsys=capsys)
    assert rc == 0 and f"halfpipe-{dlid}" not in out


def _log(tmp: Path, text: str | bytes) -> Path:
    p = tmp / "job.log"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_the_error_line_rules(tmp_path):
    head = "# 2026-12-07T09:00:00 python -m engine build\n"
    cases = [
        (head + "ok\nERROR: disk quota exceeded\nbye\n", "ERROR: disk quota exceeded"),
        (
            head + "reading\nskydeck-engine: epix.h5: truncated HDF5 file\ncleanup done\n",
            "skydeck-engine: epix.h5: truncated HDF5 file",
        ),
        (head + "progress 10%\nlast words\n", "last words"),
        (head, None),
        ("", None),
        (
            "Traceback (most recent call last):\n  File \"x\", line 1\n    raise E\n"
            "KeyError: 'timestamp'\nerror in cleanup? no\n",
            "KeyError: 'timestamp'",
        ),
        # control characters: escaped, one printable line
        ("error \x1b[2J\x1b[Hfaked\rline\x07\n", "error \\x1b[2J\\x1b[Hfaked\\x0dline\\x07"),
    ]
    for text, want in cases:
        got = joblog.error_line(_log(tmp_path, text))
        assert got == want, (text, got)
    # bounded: a huge log costs its tail; a huge line is cut
    big = b"x" * (10 << 20) + b"\nthe error: " + b"y" * 1000 + b"\n"
    got = joblog.error_line(_log(tmp_path, big))
    assert got is not None and got.startswith("the error: y") and len(got) == joblog.MAX_CHARS
    assert joblog.error_line(tmp_path / "missing.log") is None
    # not valid UTF-8: replaced, never an exception
    assert joblog.error_line(_log(tmp_path, b"fatal: \xff\xfe bad bytes\n")) == (
        "fatal: \ufffd\ufffd bad bytes"
    )


def test_a_stopped_stream_is_stopped_not_failed_and_shows_when_it_stopped(ws):
    import signal
    import subprocess
    import sys
    import time

    from engine.api.rows import DownlinkRows
    from engine.store import StateDB

    from .conftest import REPO, wait_for

    dlid = "251207303"
    w = _task(ws, "import time; time.sleep(60)")
    make_delivery(w, dlid, events=50, chunks=1, runs=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "-w", str(w.root), "run", dlid],
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: (
                _instances(w, dlid).get("second") is not None
                and _instances(w, dlid)["second"].status == "RUNNING"
            ),
            60,
            0.1,
            "the second job running",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    stopped_at = time.time()
    with StateDB(w.state) as db:
        st = db.latest_stream(dlid, "t")
        assert st is not None and st.status == "TERMINATED"
        # it shows when it stopped, not a clock that keeps running
        assert st.ended is not None and st.ended <= stopped_at
        every = db.instances(st.id, latest_only=False)
        dead = [p for p in every if p.process == "second" and p.status == "TERMINATED"]
        assert len(dead) == 1 and dead[0].ended is not None
        assert dead[0].run_s(stopped_at + 100) == dead[0].ended - (dead[0].started or 0)
        # counted apart from failures: the downlink is "stopped", not "failed"
        row = DownlinkRows(w).read(db, incoming=False)[dlid]
        assert (row.state, row.stream) == ("stopped", "TERMINATED")
        claimed, _ = db.claim_stream(dlid, "t")
        assert claimed is not None and claimed.status == "RUNNING" and claimed.ended is None


def test_an_instance_whose_runner_died_shows_its_end_not_a_running_clock(ws, capsys):
    import os
    import subprocess
    import sys
    import time

    from .conftest import REPO, wait_for

    dlid = "251207304"
    w = _task(ws, "import time; print('working', flush=True); time.sleep(60)")
    make_delivery(w, dlid, events=50, chunks=1, runs=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "-w", str(w.root), "run", dlid],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        second = wait_for(
            lambda: (
                (p := _instances(w, dlid).get("second")) is not None
                and p.status == "RUNNING"
                and p.pid
                and p
            ),
            60,
            0.1,
            "the second job running",
        )
        wait_for(lambda: "working" in Path(second.log_path).read_text(), 30, 0.1, "its output")
        proc.kill()  # the runner dies; its local job dies with it (PR_SET_PDEATHSIG)
        proc.wait(10)
        wait_for(lambda: not os.path.exists(f"/proc/{second.pid}"), 30, 0.1, "the job gone")
    finally:
        if proc.poll() is None:
            proc.kill()
    last_write = os.stat(second.log_path).st_mtime

    def run_s() -> float:
        rc, out, _ = cli(w, "streams", "--json", capsys=capsys)
        (view,) = json.loads(out)
        (pi,) = [p for p in view["instances"] if p["process"] == "second"]
        assert pi["status"] == "RUNNING"  # as written: nobody recorded its end (STUCK)
        return pi["run_s"]

    first = run_s()
    time.sleep(1.5)
    assert run_s() == first == round(last_write - second.started, 3)
