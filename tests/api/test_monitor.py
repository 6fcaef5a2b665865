"""engine.api.Monitor, UsageCadence and Job: what the console's workers call, headless.

The console's poll worker is one ``Monitor.poll`` per round and one message; these tests pin
what a snapshot carries (only what changed), the disk-scan cadence, and the job handle's
progress parsing, on real workspaces and real engine processes.
"""

from __future__ import annotations

import pytest

from engine import api
from engine.store import StateDB
from tests.console.conftest import fill_fixed

# engine.api reads the state database: on SQLite and on PostgreSQL (tests/postgres/plugin.py)
pytestmark = pytest.mark.usefixtures("state_backend")


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_monitor_polls_only_what_changed(ws):
    fill_fixed(ws)
    clock = Clock()
    with api.Monitor(ws, clock=clock) as monitor:
        first = monitor.poll("251124002")
        assert (
            first.changed
            and first.rows is not None
            and set(first.rows) == {"251123001", "251124002", "251125003"}
        )
        assert first.stream_read and first.stream is not None
        assert first.stream.stream.dlid == "251124002" and first.dlid == "251124002"
        assert first.groups == {"makeEvt": "chunk", "mergeEvt": "run"}
        assert first.typical["makeEvt"] == pytest.approx(12.8, abs=0.01)
        assert [i.name for i in first.locks or []] == ["halfpipe-251124002"]
        assert first.events == {}  # no propagation event yet

        quiet = monitor.poll("251124002")  # nothing moved, locks not due
        assert not quiet.changed and quiet.rows is None and quiet.stream is None

        other = monitor.poll("251125003")  # another downlink selected
        assert other.stream_read and other.rows is None and other.stream is not None
        assert other.stream.stream.status == "FAILED"

        clock.t += 1.5  # lock verdicts move with time
        assert monitor.poll("251125003").locks is not None

        with StateDB(ws.state) as db:  # a runner's write
            pi = next(
                p for p in db.instances(db.latest_stream("251124002").id) if p.status == "RUNNING"
            )
            db.update_instance(pi.id, status="SUCCESS", ended=pi.started + 30)
        moved = monitor.poll("251125003")
        assert moved.rows is not None and moved.stream_read and moved.moves_bytes


def test_monitor_reads_everything_again_after_a_failed_poll(ws, monkeypatch):
    fill_fixed(ws)
    with api.Monitor(ws) as monitor:
        assert monitor.poll(None).rows is not None
        read = monitor.rows.read

        def broken(db, incoming=True):  # type: ignore[no-untyped-def]
            raise OSError("disk went away")

        with StateDB(ws.state) as db, db.tx() as c:
            c.execute("UPDATE streams SET note='x' WHERE dlid='251125003'")
        monkeypatch.setattr(monitor.rows, "read", broken)
        with pytest.raises(OSError):
            monitor.poll(None)
        monkeypatch.setattr(monitor.rows, "read", read)
        again = monitor.poll(None)  # nothing changed since: all re-read
        assert again.rows is not None and again.stream_read and again.events is not None


def test_stage_cadence_after_changes_or_every_interval():
    clock = Clock(100.0)
    cadence = api.UsageCadence(10.0, clock=clock)
    assert cadence.start() and cadence.busy  # the first scan is due at once
    assert not cadence.start()  # never two at once
    cadence.done()
    assert not cadence.start()  # nothing changed, not due yet
    cadence.saw(api.Snapshot(locks=[]))  # locks do not move bytes
    assert not cadence.start()
    cadence.saw(api.Snapshot(rows={}))  # downlinks changed
    assert cadence.start()
    cadence.done()
    clock.t += 10.0
    assert cadence.start()  # the interval passed


def test_job_handle_yields_progress_and_exit(ws, tmp_path):
    out = tmp_path / "ev"
    scene = api.SCENES / "tboolean-box-detect.toml"
    job = api.start_job(
        ws,
        "propagate box",
        ["propagate", str(scene), "-o", str(out), "--photons", "20000", "--workers", "1"],
    )
    assert job.title == f"propagate box (pid {job.pid})"
    seen = list(job.progress())
    assert job.wait() == 0 and (out / "meta.json").is_file()
    assert seen and seen[-1].done == seen[-1].total == 20000 and job.last == seen[-1]
    assert [p.done for p in seen] == sorted(p.done for p in seen)
    assert job.log.parent == ws.logs / "console" and job.log.name.startswith("propagate-")


def test_job_handle_of_a_failing_job_has_its_reason(ws, tmp_path):
    job = api.start_job(
        ws, "build", ["build", str(tmp_path / "missing"), "-o", str(tmp_path / "out.h5")]
    )
    seen = list(job.progress())
    assert all(p.done == 0 for p in seen)  # it never got going
    assert job.wait() == 2
    assert "missing" in job.reason()
