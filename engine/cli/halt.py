"""`skydeck-engine halt FLAG [DLID]` and `resume FLAG [DLID]`: set and clear halt flags.

A halt flag holds part of the pipeline, for every downlink (the file ``[paths] flags``/FLAG)
or for one (``downlinks/<DLID>/FLAG``); each flag's meaning is listed in ``--help`` from
``engine.pipeline.halts.HALT_MEANING``. Setting one sends the ``halt_set`` alert
(``[alerts] command``); ``health`` fails while a global one is set.

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse

from engine.cli import halt_parser


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    halt_parser(sub, common, "halt").set_defaults(func=run_halt)


def run_halt(args: argparse.Namespace) -> int:
    from engine.api.alarms import set_halt
    from engine.core.workspace import Workspace

    ws = Workspace.open(args.workspace)
    p = set_halt(ws, args.flag, args.dlid, wait=True)
    if args.json:
        import json

        print(json.dumps({"flag": args.flag, "dlid": args.dlid, "set": True, "path": str(p)}))
        return 0
    print(f"{args.flag} set {'for ' + args.dlid if args.dlid else 'globally'} ({p})")
    return 0
