"""Typed settings: skydeck.toml parsed once into frozen dataclasses, one per section.

Before this module every consumer asked ``ws.setting(section, key, default)`` and repeated
the default at its call; a typo such as ``[pipline]`` was caught only by a schema that lived
apart from the defaults. Here each section is a dataclass whose fields carry the default and
the rule (type and range) together, so the defaults live in one place and the check and the
typed value cannot disagree. ``assets/skydeck.toml`` (which ``init`` copies and whose
comments document the keys) must hold the same values; tests/core/test_settings.py says so.

``parse_settings(doc, path)`` turns a parsed TOML document into ``Settings`` or raises
BadInput with one line naming the file, the key and what is expected. It reads no file:
``engine.core.workspace`` reads the TOML (bounded in size and nesting) and calls it.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import posixpath
import re
import tomllib
from dataclasses import dataclass, field, fields
from os import PathLike
from typing import Any, Literal

from engine.core.dburl import parse_state_url
from engine.core.errors import BadInput

INT64_MAX = 2**63 - 1
DAY_S = 86400.0
MAX_DAYS = 100 * 365.0  # a retention age beyond a century is a typo
POLLING_TRUE = ("true", "yes", "1")
POLLING_FALSE = ("false", "no", "0")
MAX_BATCH = (
    1 << 20
)  # engine.builder.limits.MAX_BATCH (not imported: engine/core imports no other engine package)

Polling = bool | Literal["auto"]


@dataclass(frozen=True)
class Rule:
    """What a key accepts: ``kind`` is int, float, bool, polling, text, opttext (may be
    empty), command (a command line or ""), path, area (a workspace area: relative to the
    workspace without '..', or absolute), optpath (a path or ``""`` for off), h5path or
    stateurl;
    ``lo``/``hi`` bound the numbers."""

    kind: str
    lo: float = 0
    hi: float = math.inf


def _key(default: Any, kind: str, lo: float = 0, hi: float = math.inf) -> Any:
    return field(default=default, metadata={"rule": Rule(kind, lo, hi)})


@dataclass(frozen=True)
class Paths:
    """[paths]: workspace areas, relative to the workspace root unless absolute."""

    incoming_fcopy: str = _key("incoming/fcopy", "area")
    incoming_level0: str = _key("incoming/level0", "area")
    rejected: str = _key("incoming/rejected", "area")
    downlinks: str = _key("downlinks", "area")
    lock: str = _key("lock", "area")
    stage: str = _key("stage", "area")
    events: str = _key("events", "area")
    logs: str = _key("logs", "area")
    state_db: str = _key("state.db", "area")
    flags: str = _key("config", "area")


@dataclass(frozen=True)
class Disk:
    """[disk]: the free space work must leave."""

    reserve_bytes: int = _key(1_000_000_000, "int", 0, INT64_MAX)


@dataclass(frozen=True)
class Build:
    """[build]: makeEvt's dataset paths, batch size and MPI ranks."""

    timestamp_path: str = _key("/timestamp", "h5path")
    data_path: str = _key("/data", "h5path")
    smalldata_path: str = _key("/smalldata", "h5path")
    batch: int = _key(64, "int", 1, MAX_BATCH)
    ranks: int = _key(1, "int", 1, 4096)


@dataclass(frozen=True)
class Halfpipe:
    """[halfpipe]: HalfPipe's own knobs."""

    maxEvents: int = _key(125000, "int", 1, 1 << 40)  # noqa: N815 (HalfPipe's name)


@dataclass(frozen=True)
class Pipeline:
    """[pipeline]: the task file, the launcher and how much runs at once."""

    task: str = _key("halfpipe", "text")
    max_jobs: int = _key(2, "int", 1, 1024)
    max_streams: int = _key(4, "int", 1, 100_000)
    launcher: str = _key("local", "text")


@dataclass(frozen=True)
class Slurm:
    """[slurm]: batch options of every job under ``[pipeline] launcher = "slurm"`` (empty:
    the cluster's default)."""

    partition: str = _key("", "opttext")
    account: str = _key("", "opttext")
    qos: str = _key("", "opttext")
    time_limit: str = _key("", "opttext")  # sbatch --time: minutes, or [D-]HH:MM:SS
    extra_args: str = _key("", "opttext")  # more sbatch options, split as a shell would


