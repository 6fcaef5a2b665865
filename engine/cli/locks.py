"""`skydeck-engine locks`: every lock with kind, owner, age and a stale verdict with reason.

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse

from engine.cli import SUMMARY


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("locks", parents=[common], help=SUMMARY["locks"])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from engine.api.listings import locks
    from engine.core.heartbeat import read_heartbeats
    from engine.core.text import printable as pr
    from engine.core.thresholds import BEATS_PER_HEALTH
    from engine.core.workspace import Workspace
    from engine.pipeline.frozen import frozen_evidence

    ws = Workspace.open(args.workspace)
    infos = locks(ws)
    beats = read_heartbeats(ws)
    max_age = BEATS_PER_HEALTH * ws.settings.metrics.interval_s
    frozen = {i.name: frozen_evidence(i, beats, max_age) for i in infos}
    if args.json:
        print(json.dumps([i.to_json() | {"frozen": frozen[i.name]} for i in infos], indent=1))
        return 0
    if not infos:
        print(f"no locks in {pr(ws.lock)}")
        return 0
    print(f"{'LOCK':22s} {'KIND':10s} {'OWNER':22s} {'PROCESS':14s} {'AGE':>8s} VERDICT")
    for i in infos:
        # blocks: no grace period will free it (operator); in doubt: malformed, still in grace
        verdict = (
            f"FROZEN: {frozen[i.name]}; held: "
            if frozen[i.name]
            else "STALE: "
            if i.stale
            else "blocks: "
            if i.blocks
            else "held: "
            if i.pid is not None
            else "in doubt: "
        ) + i.reason
        # every field from the lock file escaped: one inert row per lock, always
        print(
            f"{pr(i.name):22s} {pr(i.kind):10s} {pr(i.owner):22s} {pr(i.process):14s} "
            f"{i.age_s:7.0f}s {pr(verdict)}"
        )
    return 0
