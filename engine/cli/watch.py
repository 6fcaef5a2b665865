"""`skydeck-engine watch [--once] [--polling] [--metrics-port PORT]`: the directory-watch
daemon (engine/daemon/); its metrics textfile and heartbeat: engine/daemon/exporter.py.

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse

from engine.cli import SUMMARY
from engine.cli.numbers import float_in, int_in


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("watch", parents=[common], help=SUMMARY["watch"])
    p.add_argument(
        "--once",
        action="store_true",
        help="process what is there, run those streams to their end, and exit",
    )
    p.add_argument(
        "--polling",
        action="store_true",
        help="poll instead of inotify (automatic on nfs/gpfs/lustre/cifs mounts)",
    )
    p.add_argument(
        "--interval",
        type=float_in("--interval", 0.01, 86400.0),
        default=None,
        help="polling interval in seconds (default: config watch.poll_interval_s)",
    )
    p.add_argument(
        "--metrics-port",
        type=int_in("--metrics-port", 0, 65535),
        default=None,
        metavar="PORT",
        help="also serve the metrics (skydeck_*) over HTTP at 127.0.0.1:PORT/metrics "
        "(0: a free port, logged), from the snapshot of the last [metrics] interval_s, "
        "at most 32 clients at once, 5 s each; the textfile is [metrics] textfile",
    )
    p.add_argument(
        "--metrics-bind",
        "--metrics-addr",
        dest="metrics_addr",
        default="127.0.0.1",
        metavar="ADDR",
        help="the address --metrics-port listens on (default: 127.0.0.1, this host only; "
        "0.0.0.0 or a host's address exposes it: put it behind a firewall)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from engine.core.errors import EXIT_FAILED, EXIT_USAGE
    from engine.core.text import printable as pr
    from engine.core.workspace import Workspace
    from engine.daemon import run_daemon

    ws = Workspace.open(args.workspace)
    if args.interval is not None:
        ws.settings = ws.settings.replace("watch", poll_interval_s=args.interval)
    res = run_daemon(
        ws,
        polling=args.polling,
        once=args.once,
        metrics_port=args.metrics_port,
        metrics_addr=args.metrics_addr,
    )
    for o in res.rejected:  # names and reasons from outside: escaped (engine/core/text.py)
        print(
            f"skydeck-engine: {pr(o.file or o.path)}: {pr(o.reason)} (moved to {pr(o.path)})",
            file=sys.stderr,
        )
    for e in res.errors:  # contained faults (a delivery or stream that raised) still open
        print(f"skydeck-engine: {pr(ws.root)}: {pr(e)}", file=sys.stderr)
    if res.terminated:
        return 0
    if res.errors and args.once:
        return EXIT_FAILED
    if res.failed:
        print(f"skydeck-engine: streams failed: {' '.join(res.failed)}", file=sys.stderr)
        return EXIT_FAILED
    if res.rejected:
        return EXIT_USAGE
    return 0
