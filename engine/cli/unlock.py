"""`skydeck-engine unlock LOCK`: remove a proven-stale lock, or any with --force + confirmation.

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse

from engine.cli import SUMMARY


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("unlock", parents=[common], help=SUMMARY["unlock"])
    p.add_argument(
        "lock", help="lock name in the lock directory (e.g. halfpipe-251125001) or its path"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="remove even a lock that is not provably stale (asks for confirmation)",
    )
    p.add_argument("--yes", action="store_true", help="confirm --force without asking")
    p.add_argument("--json", action="store_true", help="print the removed lock as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from engine.api.actions import unlock
    from engine.api.listings import lock_status
    from engine.core.errors import BadInput
    from engine.core.heartbeat import read_heartbeats
    from engine.core.text import printable
    from engine.core.thresholds import BEATS_PER_HEALTH
    from engine.core.workspace import Workspace
    from engine.pipeline.frozen import frozen_evidence

    ws = Workspace.open(args.workspace)
    path, info = lock_status(ws, args.lock)
    max_age = BEATS_PER_HEALTH * ws.settings.metrics.interval_s
    evidence = frozen_evidence(info, read_heartbeats(ws), max_age)
    if evidence and info.age_s > max_age:  # alive but frozen: the evidence is the proof
        unlock(ws, args.lock, force=True)
        if args.json:
            print(json.dumps({"removed": info.to_json(), "frozen": evidence}))
        else:
            print(
                f"removed {printable(info.name)} ({info.kind}, owner {printable(info.owner)}, "
                f"held {info.age_s:.0f} s): holder frozen: {printable(evidence)}"
            )
        return 0
    if args.force and not info.stale and not args.yes:
        if not sys.stdin.isatty():
            raise BadInput(
                "--force on a lock that is not provably stale needs --yes "
                "(no terminal to confirm on)",
                path,
            )
        prompt = f"{path.name} is held: {info.reason}. Remove anyway? Type 'yes': "
        if args.json:  # stdout is for the JSON object only
            print(prompt, end="", file=sys.stderr, flush=True)
            prompt = ""
        answer = input(prompt)
        if answer.strip() != "yes":
            raise BadInput("not confirmed; lock kept", path)
    removed = unlock(ws, args.lock, force=args.force)
    if args.json:
        print(json.dumps({"removed": removed.to_json()}))
        return 0
    print(f"removed {removed.name} ({removed.kind}, owner {removed.owner}): {removed.reason}")
    return 0
