"""`skydeck-engine stage`: disk usage per area and per downlink, free space and reserve.

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse

from engine.cli import SUMMARY
from engine.cli.numbers import int_in


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("stage", parents=[common], help=SUMMARY["stage"])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument(
        "--workers",
        type=int_in("--workers", 1, 1024),
        default=None,
        help="scan processes (default: config/CPUs)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from engine.api.listings import usage
    from engine.core.diskspace import human_bytes
    from engine.core.workspace import Workspace

    ws = Workspace.open(args.workspace)
    t0 = time.perf_counter()
    rep = usage(ws, args.workers)
    dt = time.perf_counter() - t0
    if args.json:
        print(json.dumps(rep.to_json() | {"scan_s": round(dt, 4)}, indent=1))
        return 0
    print(f"{'AREA':12s} {'USAGE':>10s} {'FILES':>9s}")
    for area, u in rep.areas.items():
        print(f"{area:12s} {human_bytes(u.bytes):>10s} {u.files:9d}")
    if rep.downlinks:
        print(f"\n{'DOWNLINK':10s} {'INCOMING':>10s} {'DOWNLINKS':>10s} {'STAGE':>10s}")
        for dl, parts in rep.downlinks.items():
            cols = [
                human_bytes(parts[k].bytes) if k in parts else "-"
                for k in ("incoming", "downlinks", "stage")
            ]
            print(f"{dl:10s} {cols[0]:>10s} {cols[1]:>10s} {cols[2]:>10s}")
    print(
        f"\nfree {human_bytes(rep.free)} of {human_bytes(rep.total)}, reserve "
        f"{human_bytes(rep.reserve)}{' -- LAUNCHING PAUSED (free < reserve)' if rep.paused else ''}"
        f"  (scan {dt:.2f} s)"
    )
    return 0
