"""`skydeck-engine streams`: streams and their process instances (Pipeline-II statuses).

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse

from engine.cli import SUMMARY


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("streams", parents=[common], help=SUMMARY["streams"])
    p.add_argument("dlid", nargs="?", default=None, help="only this downlink")
    p.add_argument("--all", action="store_true", help="all executions, not only the latest")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _t(x: float | None) -> str:
    import time

    return time.strftime("%H:%M:%S", time.localtime(x)) if x else "-"


def run(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from engine.api.alarms import acknowledgements
    from engine.api.listings import stream_views
    from engine.core.text import printable as pr
    from engine.core.workspace import Workspace

    ws = Workspace.open(args.workspace)
    views = stream_views(ws, args.dlid, latest_only=not args.all)
    acks = acknowledgements(ws, args.dlid)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "stream": asdict(v.stream),
                        "instances": [asdict(p) for p in v.instances],
                        "counts": v.counts(),
                        "acknowledgements": [asdict(a) for a in acks.get(v.stream.id, [])],
                    }
                    for v in views
                ],
                indent=1,
                default=str,
            )
        )
        return 0
    if not views:
        print("no streams")
    for v in views:
        s = v.stream
        counts = " ".join(f"{k}={n}" for k, n in sorted(v.counts().items()))
        # notes, hosts, paths: from outside, escaped (engine/core/text.py)
        print(
            f"{pr(s.dlid)} exec {s.execution} {pr(s.status):10s} {counts}"
            f"{'  owner ' + pr(s.owner_host) + ':' + str(s.owner_pid) if s.owner_pid else ''}"
            f"{'  ' + pr(s.note) if s.note else ''}"
        )
        if acks.get(s.id):
            print(f"  {pr(acks[s.id][-1].line())}")
        for pi in v.instances:
            # a batch job shows its job id (squeue's), a local one its pid
            where = f"job {pi.job_id:>7}" if pi.job_id else f"pid {pi.pid or '-':>7}"
            print(
                f"  {pr(pi.label):26s} e{pi.execution} {pi.status:10s} retry {pi.auto_retry}/"
                f"{pi.max_retries} {pr(where)} {_t(pi.started)}-{_t(pi.ended)} "
                f"exit {pi.exit_code if pi.exit_code is not None else '-':>3} "
                f"{pr(pi.log_path or '')}{'  (' + pr(pi.note) + ')' if pi.note else ''}"
            )
    return 0