@dataclass(frozen=True)
class Watch:
    """[watch]: the daemon's observer, scan cadence, quiet time and back-off."""

    polling: Polling = _key("auto", "polling")
    poll_interval_s: float = _key(10.0, "float", 0.01, DAY_S)
    scan_interval_s: float = _key(30.0, "float", 0.01, DAY_S)
    quiet_s: float = _key(2.0, "float", 0.0, DAY_S)
    incomplete_timeout_s: float = _key(3600.0, "float", 0.0, 365 * DAY_S)
    verify_threads: int = _key(2, "int", 1, 64)
    pending_recheck_max_s: float = _key(30.0, "float", 0.01, DAY_S)
    error_backoff_s: float = _key(1.0, "float", 0.01, DAY_S)
    error_backoff_max_s: float = _key(60.0, "float", 0.01, DAY_S)


@dataclass(frozen=True)
class Stage:
    """[stage]: the usage scan."""

    scan_workers: int = _key(0, "int", 0, 1024)


@dataclass(frozen=True)
class Metrics:
    """[metrics]: the Prometheus textfile the daemon writes, and how often
    (engine/daemon/exporter.py)."""

    textfile: str = _key("metrics/skydeck.prom", "optpath")
    interval_s: float = _key(15.0, "float", 0.1, DAY_S)
    usage_interval_s: float = _key(300.0, "float", 1.0, 7 * DAY_S)


@dataclass(frozen=True)
class State:
    """[state]: where the state database is. "" = the SQLite file ``[paths] state_db``; a
    ``postgresql://`` URL = a PostgreSQL server shared by several hosts
    (``SKYDECK_STATE_URL`` overrides it; docs/design.md, "State on PostgreSQL").
    ``wait_s``: how long a command waits for an unreachable PostgreSQL server (a restart,
    a failover) before it gives up with exit 75; the daemon and ``run`` wait until it is
    back, ``health`` does not wait."""

    url: str = _key("", "stateurl")
    wait_s: float = _key(30.0, "float", 0.0, DAY_S)


@dataclass(frozen=True)
class Retention:
    """[retention]: what ``skydeck-engine prune`` and the daemon remove, per area, by age
    (days; 0 keeps that area forever) and only once finished (engine/pipeline/retention.py).
    ``interval_s``: how often the daemon prunes (0: never; ``prune`` still works)."""

    interval_s: float = _key(3600.0, "float", 0.0, 7 * DAY_S)
    logs_days: float = _key(30.0, "float", 0.0, MAX_DAYS)
    events_days: float = _key(90.0, "float", 0.0, MAX_DAYS)
    fcopy_days: float = _key(7.0, "float", 0.0, MAX_DAYS)
    orphan_chunks_days: float = _key(14.0, "float", 0.0, MAX_DAYS)
    rejected_days: float = _key(0.0, "float", 0.0, MAX_DAYS)
    # raw level-0 deliveries: off by default (they are the sources a rollback rebuilds from)
    level0_days: float = _key(0.0, "float", 0.0, MAX_DAYS)


@dataclass(frozen=True)
class Alerts:
    """[alerts]: a command run once per alert (a stream FAILED or STUCK, a delivery
    rejected, launching paused for disk, a dead host's work taken over, a halt flag set)
    with one JSON object on its standard input (engine/core/alerts.py). ``command`` is
    split as a shell would (shlex) and run without a shell; "" = no alerts."""

    command: str = _key("", "command")
    timeout_s: float = _key(10.0, "float", 0.1, 3600.0)  # a hook running longer is killed
    dedup_s: float = _key(86400.0, "float", 0.0, 365 * DAY_S)  # the same alert once per this
    max_per_minute: int = _key(20, "int", 1, 10_000)  # more are dropped (one line says so)


