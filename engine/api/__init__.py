"""The one face of the engine for the console and the CLI listings: read a snapshot, act on
the pipeline, and the data types a front end displays.

Why this package exists: a front end (the Textual console, the CLI's listings) must not
reach into the state database, the lock files or the task file itself; it calls these
functions and shows what they return. Submodules: ``rows`` (the downlinks table's read
model), ``monitor`` (change detection, ``Monitor.poll`` -> ``Snapshot``), ``listings``
(what the CLI prints and the console shows, what the next prune would free), ``actions``
(run, rollback, unlock, halts, operator jobs).

Importing this package is cheap: every name below is imported on first use (PEP 562), so
``from engine.api import DownlinkRow`` does not import the task runner, and the hit types
(NumPy) are imported only when a front end asks for them. The console's first paint must not
import NumPy or h5py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> the module that defines it
_EXPORTS: dict[str, str] = {}
for _module, _names in {
    "engine.api.rows": ("STATES", "DownlinkRow", "DownlinkRows", "downlink_rows", "reason_first"),
    "engine.api.monitor": (
        "ChangeProbe",
        "Monitor",
        "Snapshot",
        "UsageCadence",
        "stream_view",
        "typical_durations",
        "LOCK_RECHECK_S",
    ),
    "engine.api.logsearch": ("LogMatch", "search_logs", "parse_when"),
    "engine.api.listings": (
        "downlinks",
        "rejected",
        "pending",
        "locks",
        "usage",
        "prune_preview",
        "stream_views",
        "stream_history",
        "DownlinkListing",
        "downlink_listing",
        "downlink_note",
        "lock_status",
        "task_groups",
        "EventDir",
        "list_events",
        "summarize_event",
        "compare_events",
        "LogFile",
        "log_files",
        "human_log_lines",
        "last_line",
    ),
    "engine.api.actions": (
        "unlock",
        "scan_incoming",
        "halts",
        "set_halt",
        "clear_halt",
        "engine_env",
        "engine_argv",
        "start_runner",
        "start_job",
        "Job",
        "Progress",
    ),
    "engine.api.alarms": (
        "alarms",
        "acknowledge",
        "acknowledgements",
        "engine_status",
        "EngineStatus",
    ),
    "engine.pipeline.alarms": ("Alarm", "Ack"),
    "engine.pipeline.halts": ("HALT_FLAGS", "HALT_MEANING"),
    "engine.pipeline.rollback": ("rollback", "RollbackResult", "RollbackPlan", "rollback_plan"),
    "engine.core.diskspace": ("human_bytes",),
    "engine.core.errors": ("SkydeckError", "BadInput", "Busy", "EXIT_BUSY", "StateUnavailable"),
    "engine.core.workspace": (
        "Workspace",
        "init_workspace",
        "resolve_root",
        "ASSETS",
        "SCENES",
        "scene_path",
        "scene_names",
    ),
    "engine.pipeline.locks": ("LockInfo",),
    "engine.pipeline.usage": ("UsageReport", "Usage"),
    "engine.pipeline.retention": ("PrunePlan", "AreaTotal"),
    "engine.store.records": ("StreamView", "Stream", "ProcessInstance", "Downlink", "Delivery"),
    "engine.propagate.hits": ("HitSummary", "Comparison", "FaceMap", "Histogram"),
}.items():
    for _name in _names:
        _EXPORTS[_name] = _module

__all__ = [  # the same names as _EXPORTS (a literal, for linters and type checkers)
    'Ack',
    'Alarm',
    'EngineStatus',
    'HALT_MEANING',
    'acknowledge',
    'acknowledgements',
    'alarms',
    'engine_status',
    'ASSETS',
    'AreaTotal',
    'BadInput',
    'Busy',
    'ChangeProbe',
    'EXIT_BUSY',
    'Comparison',
    'Delivery',
    'Downlink',
    'DownlinkListing',
    'DownlinkRow',
    'DownlinkRows',
    'EventDir',
    'FaceMap',
    'HALT_FLAGS',
    'Histogram',
    'HitSummary',
    'Job',
    'LOCK_RECHECK_S',
    'LockInfo',
    'LogMatch',
    'LogFile',
    'Monitor',
    'ProcessInstance',
    'Progress',
    'PrunePlan',
    'RollbackPlan',
    'RollbackResult',
    'SCENES',
    'STATES',
    'SkydeckError',
    'Snapshot',
    'StateUnavailable',
    'Stream',
    'UsageCadence',
    'UsageReport',
    'StreamView',
    'Usage',
    'Workspace',
    'clear_halt',
    'compare_events',
    'downlink_listing',
    'downlink_note',
    'parse_when',
    'search_logs',
    'downlink_rows',
    'downlinks',
    'engine_argv',
    'engine_env',
    'halts',
    'human_bytes',
    'init_workspace',
    'last_line',
    'list_events',
    'lock_status',
    'locks',
    'log_files',
    'human_log_lines',
    'pending',
    'prune_preview',
    'reason_first',
    'rejected',
    'resolve_root',
    'rollback',
    'rollback_plan',
    'scan_incoming',
    'scene_names',
    'scene_path',
    'set_halt',
    'start_job',
    'start_runner',
    'stream_view',
    'stream_views',
    'stream_history',
    'summarize_event',
    'task_groups',
    'typical_durations',
    'unlock',
    'usage',
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # what the names are, for type checkers (never executed)
    from engine.api.actions import (
        Job,
        Progress,
        clear_halt,
        engine_argv,
        engine_env,
        halts,
        scan_incoming,
        set_halt,
        start_job,
        start_runner,
        unlock,
    )
    from engine.api.alarms import (
        EngineStatus,
        acknowledge,
        acknowledgements,
        alarms,
        engine_status,
    )
    from engine.api.listings import (
        DownlinkListing,
        EventDir,
        LogFile,
        compare_events,
        downlink_listing,
        downlinks,
        human_log_lines,
        last_line,
        list_events,
        lock_status,
        locks,
        log_files,
        pending,
        prune_preview,
        rejected,
        stream_history,
        stream_views,
        summarize_event,
        task_groups,
        usage,
    )
    from engine.api.logsearch import LogMatch, parse_when, search_logs
    from engine.api.monitor import (
        LOCK_RECHECK_S,
        ChangeProbe,
        Monitor,
        Snapshot,
        UsageCadence,
        stream_view,
        typical_durations,
    )
    from engine.api.rows import STATES, DownlinkRow, DownlinkRows, downlink_rows, reason_first
    from engine.core.diskspace import human_bytes
    from engine.core.errors import EXIT_BUSY, BadInput, Busy, SkydeckError, StateUnavailable
    from engine.core.workspace import (
        ASSETS,
        SCENES,
        Workspace,
        init_workspace,
        resolve_root,
        scene_names,
        scene_path,
    )
    from engine.pipeline.alarms import Ack, Alarm
    from engine.pipeline.halts import HALT_FLAGS, HALT_MEANING
    from engine.pipeline.locks import LockInfo
    from engine.pipeline.retention import AreaTotal, PrunePlan
    from engine.pipeline.rollback import RollbackPlan, RollbackResult, rollback, rollback_plan
    from engine.pipeline.usage import Usage, UsageReport
    from engine.propagate.hits import Comparison, FaceMap, Histogram, HitSummary
    from engine.store.records import Delivery, Downlink, ProcessInstance, Stream, StreamView

assert sorted(__all__) == sorted(_EXPORTS), "engine.api: __all__ and _EXPORTS disagree"
