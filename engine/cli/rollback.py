"""`skydeck-engine rollback DLID [PROCESS[:KEY]...]`: re-run instances and what depends on them.

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse

from engine.cli import SUMMARY


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("rollback", parents=[common], help=SUMMARY["rollback"])
    p.add_argument("dlid", help="downlink id")
    p.add_argument(
        "targets",
        nargs="*",
        metavar="PROCESS[:KEY]",
        help="e.g. makeEvt:00002 or mergeEvt (all runs); default: the failed instances",
    )
    p.add_argument("--task", default=None)
    p.add_argument(
        "--json", action="store_true", help="print what was rolled back as one JSON object"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from engine.api import rollback
    from engine.core.workspace import Workspace

    ws = Workspace.open(args.workspace)
    res = rollback(ws, args.dlid, args.targets, task_name=args.task)
    if args.json:
        print(
            json.dumps(
                {
                    "dlid": res.dlid,
                    "rolled_back": res.retired,
                    "instance_ids": res.ids,
                    "stream_status": "WAITING",
                }
            )
        )
        return 0
    for label in res.retired:
        print(f"rolled back {label}")
    print(
        f"stream {res.dlid} is WAITING again: `skydeck-engine run {res.dlid}` or a running "
        "`watch` picks it up"
    )
    return 0