@dataclass(frozen=True)
class Settings:
    """The effective settings of a workspace: every section, defaults filled in."""

    paths: Paths = field(default_factory=Paths)
    disk: Disk = field(default_factory=Disk)
    build: Build = field(default_factory=Build)
    halfpipe: Halfpipe = field(default_factory=Halfpipe)
    pipeline: Pipeline = field(default_factory=Pipeline)
    slurm: Slurm = field(default_factory=Slurm)
    watch: Watch = field(default_factory=Watch)
    stage: Stage = field(default_factory=Stage)
    metrics: Metrics = field(default_factory=Metrics)
    state: State = field(default_factory=State)
    retention: Retention = field(default_factory=Retention)
    alerts: Alerts = field(default_factory=Alerts)

    def replace(self, section: str, **values: Any) -> Settings:
        """A copy with keys of one section replaced (a command-line override such as
        ``watch --interval``); the values are checked as the file's are."""
        current = getattr(self, section)
        rules = rules_of(type(current))
        for key, value in values.items():
            if key not in rules:
                raise BadInput(f"unknown key {section}.{key}")
            values[key] = _checked(None, f"{section}.{key}", rules[key], value)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **values)})

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """{section: {key: value}} in declaration order (TOML's and JSON's shape)."""
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in fields(Settings)}  # type: ignore[misc]


def toml_value(v: Any) -> str:
    """A value as TOML writes it (strings as basic strings: JSON's escapes, plus DEL, a
    control character TOML refuses and JSON leaves as it is)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    return repr(v)


def _value_end(line: str) -> int:
    """Where a ``key = value`` line's value ends (an inline comment may follow): the first
    ``#`` before which the line is a whole TOML assignment, else the end of the line."""
    for m in re.finditer("#", line):
        try:
            tomllib.loads(line[: m.start()])
        except tomllib.TOMLDecodeError:
            continue
        return len(line[: m.start()].rstrip())
    return len(line.rstrip())


def set_keys(text: str, section: str, values: dict[str, Any]) -> str:
    """skydeck.toml's text with keys of ``[section]`` set to ``values``: each key's line is
    rewritten in place (its comments kept), a key the section lacks is added under its
    header, a section the file lacks is appended. The caller checks the values
    (``Settings.replace``) and parses the result."""
    lines = text.splitlines(keepends=True)
    header = re.compile(r"^\s*\[\s*([A-Za-z0-9_-]+)\s*\]")
    start = end = None
    for i, line in enumerate(lines):
        m = header.match(line)
        if m and start is not None and end is None:
            end = i
        if m and m.group(1) == section:
            start = i
    if start is None:
        body = "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
        sep = "" if not text or text.endswith("\n") else "\n"
        return f"{text}{sep}\n[{section}]\n{body}"
    end = len(lines) if end is None else end
    todo = dict(values)
    for i in range(start + 1, end):
        m = re.match(r"^(\s*)([A-Za-z0-9_]+)(\s*)=", lines[i])
        if m and m.group(2) in todo:
            line = lines[i]
            cut = _value_end(line.rstrip("\n"))
            tail = line.rstrip("\n")[cut:]
            newline = "\n" if line.endswith("\n") else ""
            lines[i] = (
                f"{m.group(1)}{m.group(2)}{m.group(3)}= "
                f"{toml_value(todo.pop(m.group(2)))}{tail}{newline}"
            )
    added = "".join(f"{k} = {toml_value(v)}\n" for k, v in todo.items())
    lines.insert(start + 1, added)
    return "".join(lines)


def rules_of(section: type) -> dict[str, Rule]:
    """key -> Rule of a section dataclass."""
    return {f.name: f.metadata["rule"] for f in fields(section)}


