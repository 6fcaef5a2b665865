"""Task files: a Pipeline-II task (processes, dependencies, substreams) as TOML data.

The DAG lives in ``assets/tasks/<name>.toml`` (see halfpipe.toml for every field) so a
site can add, drop or reorder processes, point a process at another command, or give tests
a task of simple real commands, without touching engine code. TOML is parsed, never eval'd;
commands are argv lists whose ``{placeholders}`` are filled per instance (no shell).

A task file is input from outside: checked here, where it enters, so that a bad one is one
BadInput line (exit 2) naming the file and the key before anything runs. Every path it
names stays in its area (``check_lock_template``, ``check_output_template``: a lock inside
the lock area, an output inside the workspace's output areas, whatever values fill it); an
``env`` key is a shell variable name and a process name is a file name, so that neither can
become shell text in a batch script nor a path out of the log area.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from engine.core.errors import BadInput
from engine.core.workspace import ASSETS, Workspace, load_toml
from engine.pipeline.scriptlets import SCRIPTLETS

TASKS_DIR = ASSETS / "tasks"
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# placeholders a lock name may use: values that never hold a '/' (ids, keys, names)
LOCK_PLACEHOLDERS = ("dlid", "run", "run10", "runhex", "chunk", "key", "process")
# placeholders an output may begin with: each is a path inside an output area
OUTPUT_ROOTS = ("outdir", "chunk_out", "events_dir", "stage")
CONDITIONS = ("gensteps", "always")
_FIELDS = {
    "name",
    "after",
    "foreach",
    "scriptlet",
    "command",
    "mpi",
    "outputs",
    "lock",
    "stream_lock",
    "removes_stream_lock",
    "when",
    "halt",
    "retries",
    "env",
    "reads",
    "launcher",
    "batch",
    "gpus",
    "wrapper",
}


@dataclass(frozen=True)
class ProcessDef:
    name: str
    after: tuple[str, ...] = ()
    foreach: str | None = None
    scriptlet: str | None = None
    command: tuple[str, ...] = ()
    mpi: bool = False
    outputs: tuple[str, ...] = ()
    lock: str | None = None
    stream_lock: str | None = None
    removes_stream_lock: str | None = None
    when: str | None = None
    halt: str | None = None
    retries: int = 0
    env: dict[str, str] = field(default_factory=dict)
    reads: tuple[str, ...] = ()  # upstream processes whose outputs the job reads
    launcher: str | None = None  # "local": stays on this host under a batch launcher
    batch: tuple[str, ...] = ()  # extra sbatch options of this process's jobs
    gpus: int = 0  # GPUs a batch job of this process asks for (--gpus)
    wrapper: tuple[str, ...] = ()  # put before the command, e.g. singularity exec IMAGE


@dataclass(frozen=True)
class Task:
    name: str
    version: str
    processes: tuple[ProcessDef, ...]
    path: Path

    def process(self, name: str) -> ProcessDef:
        for p in self.processes:
            if p.name == name:
                return p
        raise KeyError(name)

    def downstream(self, names: set[str]) -> set[str]:
        """``names`` and every process that depends on them, transitively (for rollback)."""
        out = set(names)
        changed = True
        while changed:
            changed = False
            for p in self.processes:
                if p.name not in out and out.intersection(p.after):
                    out.add(p.name)
                    changed = True
        return out


def _check_template(text: str, where: str, path: Path) -> None:
    try:
        list(string.Formatter().parse(text))
    except ValueError as err:
        raise BadInput(f"{where}: bad placeholder in {text!r}: {err}", path) from None


def check_lock_template(text: str, where: str, path: Path) -> None:
    """A lock name is a relative path in the lock area (no '/', no '..'), filled only with
    placeholders that hold no '/': else BadInput naming the file and key."""
    _check_template(text, where, path)
    fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    bad = [f for f in fields if f not in LOCK_PLACEHOLDERS]
    if bad or "/" in text or "\\" in text or text in (".", "..") or _CONTROL.search(text):
        raise BadInput(
            f"{where} = {text!r} leaves the lock area (a lock is a file name in lock/; "
            f"placeholders: {', '.join(LOCK_PLACEHOLDERS)})",
            path,
        )


def check_output_template(text: str, where: str, path: Path) -> None:
    """An output begins with a placeholder of an output area ({outdir}, {chunk_out},
    {events_dir}, {stage}) and never climbs out of it ('..'): else BadInput naming the file
    and key. (The rendered path is checked again when the job runs: ``instance.py``.)"""
    _check_template(text, where, path)
    first = next(iter(string.Formatter().parse(text)), None)
    starts = first is not None and first[0] == "" and first[1] in OUTPUT_ROOTS
    if not starts or ".." in PurePosixPath(text).parts or _CONTROL.search(text):
        raise BadInput(
            f"{where} = {text!r} leaves the output areas (an output begins with "
            f"{', '.join('{' + r + '}' for r in OUTPUT_ROOTS)} and has no '..')",
            path,
        )


def _check_env(raw: object, where: str, path: Path) -> dict[str, str]:
    """``env``: a table of variable names (``[A-Za-z_][A-Za-z0-9_]*``) to text."""
    if not isinstance(raw, dict):
        raise BadInput(f"{where}: env must be a table of NAME = \"value\"", path)
    for k, v in raw.items():
        if not ENV_KEY.match(k):
            raise BadInput(
                f"{where}: env key {k!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)", path
            )
        if not isinstance(v, str | int | float) or isinstance(v, bool) or "\0" in str(v):
            raise BadInput(f"{where}: env {k} must be text, got {v!r}", path)
        _check_template(str(v), f"{where}: env {k}", path)
    return {k: str(v) for k, v in raw.items()}


def parse_task(path: Path) -> Task:
    data = load_toml(path)
    head = data.get("task", {})
    procs_raw = data.get("process", [])
    if not isinstance(procs_raw, list) or not procs_raw:
        raise BadInput("task file defines no [[process]]", path)
    procs: list[ProcessDef] = []
    seen: set[str] = set()
    for i, raw in enumerate(procs_raw):
        where = f"process #{i + 1}"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise BadInput(f"{where} has no name", path)
        name = raw["name"]
        where = f"process {name!r}"
        if not name.strip() or "/" in name or name.startswith(".") or _CONTROL.search(name):
            raise BadInput(
                f"{where}: a process name is a file name (no '/', no leading '.', no "
                "control characters)",
                path,
            )
        unknown = set(raw) - _FIELDS
        if unknown:
            raise BadInput(f"{where}: unknown field(s) {', '.join(sorted(unknown))}", path)
        if name in seen:
            raise BadInput(f"{where} defined twice", path)
        after = tuple(raw.get("after", ()))
        for a in after:
            if a not in seen:
                raise BadInput(f"{where}: after {a!r}, which is not defined before it", path)
        reads = raw.get("reads", [])
        if not isinstance(reads, list) or not all(isinstance(r, str) and r in seen for r in reads):
            raise BadInput(f"{where}: reads must list processes defined before it", path)
        scriptlet, command = raw.get("scriptlet"), raw.get("command", [])
        if (scriptlet is None) == (not command):
            raise BadInput(f"{where}: give exactly one of scriptlet or command", path)
        if scriptlet is not None and scriptlet not in SCRIPTLETS:
            raise BadInput(f"{where}: unknown scriptlet {scriptlet!r}", path)
        if not isinstance(command, list) or not all(isinstance(c, str) for c in command):
            raise BadInput(f"{where}: command must be a list of strings", path)
        when = raw.get("when")
        if when is not None and when not in CONDITIONS:
            raise BadInput(
                f"{where}: unknown condition {when!r} (one of {', '.join(CONDITIONS)})", path
            )
        for text in command:
            _check_template(text, where, path)
        outputs = raw.get("outputs", [])
        if not isinstance(outputs, list) or not all(isinstance(o, str) for o in outputs):
            raise BadInput(f"{where}: outputs must be a list of strings", path)
        for text in outputs:
            check_output_template(text, f"{where}: outputs", path)
        for key in ("lock", "stream_lock", "removes_stream_lock"):
            text = raw.get(key)
            if text is not None and (not isinstance(text, str) or not text):
                raise BadInput(f"{where}: {key} must be a lock name", path)
            if text:
                check_lock_template(text, f"{where}: {key}", path)
        env = _check_env(raw.get("env", {}), where, path)
        halt = raw.get("halt")
        if halt is not None and (
            not isinstance(halt, str)
            or not halt.strip()
            or "/" in halt
            or halt.startswith(".")
            or _CONTROL.search(halt)
        ):
            raise BadInput(
                f"{where}: halt = {halt!r} is no flag name (a file name in config/ or "
                "downlinks/<DLID>/)",
                path,
            )
        launcher = raw.get("launcher")
        if launcher is not None and launcher != "local":
            raise BadInput(
                f"{where}: launcher must be \"local\" (the pipeline's launcher is "
                f"the default), got {launcher!r}",
                path,
            )
        batch = raw.get("batch", [])
        if not isinstance(batch, list) or not all(isinstance(b, str) for b in batch):
            raise BadInput(f"{where}: batch must be a list of strings (sbatch options)", path)
        gpus = raw.get("gpus", 0)
        if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= 64:
            raise BadInput(f"{where}: gpus must be an integer within 0..64", path)
        wrapper = raw.get("wrapper", [])
        if not isinstance(wrapper, list) or not all(isinstance(w, str) and w for w in wrapper):
            raise BadInput(
                f"{where}: wrapper must be a list of non-empty strings (a command "
                "such as [\"singularity\", \"exec\", \"IMAGE\"])",
                path,
            )
        for text in wrapper:
            _check_template(text, where, path)
        retries = raw.get("retries", 0)
        if not isinstance(retries, int) or retries < 0:
            raise BadInput(f"{where}: retries must be a non-negative integer", path)
        procs.append(
            ProcessDef(
                name=name,
                after=after,
                foreach=raw.get("foreach"),
                scriptlet=scriptlet,
                command=tuple(command),
                mpi=bool(raw.get("mpi", False)),
                outputs=tuple(outputs),
                lock=raw.get("lock"),
                stream_lock=raw.get("stream_lock"),
                removes_stream_lock=raw.get("removes_stream_lock"),
                when=when,
                halt=halt,
                retries=retries,
                env=env,
                reads=tuple(reads),
                launcher=launcher,
                batch=tuple(batch),
                gpus=gpus,
                wrapper=tuple(wrapper),
            )
        )
        seen.add(name)
    return Task(
        name=str(head.get("name", path.stem)),
        version=str(head.get("version", "1")),
        processes=tuple(procs),
        path=path,
    )


def task_path(ws: Workspace, name: str | None = None) -> Path:
    name = name or ws.settings.pipeline.task
    p = Path(name).expanduser()
    if p.suffix == ".toml":
        return p if p.is_absolute() else ws.root / p
    return TASKS_DIR / f"{name}.toml"


def load_task(ws: Workspace, name: str | None = None) -> Task:
    return parse_task(task_path(ws, name))
