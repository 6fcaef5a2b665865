"""Scriptlets: the small steps a task file runs inside the engine instead of as a job
(Pipeline-II ran Jython scriptlets in its server for the same kind of bookkeeping).

Why a registry: a task file names a scriptlet (``scriptlet = "launch_chunks"``); the task
parser accepts exactly the names in ``SCRIPTLETS`` and the runner calls the function there,
so a new scriptlet is one function and one line here. A scriptlet gets a ``Call`` (the
instance it runs for, plain values) and the state database; it must be idempotent (on a
full disk the runner holds the instance and runs it again on a later step) and raises
OSError or ValueError for a failure (the runner records the reason). It imports nothing of
the pipeline, so the task parser can import the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.core.atomic import atomic_write_bytes
from engine.intake import manifest

if TYPE_CHECKING:
    from engine.store import StateDB


@dataclass(frozen=True)
class Call:
    """The instance a scriptlet runs for."""

    dlid: str
    level0: Path  # the delivery's level-0 directory
    outdir: Path  # HalfPipe's outputBase/<DLID>
    process: str
    pi_id: int
    stream_id: int


def launch_chunks(call: Call, db: StateDB) -> None:
    """HalfPipe's launchChunks: one makeEvt substream per RetDef (copied to outputBase)."""
    call.outdir.mkdir(parents=True, exist_ok=True)
    chunks = []
    for rd in sorted(call.level0.glob(f"RetDef-{call.dlid}-*.xml")):
        target = call.outdir / rd.name
        data = rd.read_bytes()
        if not target.exists() or target.read_bytes() != data:
            atomic_write_bytes(target, data)
        db.record_file(target, call.process, call.pi_id, call.dlid, manifest.md5_file(target))
        chunks.append(rd.name[len(f"RetDef-{call.dlid}-") : -len(".xml")])
    if not chunks:
        raise ValueError(f"no RetDef-{call.dlid}-*.xml in {call.level0}")
    db.set_stream_vars(call.stream_id, chunks=chunks)


# name in a task file -> the function: the one registration of each scriptlet
SCRIPTLETS: dict[str, Callable[[Call, StateDB], None]] = {"launch_chunks": launch_chunks}
