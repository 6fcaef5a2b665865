"""`skydeck-engine propagate SCENE -o DIR`: one optical-photon propagation event.

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli import SUMMARY
from engine.cli.numbers import int_in
from engine.propagate.options import BACKENDS, DEFAULT_CHUNK, MAX_CHUNK, MAX_PHOTONS, MODES


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("propagate", parents=[common], help=SUMMARY["propagate"])
    p.add_argument(
        "scene",
        help="scene TOML file, or a packaged scene by name "
        "(tboolean-box, tboolean-box-detect, water-tank, scint-tank)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="event directory to write")
    p.add_argument(
        "--photons",
        type=int_in("--photons", 0, MAX_PHOTONS),
        default=None,
        help="photon count, 1e6 and 1_000_000 work too (default: the scene's)",
    )
    p.add_argument(
        "--seed", type=int_in("--seed", 0, 2**64 - 1), default=0, help="Philox key (default 0)"
    )
    p.add_argument(
        "--event",
        type=int_in("--event", 0, 2**32 - 1),
        default=0,
        help="event index, part of the Philox counter",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="production",
        help="production: ht.npy+meta.json+gs.npy; development adds ox, rx, seq",
    )
    p.add_argument("--backend", choices=BACKENDS, default="auto")
    p.add_argument(
        "--hitmask",
        default=None,
        help='flags a hit must carry, e.g. "SD" (default: the scene\'s) or "TO,BT,SA"',
    )
    p.add_argument(
        "--workers",
        type=int_in("--workers", 1, 4096),
        default=None,
        help="numpy backend processes (default: every core this process may use)",
    )
    p.add_argument(
        "--chunk",
        type=int_in("--chunk", 1, MAX_CHUNK),
        default=DEFAULT_CHUNK,
        help="photons per numpy chunk (bounds memory)",
    )
    p.add_argument(
        "--gensteps",
        type=Path,
        default=None,
        help="(G,6,4) float32 gensteps.npy (TORCH, CERENKOV, SCINTILLATION; e.g. from a "
        "delivery or `skydeck-engine geant4 gensteps`) instead of the scene's source",
    )
    p.add_argument(
        "--genstep-materials",
        type=Path,
        default=None,
        help="material map of Geant4 gensteps, {\"materials\": [names in Geant4 index "
        "order]} (default: <gensteps stem>.materials.json beside the file, if any)",
    )
    p.add_argument("--json", action="store_true", help="print meta.json instead of a line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from engine.core.diskspace import env_reserve, human_bytes
    from engine.core.errors import BadInput
    from engine.core.progress import progress
    from engine.core.workspace import Workspace, scene_arg
    from engine.propagate.event import Request, propagate

    reserve = env_reserve()
    if args.workspace is not None:
        reserve = Workspace.open(args.workspace).reserve_bytes
    if args.workers is not None and args.workers < 1:
        raise BadInput("--workers must be at least 1")
    scene = scene_arg(args.scene)
    req = Request(
        scene=scene,
        out=args.output,
        photons=args.photons,
        seed=args.seed,
        event=args.event,
        mode=args.mode,
        backend=args.backend,
        hitmask=args.hitmask,
        workers=args.workers,
        chunk=args.chunk,
        reserve=reserve,
        gensteps=args.gensteps,
        genstep_materials=args.genstep_materials,
    )
    state: dict = {}

    def advance(k: int) -> None:
        state["bar"].advance(k)

    def on_start(n: int) -> None:
        state["cm"] = progress(n, f"propagate {scene.name}")
        state["bar"] = state["cm"].__enter__()

    try:
        meta = propagate(req, advance=advance, on_start=on_start)
    finally:
        if "cm" in state:
            state["cm"].__exit__(None, None, None)
    if "mpi_worker" in meta:  # an MPI rank > 0: rank 0 reports
        return 0
    if args.json:
        print(json.dumps(meta, sort_keys=True))
    else:
        pps = meta["photons_per_second"]
        print(
            f"{meta['photons']:,} photons -> {meta['hits']:,} hits ({meta['hitmask']['label']}) "
            f"in {meta['propagate_seconds']:.2f} s ({pps or 0:,.0f} photons/s, {meta['backend']}: "
            f"{meta['device']}); {meta['mode']} event {args.output} ({human_bytes(meta['bytes'])})"
        )
    return 0
