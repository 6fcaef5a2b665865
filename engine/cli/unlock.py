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
    from engine.core.workspace import Workspace

    ws = Workspace.open(args.workspace)
    path, info = lock_status(ws, args.lock)
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
