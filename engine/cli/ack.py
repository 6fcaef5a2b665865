"""`skydeck-engine ack DLID [STREAM] --reason TEXT`: an operator acknowledges a stream's alarm.

A FAILED or STUCK stream makes ``health`` fail until an operator acts: a rollback or a
re-run, or this acknowledgement, recorded in the events table as an ``ack`` event naming
who (the Unix user running the command) and why; ``streams`` and the console show it. It
covers the alarm as it stands: a stream that fails again later raises a new one
(engine/pipeline/alarms.py).

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse

from engine.cli import SUMMARY


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "ack",
        parents=[common],
        help=SUMMARY["ack"],
        description="Acknowledge the alarm of a FAILED or STUCK stream: `health` stops "
        "failing for it. Recorded with who (your Unix user) and why.",
    )
    p.add_argument("dlid", help="the downlink")
    p.add_argument(
        "stream", nargs="?", type=int, default=None, help="its stream id (default: the latest)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--reason", required=True, metavar="TEXT", help="why no more action is needed")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from engine.api.alarms import acknowledge
    from engine.core.text import printable
    from engine.core.workspace import Workspace
    from engine.pipeline.alarms import whoami

    ws = Workspace.open(args.workspace)
    sid, status = acknowledge(ws, args.dlid, args.stream, reason=args.reason)
    if args.json:
        import json

        why = " ".join(args.reason.split())
        doc = {"dlid": args.dlid, "stream": sid, "status": status, "who": whoami(), "why": why}
        print(json.dumps(doc))
        return 0
    print(
        f"acknowledged stream {sid} of {args.dlid} ({status}) as {printable(whoami())}: "
        f"{printable(' '.join(args.reason.split()))}"
    )
    return 0
