"""Scriptlets: the small steps a task file runs inside the engine instead of as a job
(Pipeline-II ran Jython scriptlets in its server for the same kind of bookkeeping).

Why a registry: a task file names a scriptlet (``scriptlet = "launch_chunks"``); the task
parser accepts exactly the names in ``SCRIPTLETS`` and the runner calls the function there,
so a new scriptlet is one function and one line here. A scriptlet must be idempotent: on a
full disk the runner holds the instance and runs it again on a later step. It raises
OSError or ValueError for a failure (the runner records the reason).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.core.atomic import atomic_write_bytes
from engine.intake import manifest

if TYPE_CHECKING:  # the runner passes these; the task parser imports only the names
    from engine.pipeline.instance import InstanceView
    from engine.pipeline.task import ProcessDef
    from engine.store import ProcessInstance, StateDB, Stream

Scriptlet = Callable[["InstanceView", "StateDB", "Stream", "ProcessDef", "ProcessInstance"], None]


def launch_chunks(view: InstanceView, db: StateDB, stream: Stream, pdef: ProcessDef,
                  pi: ProcessInstance) -> None:
    """HalfPipe's launchChunks: one makeEvt substream per RetDef (copied to outputBase)."""
    dlid = view.dlid
    level0 = Path(view.dl.level0)
    view.outdir.mkdir(parents=True, exist_ok=True)
    chunks = []
    for rd in sorted(level0.glob(f"RetDef-{dlid}-*.xml")):
        target = view.outdir / rd.name
        data = rd.read_bytes()
        if not target.exists() or target.read_bytes() != data:
            atomic_write_bytes(target, data)
        db.record_file(target, pdef.name, pi.id, dlid, manifest.md5_file(target))
        chunks.append(rd.name[len(f"RetDef-{dlid}-"):-len(".xml")])
    if not chunks:
        raise ValueError(f"no RetDef-{dlid}-*.xml in {level0}")
    db.set_stream_vars(stream.id, chunks=chunks)


# name in a task file -> the function: the one registration of each scriptlet
SCRIPTLETS: dict[str, Scriptlet] = {"launch_chunks": launch_chunks}
