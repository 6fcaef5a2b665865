"""`skydeck-engine geometry check FILE.gdml [--points N] [--json]`: read a GDML detector as
propagation would and check it as Geant4's CheckOverlaps does (points sampled on each
daughter's surface inside its mother, outside its sisters); exit 2 with one line naming
the file and the volumes at the first fault (docs/propagation.md, "Bad geometry").

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli import SUMMARY
from engine.cli.numbers import int_in


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("geometry", parents=[common], help=SUMMARY["geometry"])
    sp = p.add_subparsers(dest="geocmd", required=True, metavar="{check}")
    c = sp.add_parser("check", parents=[common], help="overlaps, extrusions and a summary")
    c.add_argument("gdml", type=Path, help="GDML file")
    c.add_argument(
        "--points",
        type=int_in("--points", 1, 100_000),
        default=1000,
        help="points sampled on each daughter's surface (Geant4's default 1000)",
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from engine.propagate.geometry import detector, gdml
    from engine.propagate.geometry.check import check_overlaps

    t0 = time.perf_counter()
    det = gdml.read(args.gdml)
    parts = detector.build(det)
    t1 = time.perf_counter()
    checked = check_overlaps(det, parts.geometry, points=args.points)
    info = {k: v for k, v in parts.info.items() if k != "solid_index"}
    doc = {
        "file": str(args.gdml),
        **info,
        "checked": checked,
        "overlaps": 0,
        "load_seconds": round(t1 - t0, 3),
        "check_seconds": round(time.perf_counter() - t1, 3),
    }
    if args.json:
        print(json.dumps(doc, sort_keys=True))
    else:
        print(
            f"{args.gdml}: {info['volumes']:,} volumes ({info['logical_volumes']} logical, "
            f"{info['solids']} solids), {info['sensors']:,} sensors, {info['surfaces']} "
            f"surfaces, BVH depth {info['bvh_depth']}; no overlaps or extrusions in "
            f"{checked['points']:,} points on {checked['daughters']:,} daughters "
            f"({checked['pairs']:,} sister pairs near each other)"
        )
    return 0
