"""What every launcher speaks: the job a runner hands over, the handle and result it gets
back, and the ``Launcher`` protocol (Pipeline-II's job-control daemons behind one face).

Why a module of its own: the stream runner, the daemon and retention know launchers only
through these types and the registry (``engine.pipeline.launchers``); each launcher
(``local.py``, ``slurm.py``, a site's own) implements them in one file and imports nothing
of another launcher except, where it delegates, the one below it (Slurm runs a task file's
``launcher = "local"`` bookkeeping jobs through the local launcher).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol


class Unavailable(OSError):
    """The launcher cannot take a job now (its batch system's controller does not answer):
    the instance waits (READY, the reason in its note) and is submitted again on a later
    step. Not the job's failure, and nothing was started."""


@dataclass
class JobSpec:
    pi_id: int
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    name: str = ""  # what a batch system shows: <task>-<DLID>-<process>[-<key>]
    launcher: str | None = None  # "local": run on this host even under a batch launcher
    batch: tuple[str, ...] = ()  # extra batch-system options of this process
    ntasks: int = 1  # MPI ranks: a batch job asks the allocation for this many
    gpus: int = 0  # GPUs a batch job asks for (the local launcher ignores it)


@dataclass
class JobHandle:
    pi_id: int
    pid: int | None  # None for a batch job (it runs elsewhere)
    host: str
    start: float
    job_id: str  # launcher-specific id (pid locally, the Slurm job id)
    launcher: str = "local"  # the name of the launcher that started it (its registry name)
    # the job lives on without its runner (a batch job): its id is recorded before anything
    # else, so a successor adopts it instead of starting it twice
    detached: bool = False


@dataclass
class JobResult:
    pi_id: int
    exit_code: int  # negative: killed by that signal
    ended: float
    lost: str | None = None  # the batch system lost the job (NODE_FAIL, PREEMPTED): not its fault
    started: float | None = None  # when the job began to run, where the launcher knows it


class Launcher(Protocol):
    """Where process instances run. ``capacity`` says how many more it takes now; ``submit``
    starts one (``Unavailable`` when it cannot now: the caller waits and tries again, quickly
    refused meanwhile, so that a controller outage never blocks the daemon's loop); ``poll`` returns those that ended since the last call; ``cancel`` stops one
    (SIGTERM, then SIGKILL after ``grace_s``); ``cancel_all`` stops every one and returns
    their ids; ``active`` lists the ids still running; ``pending_reason`` says why a
    submitted job still waits in a batch queue (None: it runs); ``started`` says when a job
    began to run (None: it still waits in a queue; a local job runs from its submission,
    so the runner shows QUEUED only while this is None); ``find_submitted`` finds live
    jobs by the log they write (a job submitted by a runner that died before recording its
    id); ``adopt`` takes over a job a dead runner submitted (a batch job lives on; a local
    one cannot be adopted).

    Class attributes the registry reads: ``name`` (what ``[pipeline] launcher`` says and
    what is recorded on each job), ``settings_section`` (the skydeck.toml section of its
    options, None for none) and ``sibling_suffixes`` (files a job writes beside its log,
    such as Slurm's batch script and exit file: retention removes them with the log)."""

    name: ClassVar[str]
    settings_section: ClassVar[str | None]
    sibling_suffixes: ClassVar[tuple[str, ...]]

    def capacity(self) -> int: ...
    def submit(self, spec: JobSpec) -> JobHandle: ...
    def poll(self) -> list[JobResult]: ...
    def cancel(self, pi_id: int, grace_s: float = 5.0) -> None: ...
    def cancel_all(self, grace_s: float = 5.0) -> list[int]: ...
    def active(self) -> list[int]: ...
    def adopt(self, pi_id: int, job_id: str, log: Path) -> bool: ...
    def pending_reason(self, pi_id: int) -> str | None: ...
    def started(self, pi_id: int) -> float | None: ...
    def find_submitted(self, logs: list[Path]) -> dict[Path, str]: ...
