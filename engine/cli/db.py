"""`skydeck-engine db copy --to URL [--json]`: move a workspace's SQLite state into an empty
PostgreSQL database (docs/design.md, "State on PostgreSQL").

Why a command: a site that outgrows one host keeps its history when it moves its state to
a shared server. The copying itself (one transaction, identity sequences, counts verified
per table) is ``engine.store.copy``; this module refuses what must not be copied (a state
already in PostgreSQL, a daemon whose heartbeat is live) and tells the operator the one
step left: the workspace keeps using the SQLite file until ``[state] url`` (or
``SKYDECK_STATE_URL``) names the copy. skydeck.toml is never rewritten here: it may have
been edited by hand, and a URL with a password needs a file only its owner can read.

Exit codes: 0 copied and verified; 1 the copy did not verify (nothing kept in the target);
2 bad usage, no SQLite state, a target that is not empty or cannot be reached; 3 a daemon
or a runner is live (stop it first).

Its machinery is imported in ``run_copy()``, not here: ``--help`` must stay light
(test_startup).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from engine.cli import SUMMARY

if TYPE_CHECKING:
    from engine.core.workspace import Workspace

EPILOG = """\
copy: the SQLite state of the workspace (downlinks, deliveries, streams, process
instances, files, events) into an EMPTY PostgreSQL database (a schema made by
`init --state URL` and nothing else is fine), in one transaction, verified by row
counts per table. The SQLite file is not changed. Then set [state] url in
skydeck.toml (mode 0600 when the URL holds a password; or use ~/.pgpass,
PGPASSWORD or a service file) or SKYDECK_STATE_URL, and start the daemon again.

exit codes: 0 copied, 1 the counts differ (nothing kept), 2 bad usage or target not
empty, 3 a daemon or runner is live (stop it first)
"""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "db",
        parents=[common],
        help=SUMMARY["db"],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="db_command", metavar="SUBCOMMAND", required=True)
    c = verbs.add_parser(
        "copy",
        parents=[common],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="copy the SQLite state into an empty PostgreSQL database",
    )
    c.add_argument(
        "--to",
        metavar="URL",
        required=True,
        help="the target database (postgresql://...); it must be empty",
    )
    c.add_argument(
        "--json", action="store_true", help="print the rows copied per table as one JSON object"
    )
    c.set_defaults(func=run_copy)


def _refuse_live_daemon(ws: Workspace) -> None:
    import socket
    import time

    from engine.core.errors import Busy
    from engine.core.heartbeat import read_heartbeats
    from engine.core.thresholds import BEATS_PER_HEALTH

    here, now = socket.gethostname(), time.time()
    for hb in read_heartbeats(ws):
        dead, why = hb.dead()
        if dead:
            continue
        if hb.host != here and now - hb.t > BEATS_PER_HEALTH * hb.interval_s:
            continue  # another host's heartbeat that stopped beating long ago
        raise Busy(
            f"a daemon is live ({why}); stop it before copying the state (a "
            "heartbeat left by a daemon that is gone can be removed)",
            hb.path,
        )


def run_copy(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace

    from engine.core.dburl import parse_state_url
    from engine.core.errors import BadInput
    from engine.core.workspace import CONFIG_NAME, STATE_URL_ENV, Workspace
    from engine.store.copy import copy_state

    target = parse_state_url(args.to, "--to")
    ws = Workspace.open(args.workspace)
    # a server that is down is waited for as the workspace says ([state] wait_s)
    target = replace(target, wait_s=ws.settings.state.wait_s)
    if ws.state_url is not None:
        raise BadInput(
            f"the state is already in PostgreSQL ({ws.state_url.redacted}, from "
            f"${STATE_URL_ENV} or [state] url); db copy moves the SQLite file",
            ws.root / CONFIG_NAME,
        )
    _refuse_live_daemon(ws)
    report = copy_state(ws.state_db, target)
    if args.json:
        print(json.dumps(report.as_json()))
        return 0
    print(f"copied {report.source} to {report.target}, counts verified:")
    for table, n in report.counts.items():
        print(f"  {table:18s} {n:>10d}")
    print("  next ids: " + ", ".join(f"{t} {n}" for t, n in report.next_ids.items()))
    print(
        f"the workspace still uses {ws.state_db}: set [state] url in "
        f"{ws.root / CONFIG_NAME} (mode 0600 when the URL holds a password) or "
        f"${STATE_URL_ENV} to the URL, then start the daemon again"
    )
    return 0