def _unknown(what: str, name: str, known: list[str], shape: str = "{}") -> str:
    """ "unknown WHAT (known: ...)", with the close name when ``name`` looks like a typo."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
    hint = f"; did you mean {shape.format(close[0])}?" if close else ""
    return f"unknown {what} (known: {', '.join(sorted(known))}){hint}"


def _checked(path: str | PathLike[str] | None, where: str, rule: Rule, v: Any) -> Any:
    """``v`` as the key's typed value, or BadInput naming ``where`` and what it expects."""
    kind = rule.kind
    if kind in ("int", "float"):
        ok_type = isinstance(v, int) if kind == "int" else isinstance(v, int | float)
        if isinstance(v, bool) or not ok_type:
            raise BadInput(
                f"{where} must be {'an integer' if kind == 'int' else 'a number'}, got {v!r}", path
            )
        if (isinstance(v, float) and not math.isfinite(v)) or not rule.lo <= v <= rule.hi:
            raise BadInput(f"{where} = {v!r} is outside {rule.lo:g}..{rule.hi:g}", path)
        return int(v) if kind == "int" else float(v)
    if kind == "polling":
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in ("auto", *POLLING_TRUE, *POLLING_FALSE):
            low = v.lower()
            return "auto" if low == "auto" else low in POLLING_TRUE
        raise BadInput(f"{where} must be auto, true or false, got {v!r}", path)
    if kind == "bool":
        if not isinstance(v, bool):
            raise BadInput(f"{where} must be true or false, got {v!r}", path)
        return v
    if kind == "optpath":
        if not isinstance(v, str) or "\0" in v:
            raise BadInput(f"{where} must be a path, or \"\" for off, got {v!r}", path)
        return v
    if kind == "stateurl":  # "" (SQLite) or a postgresql:// URL
        if not isinstance(v, str):
            raise BadInput(
                f"{where} must be a postgresql:// URL, or \"\" for the SQLite file, got {v!r}", path
            )
        if v:
            parse_state_url(v, path)
        return v
    if kind == "command":  # "" (off) or a command line split as a shell would, no shell
        if not isinstance(v, str) or "\0" in v or "\n" in v:
            raise BadInput(f"{where} must be a command line on one line, got {v!r}", path)
        if v.strip():
            import shlex

            try:
                shlex.split(v)
            except ValueError as err:
                raise BadInput(f"{where} = {v!r} cannot be split into words: {err}", path) from None
        return v
    if kind == "opttext":  # may be empty (the cluster's default)
        if not isinstance(v, str) or "\0" in v or "\n" in v:
            raise BadInput(f"{where} must be text, got {v!r}", path)
        return v
    # path, h5path, text
    if not isinstance(v, str) or not v or "\0" in v:
        raise BadInput(f"{where} must be non-empty text, got {v!r}", path)
    if kind == "area" and not v.startswith("/") and ".." in v.replace("\\", "/").split("/"):
        raise BadInput(
            f"{where} = {v!r} climbs out of the workspace ('..'); an area elsewhere is given "
            "as an absolute path",
            path,
        )
    if kind == "h5path" and not v.startswith("/"):
        raise BadInput(f"{where} must be an HDF5 path starting with '/', got {v!r}", path)
    return v


def parse_settings(doc: dict[str, Any], path: str | PathLike[str] | None = None) -> Settings:
    """A parsed skydeck.toml as Settings (defaults for what it leaves out); BadInput naming
    ``path``, the section or key and what is expected for anything unknown or out of range."""
    known = list(SECTIONS)
    out: dict[str, Any] = {}
    for section, table in doc.items():
        if section not in SECTIONS:
            raise BadInput(_unknown(f"section [{section}]", section, known, "[{}]"), path)
        if not isinstance(table, dict):
            raise BadInput(f"{section} must be a [{section}] table, got {table!r}", path)
        rules = rules_of(SECTIONS[section])
        values: dict[str, Any] = {}
        for key, v in table.items():
            if key not in rules:
                raise BadInput(_unknown(f"key {section}.{key}", key, list(rules)), path)
            values[key] = _checked(path, f"{section}.{key}", rules[key], v)
        out[section] = SECTIONS[section](**values)
    settings = Settings(**out)
    _check_textfile(settings, path)
    return settings


def _check_textfile(s: Settings, path: str | PathLike[str] | None) -> None:
    """``[metrics] textfile`` is replaced wholesale every interval: relative to the workspace
    it never climbs out ('..') nor lands on the state database or in another area (a
    textfile ``state.db`` would replace the state with metrics)."""
    tf = s.metrics.textfile
    if not tf or tf.startswith("/"):
        return
    if ".." in tf.split("/"):
        raise BadInput(
            f"metrics.textfile = {tf!r} climbs out of the workspace ('..'); give an absolute "
            "path to write it elsewhere",
            path,
        )
    norm = posixpath.normpath(tf)
    db = posixpath.normpath(s.paths.state_db)
    if norm in (db, f"{db}-wal", f"{db}-shm", f"{db}-journal"):
        raise BadInput(f"metrics.textfile = {tf!r} is the state database ([paths] state_db)", path)
    for area, value in vars(s.paths).items():
        a = posixpath.normpath(value)
        if area != "state_db" and (norm == a or norm.startswith(a + "/")):
            raise BadInput(f"metrics.textfile = {tf!r} is inside [paths] {area} ({value})", path)
