"""A process instance's line in the stream tree says where it runs: ``host:pid`` for a local
job, ``slurm:<job id>`` for a batch job (what ``squeue`` and ``scancel`` know it by)."""

from __future__ import annotations

from console.widgets.stream import pi_label
from engine.api import ProcessInstance

NOW = 1_764_600_000.0


def _pi(**kw: object) -> ProcessInstance:
    base = dict(
        id=1,
        stream_id=1,
        process="makeEvt",
        key="00001",
        execution=1,
        is_latest=True,
        status="RUNNING",
        auto_retry=0,
        max_retries=1,
        host="vm",
        pid=4242,
        pid_start=NOW - 5,
        created=NOW - 6,
        started=NOW - 5,
        ended=None,
        exit_code=None,
        log_path=None,
        note=None,
    )
    base.update(kw)
    return ProcessInstance(**base)  # type: ignore[arg-type]


def test_a_local_job_shows_host_and_pid():
    text = pi_label(_pi(), NOW, {}).plain
    assert "vm:4242" in text and "slurm" not in text


def test_a_batch_job_shows_its_job_id():
    text = pi_label(_pi(pid=None, host=None, launcher="slurm", job_id="8812"), NOW, {}).plain
    assert "slurm:8812" in text and "?:" not in text
