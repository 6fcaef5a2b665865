"""What one process instance sees: its template values, its rendered command, output, lock
and log paths, and the environment its job runs with (Pipeline-II's per-instance variables).

Why a module of its own: the runner starts jobs from these, rollback checks a re-run's
inputs with the same output paths, and taking over a dead owner's stream (``resume.py``)
finds a job by the same log path, so all three compute them in one place and none needs a
runner (or a launcher) to ask where an instance writes. Task files name values as
``{placeholders}`` (docs/pipeline.md); rendering is ``str.format`` over plain strings, so a
value never becomes code or shell text.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.core.ids import run_hex, run_name
from engine.core.workspace import Workspace, scene_path
from engine.intake.deliveries import GENSTEPS_NAME
from engine.pipeline.task import ProcessDef, Task
from engine.store import Downlink, ProcessInstance


def mpiexec_path() -> str:
    """The venv's mpiexec (mpich wheel) first, then PATH."""
    local = Path(sys.executable).with_name("mpiexec")
    return str(local) if local.exists() else (shutil.which("mpiexec") or "mpiexec")


def inside(path: Path, areas: tuple[Path, ...], what: str) -> Path:
    """``path`` when it lies in one of ``areas`` (lexically, '..' resolved: nothing is
    followed), else ValueError naming ``what``: a task file's or a job's path never leaves
    its area, whatever values filled it."""
    norm = Path(os.path.normpath(path))
    for area in areas:
        a = Path(os.path.normpath(area))
        if norm != a and norm.is_relative_to(a):
            return path
    raise ValueError(f"{what} {str(path)!r} is outside {' or '.join(str(a) for a in areas)}")


def render(text: str, values: dict[str, str]) -> str:
    """A task file's template filled with an instance's values; ValueError names an unknown
    placeholder."""
    try:
        return text.format(**values)
    except (KeyError, IndexError) as err:
        raise ValueError(f"unknown placeholder {err} in {text!r}") from None


@dataclass
class Running:
    """An instance whose job this runner started or adopted, until its exit is recorded."""

    pi: ProcessInstance
    pdef: ProcessDef
    lock: Path | None
    summary: Path
    values: dict[str, str]


