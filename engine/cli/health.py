"""`skydeck-engine health [--json] [--stuck-after S] [--heartbeat-max-age S]`: a probe's verdict.

A monitoring probe (Nagios, Consul, a systemd timer, Kubernetes' exec probe) wants one exit
code and a line it can show: exit 0 when the workspace is healthy, 1 when a check failed
(one line per failed check on stdout), 2 for bad usage or no workspace, as every command.
A state database that cannot be reached is a failed check (exit 1, with since when), never
a wait and never exit 2: the probe asks the server once.
The checks and what "stuck" means are ``engine.api.health.health``'s (and the help below).

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse

from engine.cli import SUMMARY
from engine.cli.numbers import float_in
from engine.core.thresholds import BEATS_PER_HEALTH, DEFAULT_STUCK_AFTER_S

EPILOG = f"""\
checks:
  daemon   a `watch` daemon's heartbeat (logs/heartbeat/, written every [metrics]
           interval_s) is younger than --heartbeat-max-age (default {BEATS_PER_HEALTH} intervals)
           and its process is not provably dead
  state    the state database answers here (asked once, no wait), and no live daemon's
           heartbeat says it cannot reach it; else "unreachable since <time> (<s> s)"
  halt     no global halt flag is set (config/haltStage, halted, ...)
  lock     no lock is held, longer than --heartbeat-max-age, by a holder that is alive but
           frozen: its daemon heartbeat stopped advancing, or the process is stopped
           (SIGSTOP, a debugger); the line names the holder (host:pid) and the evidence, and
           `skydeck-engine unlock NAME` releases it
  failed   no latest stream is FAILED without an operator having acted: a rollback, a
           re-run, or `skydeck-engine ack DLID --reason TEXT` (recorded with who and why)
  disk     free space on downlinks/ and stage/ is not under [disk] reserve_bytes
  stuck    no stream is stuck. A stream is stuck when it is RUNNING, no halt flag holds it,
           and either its runner (the stream's owner) is provably dead and nothing happened
           for longer than --heartbeat-max-age (no daemon took it over), or nothing happened
           for longer than --stuck-after whatever its runner. "Something happened" is the
           stream starting, or one of its process instances being created, started or ending.

exit codes: 0 healthy, 1 a check failed (one line each), 2 bad usage or no workspace,
            77 this user may not read the workspace (not in its group)
"""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "health",
        parents=[common],
        help=SUMMARY["health"],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object {"healthy": bool, "checks": [...]}',
    )
    p.add_argument(
        "--stuck-after",
        type=float_in("--stuck-after", 1.0, 365 * 86400.0),
        default=DEFAULT_STUCK_AFTER_S,
        metavar="SECONDS",
        help="a RUNNING stream where nothing happened for this long is stuck "
        f"(default {DEFAULT_STUCK_AFTER_S:g}: longer than the longest job)",
    )
    p.add_argument(
        "--heartbeat-max-age",
        type=float_in("--heartbeat-max-age", 0.1, 86400.0),
        default=None,
        metavar="SECONDS",
        help="an older daemon heartbeat is stale "
        f"(default {BEATS_PER_HEALTH} x [metrics] interval_s)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from engine.api.health import health
    from engine.core.errors import EXIT_FAILED
    from engine.core.text import printable
    from engine.core.workspace import Workspace

    ws = Workspace.open(args.workspace)
    checks = health(ws, heartbeat_max_age=args.heartbeat_max_age, stuck_after=args.stuck_after)
    healthy = all(c.ok for c in checks)
    if args.json:
        print(
            json.dumps(
                {
                    "workspace": str(ws.root),
                    "healthy": healthy,
                    "checks": [c.as_json() for c in checks],
                }
            )
        )
    elif healthy:
        print(f"healthy: {printable('; '.join(c.detail for c in checks))}")
    else:
        for c in checks:
            if not c.ok:  # names, notes and hosts from outside: escaped, one line each
                print(f"{printable(c.name)}: {printable(c.detail)}")
    return 0 if healthy else EXIT_FAILED
