"""A Slurm controller outage is weather, not failure: with slurmctld stopped for about two
minutes the daemon's submissions wait (READY, ``waiting: Slurm controller unreachable``)
instead of FAILED streams, a job that ends meanwhile is recorded from its exit file, the
daemon's loop goes on taking deliveries in (no sbatch or squeue blocks it), and once the
controller is back every waiting instance is submitted, once.

The controller stopped here is a private one (its own slurmctld and slurmd, on free ports,
sharing the host's munged): the cluster of tests/slurm/cluster.sh is shared by everyone on
this machine and is never stopped by a test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..pipeline.conftest import (
    make_delivery,
    quick,
    start_daemon,
    stop_daemon,
    stream_status,
    wait_for,
)
from .test_slurm_launcher import _all_instances, _task, _ws

pytestmark = pytest.mark.slow

OUTAGE_S = 110.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    conf: Path
    dir: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def pid(self, name: str) -> int | None:
        try:
            return int((self.dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def start_controller(self) -> None:
        subprocess.run(["slurmctld", "-f", str(self.conf)], env=self.env(), check=True, timeout=60)

    def stop(self, name: str) -> None:
        pid = self.pid(name)
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)

    def answers(self) -> bool:
        res = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%t"], env=self.env(), capture_output=True, text=True
        )
        return res.returncode == 0 and res.stdout.strip().rstrip("*~#") in ("idle", "mix", "alloc")


@pytest.fixture
def own_cluster(tmp_path_factory, monkeypatch) -> Iterator[Cluster]:
    if os.geteuid() != 0 or shutil.which("slurmctld") is None:
        pytest.skip("a private slurmctld and slurmd need root and the Slurm daemons")
    d = tmp_path_factory.mktemp("ctl")
    (d / "state").mkdir()
    (d / "spool").mkdir()
    host = socket.gethostname().split(".")[0]
    conf = d / "slurm.conf"
    conf.write_text(
        f"ClusterName=skydeck-outage\nSlurmctldHost={host}(127.0.0.1)\n"
        "SlurmUser=root\nSlurmdUser=root\nAuthType=auth/munge\n"
        f"StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n"
        f"SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n"
        f"SlurmctldLogFile={d}/slurmctld.log\nSlurmdLogFile={d}/slurmd.log\n"
        f"SlurmctldPort={_free_port()}\n"
        "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n"
        "JobAcctGatherType=jobacct_gather/none\nAccountingStorageType=accounting_storage/none\n"
        "SchedulerType=sched/builtin\nSchedulerParameters=batch_sched_delay=0,sched_min_interval=0\n"
        "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nMpiDefault=none\n"
        "ReturnToService=2\nMinJobAge=300\nKillWait=5\n"
        f"NodeName=outagenode NodeHostname={host} NodeAddr=127.0.0.1 Port={_free_port()} "
        "CPUs=2 RealMemory=1000 State=UNKNOWN\n"
        "PartitionName=debug Nodes=outagenode Default=YES MaxTime=INFINITE State=UP\n",
        encoding="utf-8",
    )
    c = Cluster(conf, d)
    try:
        c.start_controller()
        subprocess.run(
            ["slurmd", "-N", "outagenode", "-f", str(conf)], env=c.env(), check=True, timeout=60
        )
        wait_for(c.answers, 60, 0.2, "the private node idle")
        monkeypatch.setenv("SLURM_CONF", str(conf))
        yield c
    finally:
        if c.pid("slurmctld") is not None:
            subprocess.run(["scancel", "--user=root"], env=c.env(), capture_output=True, timeout=30)
        c.stop("slurmd")
        c.stop("slurmctld")


NAP = """[[process]]
name = "nap"
command = ["{python}", "-c", "import sys, time; time.sleep(4); open(sys.argv[1], 'w').write('slept')", "{stage}/nap-{dlid}.txt"]
outputs = ["{stage}/nap-{dlid}.txt"]
"""


def test_a_controller_outage_makes_submissions_wait_not_fail(tmp_path, own_cluster):
    first, waits, later = "251207501", "251207502", "251207503"
    w = quick(_task(_ws(tmp_path / "ws"), NAP, "nap"), scan_interval=1.0, quiet=0.5)
    daemon = start_daemon(w, tmp_path / "watch.log")
    try:
        make_delivery(w, first, events=50, event_bytes=400, chunks=1, runs=1)

        def running(dlid: str) -> bool:
            return any(p.status == "RUNNING" for p in _all_instances(w, dlid))

        wait_for(lambda: running(first), 60, 0.1, "the first job running")
        own_cluster.stop("slurmctld")  # its job runs on; the controller is gone
        down_at = time.monotonic()

        make_delivery(w, waits, events=50, event_bytes=400, chunks=1, runs=1)

        def waiting(dlid: str) -> str | None:
            pis = _all_instances(w, dlid)
            note = pis[0].note if pis else None
            return note if pis and pis[0].status == "READY" and note else None

        note = wait_for(lambda: waiting(waits), 60, 0.2, "the submission waiting")
        assert note.startswith("waiting: Slurm controller unreachable"), note
        # the job that ran on ends meanwhile: recorded from its exit file
        wait_for(lambda: stream_status(w).get(first) == "SUCCESS", 60, 0.2, "the first job")
        # the loop is not blocked: a delivery made now is registered at once
        t = time.monotonic()
        make_delivery(w, later, events=50, event_bytes=400, chunks=1, runs=1)
        wait_for(lambda: later in stream_status(w), 8, 0.1, "the later delivery's stream")
        assert time.monotonic() - t < 8
        while time.monotonic() - down_at < OUTAGE_S:
            statuses = stream_status(w)
            assert statuses.get(waits) == statuses.get(later) == "RUNNING", statuses
            for dlid in (waits, later):
                assert all(p.status == "READY" for p in _all_instances(w, dlid))
            assert daemon.poll() is None
            time.sleep(2)

        own_cluster.start_controller()
        wait_for(
            lambda: stream_status(w).get(waits) == stream_status(w).get(later) == "SUCCESS",
            120,
            0.5,
            "both waiting streams' success once the controller is back",
        )
    finally:
        assert stop_daemon(daemon) == 0
    for dlid in (first, waits, later):
        pis = _all_instances(w, dlid)
        # one execution each, one job each: never FAILED, never submitted twice
        assert [(p.execution, p.status) for p in pis] == [(1, "SUCCESS")], (dlid, pis)
        assert pis[0].job_id and pis[0].note is None
        assert (w.stage / f"nap-{dlid}.txt").read_text() == "slept"
