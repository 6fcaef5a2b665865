"""`skydeck-engine init`: create a workspace (docs/design.md, "Workspace")."""

from __future__ import annotations

import argparse

from engine.cli import SUMMARY
from engine.core.workspace import AREAS, init_workspace
from engine.store import init_state


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help=SUMMARY["init"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    ws = init_workspace(args.workspace)
    init_state(ws.state_db)
    print(f"workspace {ws.root}")
    for area in AREAS:
        print(f"  {area:16s} {ws.path(area)}")
    return 0
