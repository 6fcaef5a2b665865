"""`skydeck-engine geant4`: Geant4 runs on a skydeck scene (the ``geant4`` extra).

- ``geant4 propagate SCENE -o DIR [--photons N] [--seed S]``: Geant4 tracks the scene's
  torch photons and writes a skydeck event directory (histories inferred per step), so
  ``hits DIR --vs OTHER_EVENT`` gives the A/B tables; ``--timing`` only measures.
- ``geant4 gensteps SCENE -o gensteps.npy --particle mu- --energy 1GeV --position X,Y,Z
  --direction X,Y,Z [--count N]``: the particle's Cerenkov and scintillation steps as a
  genstep file (and its material map beside it) that ``propagate --gensteps`` and a
  delivery carry; the optical photons are killed inside Geant4. ``--mode track
  --track-photons DIR`` lets Geant4 track them too and writes its hits as an event.
Geant4's own output goes to ``--g4-log FILE`` (default: nowhere); one JSON line (``--json``)
or a summary line goes to stdout. docs/geant4.md.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from engine.cli import SUMMARY
from engine.cli.numbers import int_in
from engine.core.errors import BadInput
from engine.core.workspace import scene_arg

_UNITS = {"ev": 1e-6, "kev": 1e-3, "mev": 1.0, "gev": 1e3, "tev": 1e6}


def energy_mev(text: str) -> float:
    """``1GeV``, ``5 MeV``, ``500keV``, ``2.5`` (MeV) -> MeV."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text)[:64])
    unit = (m.group(2) or "MeV").lower() if m else ""
    if not m or unit not in _UNITS:
        raise BadInput(f"--energy: {text[:64]!r} is not an energy like 1GeV, 5MeV or 500keV")
    v = float(m.group(1)) * _UNITS[unit]
    if not 0 < v <= 1e7:
        raise BadInput(f"--energy: {text!r} is outside 0..10 TeV")
    return v


def vector(option: str):  # -> Callable[[str], tuple[float, float, float]]
    def parse(text: str) -> tuple[float, float, float]:
        parts = str(text)[:200].replace(" ", "").split(",")
        try:
            v = tuple(float(p) for p in parts)
        except ValueError:
            v = ()
        if len(v) != 3 or not all(abs(x) < 1e9 for x in v):
            raise BadInput(f"{option}: {text[:64]!r} is not x,y,z in mm")
        return v  # type: ignore[return-value]

    return parse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("geant4", parents=[common], help=SUMMARY["geant4"])
    sp = p.add_subparsers(dest="g4cmd", required=True, metavar="{propagate,gensteps}")
    a = sp.add_parser(
        "propagate",
        parents=[common],
        help="Geant4 tracks the scene's torch photons; a skydeck event directory",
    )
    a.add_argument("scene", help="scene TOML file or packaged scene name")
    a.add_argument("-o", "--output", type=Path, default=None, help="event directory to write")
    a.add_argument("--photons", type=int_in("--photons", 1, 10_000_000), default=None)
    a.add_argument(
        "--seed",
        type=int_in("--seed", 0, 2**31 - 2),
        default=0,
        help="seed of skydeck's torch generator (the same photons) and of Geant4",
    )
    a.add_argument("--hitmask", default=None, help="flags a hit must carry (default: the scene's)")
    a.add_argument(
        "--timing",
        action="store_true",
        help="no histories: measure Geant4's tracking CPU time only",
    )
    a.add_argument(
        "--g4-log", dest="log", type=Path, default=None, help="file for Geant4's own output"
    )
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=run_propagate)
    g = sp.add_parser(
        "gensteps",
        parents=[common],
        help="a particle gun's Cerenkov and scintillation steps as gensteps",
    )
    g.add_argument("scene", help="scene TOML file or packaged scene name")
    g.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="genstep file (.npy); its material map goes beside it",
    )
    g.add_argument("--particle", default="mu-", help="mu-, mu+, e-, e+, gamma, proton, pi-, pi+")
    g.add_argument("--energy", type=energy_mev, default=1000.0, help="kinetic energy, e.g. 1GeV")
    g.add_argument(
        "--position",
        type=vector("--position"),
        default=(0.0, 0.0, 0.0),
        help="x,y,z mm (inside the container)",
    )
    g.add_argument("--direction", type=vector("--direction"), default=(0.0, 0.0, 1.0), help="x,y,z")
    g.add_argument(
        "--count", type=int_in("--count", 1, 100_000), default=1, help="primaries, one event each"
    )
    g.add_argument("--seed", type=int_in("--seed", 0, 2**31 - 2), default=0)
    g.add_argument(
        "--mode",
        choices=("collect", "track", "bare", "charged"),
        default="collect",
        help="collect: kill the photons (default); track: Geant4 tracks them too and "
        "writes its hits to --track-photons; bare/charged: timing runs",
    )
    g.add_argument(
        "--track-photons",
        type=Path,
        default=None,
        help="event directory for Geant4's own hits (--mode track)",
    )
    g.add_argument(
        "--g4-log", dest="log", type=Path, default=None, help="file for Geant4's own output"
    )
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=run_gensteps)


def run_propagate(args: argparse.Namespace) -> int:
    from engine.geant4.run import propagate_torch

    if args.output is None and not args.timing:
        raise BadInput("-o DIR is required (or --timing)")
    meta = propagate_torch(
        scene_arg(args.scene),
        args.output,
        args.photons,
        args.seed,
        timing=args.timing,
        log=args.log,
        hitmask=args.hitmask,
    )
    if args.json:
        print(json.dumps(meta, sort_keys=True))
    else:
        g = meta["geant4"]
        print(
            f"Geant4 {g['version']}: {meta['photons']:,} photons tracked in "
            f"{g['tracking_cpu_seconds']:.2f} s CPU ({g['tracking_photons_per_cpu_second']:,.0f}"
            f" photons/s)" + (f" -> {args.output} ({meta['hits']:,} hits)" if args.output else "")
        )
    return 0


def run_gensteps(args: argparse.Namespace) -> int:
    from engine.geant4.run import Gun, collect_gensteps

    gun = Gun(args.particle, args.energy, args.position, args.direction, args.count)
    s = collect_gensteps(
        scene_arg(args.scene), args.output, gun, args.seed, args.mode, args.track_photons, args.log
    )
    if args.json:
        print(json.dumps(s, sort_keys=True))
    else:
        k = s["photons_by_kind"]
        print(
            f"Geant4 {s['geant4']['version']}: {s['primaries']} x {s['energy_mev']:g} MeV "
            f"{s['particle']} -> {s['gensteps']:,} gensteps, {k['CERENKOV']:,} Cerenkov + "
            f"{k['SCINTILLATION']:,} scintillation photons in {s['cpu_seconds']:.2f} s CPU"
            + (f" -> {s['file']}" if "file" in s else "")
        )
    return 0
