"""The launcher registry: ``[pipeline] launcher`` names a class here, and nothing else in the
engine names a launcher.

Why a registry (as Prefect's worker ``type`` registry): the runner, the daemon, adoption and
retention ask a launcher what they need (its name, whether its jobs outlive the runner, the
files its jobs write beside their logs, its options' section of skydeck.toml) instead of
branching on ``"slurm"``. A new launcher (HTCondor, Kubernetes, a site's own) is one new
file in this package implementing ``base.Launcher``, one line in ``LAUNCHERS`` below, and,
when it takes options, one section in ``engine/core/settings.py`` and the default config.
"""

from __future__ import annotations

from engine.core.errors import BadInput
from engine.core.settings import Settings
from engine.pipeline.launchers.base import JobHandle, JobResult, JobSpec, Launcher, Unavailable
from engine.pipeline.launchers.local import LocalLauncher, kill_orphan
from engine.pipeline.launchers.slurm import SlurmLauncher

# name -> class: the one registration of each launcher
LAUNCHERS: dict[str, type[Launcher]] = {cls.name: cls for cls in (LocalLauncher, SlurmLauncher)}

__all__ = [
    "LAUNCHERS",
    "JobHandle",
    "JobResult",
    "JobSpec",
    "Launcher",
    "kill_orphan",
    "launcher_class",
    "make_launcher",
    "sibling_suffixes",
    "Unavailable",
]


def launcher_class(name: str) -> type[Launcher]:
    """The class registered as ``name``; BadInput (exit 2) for an unknown one."""
    try:
        return LAUNCHERS[name]
    except KeyError:
        raise BadInput(f"unknown launcher {name!r} (one of {', '.join(LAUNCHERS)})") from None


def make_launcher(
    settings: Settings, max_jobs: int | None = None, name: str | None = None
) -> Launcher:
    """The launcher ``[pipeline] launcher`` names (or ``name``), given its own settings
    section and at most ``max_jobs`` (default ``[pipeline] max_jobs``) jobs at a time;
    BadInput (exit 2) for an unknown one or one that cannot work here (Slurm without its
    commands)."""
    cls = launcher_class(name or settings.pipeline.launcher)
    options = getattr(settings, cls.settings_section) if cls.settings_section else None
    return cls(max_jobs or settings.pipeline.max_jobs, options)  # type: ignore[call-arg]


def sibling_suffixes() -> tuple[str, ...]:
    """Every registered launcher's files beside a job's log (retention removes them with
    the log, whichever launcher ran the job)."""
    return tuple(dict.fromkeys(s for cls in LAUNCHERS.values() for s in cls.sibling_suffixes))
