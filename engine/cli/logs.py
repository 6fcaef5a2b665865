"""`skydeck-engine logs PATTERN [DLID]`: search the workspace's logs, of a stream or a window.

One regular expression over the daemon's event log (each line in its human form, timed)
and the process and console-job logs (engine/api/logsearch.py says how each is dated).
Prints ``path:line: text`` per match, escaped (what a job printed is outside text); exit 0
with matches, 1 with none (as grep), 2 for a bad pattern or window.

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse

from engine.cli import SUMMARY


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "logs",
        parents=[common],
        help=SUMMARY["logs"],
        description="Search the logs: the daemon's event log (lines in their human form, "
        "each with its own time) and the process and console-job logs (dated by their last "
        "write). Exit 0 when something matched, 1 when nothing did, 2 for bad input.",
    )
    p.add_argument("pattern", help="a regular expression (case-insensitive unless -s)")
    p.add_argument("dlid", nargs="?", default=None, help="only this downlink's logs and events")
    p.add_argument(
        "--since", metavar="WHEN", help="from: a duration back (30m, 2h, 1d) or YYYY-MM-DD [HH:MM]"
    )
    p.add_argument("--until", metavar="WHEN", help="to: the same forms as --since")
    p.add_argument("-s", "--case-sensitive", action="store_true", help="match case")
    p.add_argument("--limit", type=int, default=200, help="at most this many matches (200)")
    p.add_argument("--json", action="store_true", help="one JSON list of matches")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from engine.api.logsearch import parse_when, search_logs
    from engine.core.errors import BadInput
    from engine.core.text import printable as pr
    from engine.core.workspace import Workspace

    if args.limit < 1:
        raise BadInput(f"--limit must be at least 1, not {args.limit}")
    now = time.time()
    since = parse_when(args.since, now) if args.since else None
    until = parse_when(args.until, now) if args.until else None
    ws = Workspace.open(args.workspace)
    found = search_logs(
        ws,
        args.pattern,
        dlid=args.dlid,
        since=since,
        until=until,
        ignore_case=not args.case_sensitive,
        limit=args.limit,
    )
    if args.json:
        print(json.dumps([m.to_json() for m in found], indent=1))
    else:
        for m in found:
            print(f"{pr(m.path)}:{m.lineno}: {pr(m.line)}")
        if len(found) >= args.limit:
            print(f"(the first {args.limit} matches; --limit for more)")
    return 0 if found else 1
