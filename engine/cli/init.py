"""`skydeck-engine init`: create a workspace (docs/design.md, "Workspace")."""

from __future__ import annotations

import argparse
import json

from engine.cli import SUMMARY
from engine.core.workspace import AREAS, init_workspace
from engine.store import init_state


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help=SUMMARY["init"])
    p.add_argument("--json", action="store_true",
                   help="print the workspace and its areas as one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ws = init_workspace(args.workspace)
    init_state(ws.state_db)
    if args.json:
        print(json.dumps({"workspace": str(ws.root),
                          "areas": {area: str(ws.path(area)) for area in AREAS}}))
        return 0
    print(f"workspace {ws.root}")
    for area in AREAS:
        print(f"  {area:16s} {ws.path(area)}")
    return 0
