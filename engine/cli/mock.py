"""`skydeck-engine mock`: make a mock delivery (level-0 directory, fcopy package, or plain dir).

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli import SUMMARY
from engine.cli.numbers import INT64_MAX, int_in
from engine.mock.limits import GENSTEP_KINDS, MAX_EVENT_BYTES, MAX_EVENTS
from engine.propagate.options import MAX_PHOTONS


def _default_dlid() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%y%m%d") + "001"


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("mock", parents=[common], help=SUMMARY["mock"])
    p.add_argument("--downlink", default=None, help="downlink id YYMMDDnnn (default: today, 001)")
    p.add_argument(
        "--sources",
        type=int_in("--sources", 1, 1000),
        default=3,
        help="data sources (files); the first is principal",
    )
    p.add_argument(
        "--events",
        type=int_in("--events", 1, MAX_EVENTS),
        default=1000,
        help="events in the principal source",
    )
    p.add_argument(
        "--event-bytes",
        type=int_in("--event-bytes", 4, MAX_EVENT_BYTES),
        default=10_000,
        help="payload bytes per event (default 10000: 3 sources x 1000 events x 10 kB, "
        "about 30 MB a delivery; size = sources x events x bytes)",
    )
    p.add_argument(
        "--runs",
        type=int_in("--runs", 1, MAX_EVENTS),
        default=2,
        help="runs (acquisitions) the events span",
    )
    p.add_argument(
        "--chunks", type=int_in("--chunks", 1, 99999), default=2, help="chunks (RetDef files)"
    )
    p.add_argument("--seed", type=int_in("--seed", 0, INT64_MAX), default=0)
    p.add_argument(
        "--scene",
        default=None,
        help="also deliver gensteps.npy for this scene (a packaged scene: tboolean-box, "
        "tboolean-box-detect, water-tank, scint-tank)",
    )
    p.add_argument(
        "--gensteps-photons",
        type=int_in("--gensteps-photons", 0, MAX_PHOTONS),
        default=0,
        help="photons in the delivered gensteps (default: the scene's source; one "
        "track for cerenkov and scintillation)",
    )
    p.add_argument(
        "--gensteps-kind",
        choices=GENSTEP_KINDS,
        default="torch",
        help="torch: the scene's source; cerenkov: 1 GeV muons crossing the container "
        "material; scintillation: 2 MeV electrons stopping in it",
    )
    p.add_argument(
        "--gensteps-file",
        type=Path,
        default=None,
        help="carry this genstep file instead (e.g. from `geant4 gensteps`), with its material map",
    )
    p.add_argument(
        "--as",
        dest="as_",
        choices=("level0", "fcopy", "dir"),
        default="level0",
        help="deliver into the workspace's incoming level0 or fcopy dir, or write to -o DIR",
    )
    p.add_argument("-o", "--output", type=Path, help="plain output directory (implies --as dir)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from engine.core.diskspace import env_reserve
    from engine.core.progress import progress
    from engine.core.workspace import Workspace
    from engine.mock.delivery import MockSpec, deliver

    spec = MockSpec(
        dlid=args.downlink or _default_dlid(),
        sources=args.sources,
        events=args.events,
        event_bytes=args.event_bytes,
        runs=args.runs,
        chunks=args.chunks,
        seed=args.seed,
        scene=args.scene,
        gensteps_photons=args.gensteps_photons,
        gensteps_kind=args.gensteps_kind,
        gensteps_file=str(args.gensteps_file) if args.gensteps_file else None,
    )
    spec.validate()
    if args.output is not None or args.as_ == "dir":
        as_, target = "dir", (args.output or Path(spec.dlid))
        reserve = env_reserve()
    else:
        ws = Workspace.open(args.workspace)
        as_ = args.as_
        target = ws.incoming_level0 if as_ == "level0" else ws.incoming_fcopy
        reserve = ws.reserve_bytes
    total = spec.events * spec.sources
    with progress(total, f"mock {spec.dlid}") as bar:
        out = deliver(spec, as_, target, reserve=reserve, advance=bar.advance)
    if args.json:
        print(
            json.dumps(
                {
                    "downlink": spec.dlid,
                    "as": as_,
                    "path": str(out),
                    "sources": spec.sources,
                    "events": spec.events,
                    "event_bytes": spec.event_bytes,
                    "runs": spec.runs,
                    "chunks": spec.chunks,
                    "seed": spec.seed,
                }
            )
        )
    else:
        print(f"mock downlink {spec.dlid} delivered as {as_}: {out}")
    return 0