class InstanceView:
    """The instances of one downlink's stream as their jobs see them."""

    def __init__(self, ws: Workspace, dl: Downlink, task: Task) -> None:
        self.ws, self.dl, self.task = ws, dl, task

    @property
    def dlid(self) -> str:
        return self.dl.dlid

    @property
    def outdir(self) -> Path:
        """HalfPipe's outputBase/<DLID>: where chunk outputs and RetDef copies go."""
        return self.ws.downlinks / self.dlid

    def values(self, pdef: ProcessDef, key: str) -> dict[str, str]:
        """The ``{placeholders}`` of instance ``key`` of ``pdef``."""
        scene = self.dl.scene or "default"
        build = self.ws.settings.build
        v = {
            "python": sys.executable,
            "workspace": str(self.ws.root),
            "dlid": self.dlid,
            "level0": self.dl.level0,
            "outdir": str(self.outdir),
            "stage": str(self.ws.stage),
            "maxEvents": str(self.ws.settings.halfpipe.maxEvents),
            "batch": str(build.batch),
            "timestamp_path": build.timestamp_path,
            "data_path": build.data_path,
            "smalldata_path": build.smalldata_path,
            "scene": self.dl.scene or "",
            "events_dir": str(self.ws.events / scene / self.dlid),
            "scene_path": str(scene_path(scene)),
            "gensteps": str(Path(self.dl.level0) / GENSTEPS_NAME),
            "key": key,
            "process": pdef.name,
        }
        if pdef.foreach == "chunks" and key:
            v |= {
                "chunk": key,
                "retdef": str(self.outdir / f"RetDef-{self.dlid}-{key}.xml"),
                "chunk_out": str(self.outdir / f"{self.dlid}-{key}.h5"),
            }
        if pdef.foreach == "runs" and key:
            v |= {"run": key, "run10": run_name(int(key)), "runhex": run_hex(int(key))}
        return v

    @property
    def output_areas(self) -> tuple[Path, ...]:
        """Where outputs may be (and be recorded, so rollback and retention may remove them):
        downlinks/, stage/, events/ (wherever skydeck.toml puts them)."""
        return (self.ws.downlinks, self.ws.stage, self.ws.events)

    def output_path(self, pdef: ProcessDef, key: str) -> Path:
        """Where the instance ``key`` of ``pdef`` writes its primary output (its first
        ``outputs`` entry rendered with the instance's variables)."""
        return self.output(pdef.outputs[0], self.values(pdef, key))

    def output(self, template: str, values: dict[str, str]) -> Path:
        """An output the task file names, rendered; ValueError outside the output areas."""
        return inside(Path(render(template, values)), self.output_areas, "output")

    def lock_path(self, template: str | None, values: dict[str, str]) -> Path | None:
        """A lock the task file names (``lock``, ``stream_lock``...), in the lock area;
        ValueError for one that would leave it."""
        if not template:
            return None
        return inside(self.ws.lock / render(template, values), (self.ws.lock,), "lock")

    def log_paths(self, pdef: ProcessDef, pi: ProcessInstance) -> tuple[Path, Path]:
        """The instance's log and its $PIPELINE_SUMMARY file (ValueError for a substream key,
        a value a job set, that would put them outside the downlink's log directory)."""
        label = f"{pdef.name}-{pi.key}" if pi.key else pdef.name
        logs = self.ws.instance_logs(self.dlid)
        if "/" in label or "\0" in label:
            raise ValueError(f"substream key {pi.key!r} is no file name")
        return logs / f"{label}-e{pi.execution}.log", logs / f".{label}-e{pi.execution}.summary"

    def job_name(self, pdef: ProcessDef, pi: ProcessInstance) -> str:
        """``<task>-<DLID>-<process>[-<key>]``: what a batch system's queue shows."""
        return "-".join(p for p in (self.task.name, self.dlid, pdef.name, pi.key) if p)

    def command(self, pdef: ProcessDef, values: dict[str, str]) -> tuple[list[str], int]:
        """The job's argv (wrapper inside mpiexec's ranks, around the command) and its MPI
        ranks; ValueError for an unknown placeholder."""
        argv = [render(a, values) for a in pdef.command]
        if pdef.wrapper:  # a container: inside mpiexec's ranks, around the command
            argv = [*(render(w, values) for w in pdef.wrapper), *argv]
        ranks = self.ws.settings.build.ranks
        if pdef.mpi and ranks > 1:  # under Slurm, Hydra's mpiexec starts the ranks there
            return [mpiexec_path(), "-n", str(ranks), *argv], ranks
        return argv, 1

    def env(
        self, pdef: ProcessDef, pi: ProcessInstance, values: dict[str, str], summary: Path
    ) -> dict[str, str]:
        """HalfPipe's and Pipeline-II's variables of the job, then the task file's own."""
        env = {
            "SKYDECK_WORKSPACE": str(self.ws.root),
            "HALFPIPE_DOWNLINKID": self.dlid,
            "HALFPIPE_OUTPUTBASE": str(self.ws.downlinks),
            "HALFPIPE_MAXEVENTS": values["maxEvents"],
            "HALFPIPE_NUMCHUNKS": str(self.dl.chunks),
            "PIPELINE_TASK": self.task.name,
            "PIPELINE_PROCESS": pdef.name,
            "PIPELINE_PROCESSINSTANCE": str(pi.id),
            "PIPELINE_STREAM": pi.key or self.dlid,
            "PIPELINE_SUMMARY": str(summary),
            "PYTHONPATH": _pythonpath(),
        }
        if "chunk" in values:
            env["HALFPIPE_CHUNKID"] = values["chunk"]
        if "runhex" in values:
            env["HALFPIPE_RUNSTART"] = values["runhex"]
        env |= {k: render(v, values) for k, v in pdef.env.items()}
        return env


def _pythonpath() -> str:
    """Jobs import this very engine, also when it runs from a source tree."""
    root = str(Path(__file__).resolve().parents[2])
    cur = os.environ.get("PYTHONPATH", "")
    return root if not cur else f"{root}{os.pathsep}{cur}"
