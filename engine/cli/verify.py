"""`skydeck-engine verify`: check built events against their source files.

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli import SUMMARY


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("verify", parents=[common], help=SUMMARY["verify"])
    p.add_argument("files", nargs="+", type=Path, metavar="BUILT")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from engine.builder.verify import verify_built

    code = 0
    for f in args.files:
        rep = verify_built(f)
        if args.json:
            print(json.dumps(rep.to_dict()))
        elif rep.ok:
            print(
                f"{f}: OK, {rep.events} events, {rep.rows_checked} source rows checked "
                f"({rep.payload_scheme_checked} against their timestamp) in {', '.join(rep.sources)}"
            )
        else:
            for p in rep.problems:
                print(f"{f}: {p}")
        code = code or (0 if rep.ok else 1)
    return code
