"""The rows of the state database as dataclasses, and the status vocabularies.

Why a module of its own: every front end (CLI listings, console, daemon, runner) handles
these records, and none of them needs a database driver or SQL to do so. A record is what a
row means, whatever backend stored it: the SQLite file today, PostgreSQL later.

Statuses follow Pipeline-II (HalfPipe's workflow engine): a stream and its process
instances have an execution number, and a re-run is a new execution, never an overwrite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PI_STATUSES = (
    "WAITING",
    "READY",
    "QUEUED",
    "SUBMITTED",
    "RUNNING",
    "SUCCESS",
    "FAILED",
    "TERMINATING",
    "TERMINATED",
    "CANCELING",
    "CANCELED",
    "SKIPPED",
)
ACTIVE_PI = ("QUEUED", "SUBMITTED", "RUNNING", "TERMINATING")
DONE_PI = ("SUCCESS", "SKIPPED")
STREAM_STATUSES = ("WAITING", "RUNNING", "SUCCESS", "FAILED", "TERMINATED", "CANCELED")
FINAL_STREAM = ("SUCCESS", "FAILED", "TERMINATED", "CANCELED")  # no runner writes to it
LOCAL_LAUNCHER = "local"


@dataclass(frozen=True)
class Identity:
    """What was accepted, by content (engine/intake/identity.py): the manifest's entries
    digest and, for an fcopy package, the tar's MD5 as that manifest states it (verified
    at acceptance); each with the stat key that stands for it as a cache (None: not settled
    when read, so it is read again next time)."""

    manifest_sha256: str
    manifest_key: str | None = None
    package_md5: str | None = None
    package_key: str | None = None


@dataclass
class Delivery:
    name: str
    kind: str
    dlid: str | None
    status: str
    reason: str | None
    path: str
    seen: float
    done: float | None
    # schema 4: what was accepted (None: not accepted, or accepted before it was recorded)
    manifest_sha256: str | None = None
    manifest_key: str | None = None
    package_md5: str | None = None
    package_key: str | None = None

    @property
    def identity(self) -> Identity | None:
        """What was accepted under this name, by content; None when not recorded."""
        if self.manifest_sha256 is None:
            return None
        return Identity(self.manifest_sha256, self.manifest_key, self.package_md5, self.package_key)


@dataclass
class Downlink:
    dlid: str
    kind: str
    level0: str
    chunks: int
    gensteps: bool
    scene: str | None
    delivered: float
    registered: float
    # the level-0 MANIFEST.md5 that was registered: its stat key (a cache for the digest;
    # a database from before schema 4 holds dev:ino:size:mtime_ns here) and, by content, the
    # digest of its entries (engine/intake/identity.py). A directory at the same path with
    # other entries is a second delivery of the id, not this one (None: not recorded)
    manifest_id: str | None = None
    manifest_sha256: str | None = None


@dataclass
class Stream:
    id: int
    task: str
    dlid: str
    execution: int
    is_latest: bool
    status: str
    vars: dict[str, Any]
    note: str | None
    owner_pid: int | None
    owner_host: str | None
    owner_start: float | None
    created: float
    started: float | None
    ended: float | None

    @property
    def path(self) -> str:
        return self.dlid


@dataclass
class ProcessInstance:
    id: int
    stream_id: int
    process: str
    key: str
    execution: int
    is_latest: bool
    status: str
    auto_retry: int
    max_retries: int
    host: str | None
    pid: int | None
    pid_start: float | None
    created: float
    started: float | None
    ended: float | None
    exit_code: int | None
    log_path: str | None
    note: str | None
    # schema 2: the batch system's job id (None for a local job) and the launcher that ran it
    job_id: str | None = None
    launcher: str = LOCAL_LAUNCHER
    # schema 5: when it was handed to its launcher; ``started`` is when its job began to run
    submitted: float | None = None

    @property
    def label(self) -> str:
        return f"{self.process}[{self.key}]" if self.key else self.process

    def run_s(self, now: float) -> float | None:
        """How long its job ran: to its end, or to ``now`` while it runs; None before it
        began (queued) and for one that ended without a recorded start."""
        if self.started is None:
            return None
        if self.ended is not None:
            return max(0.0, self.ended - self.started)
        return max(0.0, now - self.started) if self.status == "RUNNING" else None

    def queue_s(self, now: float) -> float | None:
        """How long its job waited in a batch queue: to its start, or to ``now`` while it
        waits (QUEUED); None when not submitted (a scriptlet) or not known."""
        if self.submitted is None:
            return None
        if self.started is not None:
            return max(0.0, self.started - self.submitted)
        if self.status == "QUEUED":
            return max(0.0, now - self.submitted)
        if self.ended is not None:  # ended before it was seen running
            return max(0.0, self.ended - self.submitted)
        return None


@dataclass
class FileRecord:
    path: str
    dlid: str | None
    producer: str
    pi_id: int | None
    size: int
    md5: str | None
    created: float


@dataclass
class StreamView:
    """A stream with its latest process instances (what `streams` and the console show)."""

    stream: Stream
    instances: list[ProcessInstance] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for pi in self.instances:
            out[pi.status] = out.get(pi.status, 0) + 1
        return out


def from_row(cls: type, row: Any) -> Any:
    """A record of ``cls`` from a result row (JSON and flag columns decoded)."""
    d = dict(row)
    if cls is Stream:
        d["vars"] = json.loads(d["vars"] or "{}")
        d["is_latest"] = bool(d["is_latest"])
    elif cls is ProcessInstance:
        d["is_latest"] = bool(d["is_latest"])
    elif cls is Downlink:
        d["gensteps"] = bool(d["gensteps"])
        d.pop("seq", None)  # registration order: the read models' business (queries.py)
    return cls(**d)
