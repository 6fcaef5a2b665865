"""`skydeck-engine resume FLAG [DLID]`: clear a halt flag (what each flag holds: ``--help``;
setting one: engine/cli/halt.py).

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse

from engine.cli import halt_parser


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    halt_parser(sub, common, "resume").set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.api.actions import clear_halt
    from engine.core.workspace import Workspace

    ws = Workspace.open(args.workspace)
    where = f"for {args.dlid}" if args.dlid else "globally"
    cleared = clear_halt(ws, args.flag, args.dlid)
    if args.json:
        import json

        print(json.dumps({"flag": args.flag, "dlid": args.dlid, "cleared": cleared}))
        return 0
    if cleared:
        print(f"{args.flag} cleared {where}")
    else:
        print(f"{args.flag} was not set {where}")
    return 0
