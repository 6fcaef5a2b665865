"""Halt flags: the one module that names them, says where they live, reads, sets and clears.

A halt flag is an empty-ish file; while it exists, the processes the task marks with
``halt = "<flag>"`` are held (WAITING, "halted by <file>"), ``haltCleanup`` keeps a
downlink's intermediates and ``halted`` stops the daemon from starting streams. A flag is
set globally (``[paths] flags``, by default ``<workspace>/config/<flag>``) or for one
downlink (``downlinks/<DLID>/<flag>``); either holds. Before this module the names and the
two paths were spelled out in the runner, the daemon, the cleanup job and the console's
operations, each a little differently.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from engine.core.errors import BadInput
from engine.core.ids import is_dlid, parse_dlid
from engine.core.workspace import Workspace

HALT_FLAGS = ("haltStage", "haltCleanup", "haltPropagate", "halted")
# what each flag holds (`halt --help`, README "Halt flags", the halt alert). HalfPipe's
# haltL1 (no Level-1 stream after staging) has no counterpart: skydeck starts no Level-1
# work, so it has no such flag.
HALT_MEANING = {
    "haltStage": "mergeEvt (staging) is held: chunks are built, no run is merged or staged",
    "haltCleanup": "cleanup is held: a downlink's intermediates (chunk outputs) are kept",
    "haltPropagate": "propagate is held: no GPU photon propagation starts",
    "halted": "no new stream starts: deliveries are registered and wait as arrived; "
    "running streams go on",
}
GLOBAL = "global"  # the scope of a flag under [paths] flags, in ``halts()``


def global_flag(ws: Workspace, flag: str) -> Path:
    """Where ``flag`` is set for every downlink."""
    return ws.path("flags") / flag


def downlink_flag(ws: Workspace, dlid: str, flag: str) -> Path:
    """Where ``flag`` is set for downlink ``dlid`` only."""
    return ws.downlinks / dlid / flag


def halt_flag(ws: Workspace, dlid: str, flag: str) -> Path | None:
    """The flag file that halts ``flag`` for this downlink (global or per downlink), if any.

    ``flag`` is whatever the task names (a custom task may name its own flag)."""
    for p in (global_flag(ws, flag), downlink_flag(ws, dlid, flag)):
        if p.exists():
            return p
    return None


def is_set_globally(ws: Workspace, flag: str) -> bool:
    return global_flag(ws, flag).exists()


def flag_path(ws: Workspace, flag: str, dlid: str | None = None) -> Path:
    """The file of a known ``flag``, globally or for ``dlid``; BadInput for an unknown flag
    or a downlink id that is not one (it becomes a path component)."""
    if flag not in HALT_FLAGS:
        raise BadInput(f"unknown halt flag {flag!r} (flags: {', '.join(HALT_FLAGS)})")
    if dlid is None:
        return global_flag(ws, flag)
    return downlink_flag(ws, parse_dlid(dlid), flag)


def halts(ws: Workspace, dlid: str | None = None) -> dict[str, list[str]]:
    """Set halt flags: {flag: ["global"] and/or [dlid]} for the global and this downlink."""
    out: dict[str, list[str]] = {}
    for flag in HALT_FLAGS:
        where = []
        if is_set_globally(ws, flag):
            where.append(GLOBAL)
        if dlid is not None and is_dlid(dlid) and downlink_flag(ws, dlid, flag).exists():
            where.append(dlid)
        if where:
            out[flag] = where
    return out


def set_halt(ws: Workspace, flag: str, dlid: str | None = None) -> Path:
    """Hold every process guarded by ``flag`` (globally, or for one downlink)."""
    p = flag_path(ws, flag, dlid)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(f"set {time.strftime('%Y-%m-%dT%H:%M:%S')} by pid {os.getpid()}\n")
    return p


def clear_halt(ws: Workspace, flag: str, dlid: str | None = None) -> bool:
    """Release the hold; True when a flag was removed."""
    p = flag_path(ws, flag, dlid)
    try:
        p.unlink()
        return True
    except FileNotFoundError:
        return False


def held_note(ws: Workspace, dlid: str) -> str | None:
    """Why a downlink that has not started sits ``arrived``: the ``halted`` flag that
    holds it (globally or for it), or None."""
    p = halt_flag(ws, dlid, "halted")
    if p is None:
        return None
    where = "globally" if p == global_flag(ws, "halted") else "for this downlink"
    return f"held: halt flag halted set {where} ({p}); `skydeck-engine resume halted` releases it"
