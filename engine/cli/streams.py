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


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _d(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f}s" if x < 600 else f"{x / 60:.0f}m"


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from dataclasses import asdict

    from engine.api.listings import stream_views
    from engine.core.workspace import Workspace

    ws = Workspace.open(args.workspace)
    views = stream_views(ws, args.dlid, latest_only=not args.all)
    now = time.time()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "stream": asdict(v.stream),
                        # run time (started -> ended) and queue time (submitted -> started)
                        "instances": [
                            asdict(p) | {"run_s": _r(p.run_s(now)), "queue_s": _r(p.queue_s(now))}
                            for p in v.instances
                        ],
                        "counts": v.counts(),
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
        print(
            f"{s.dlid} exec {s.execution} {s.status:10s} {counts}"
            f"{'  owner ' + str(s.owner_host) + ':' + str(s.owner_pid) if s.owner_pid else ''}"
            f"{'  ' + s.note if s.note else ''}"
        )
        for pi in v.instances:
            # a batch job shows its job id (squeue's), a local one its pid
            where = f"job {pi.job_id:>7}" if pi.job_id else f"pid {pi.pid or '-':>7}"
            # run time, and the time it waited in a batch queue
            print(
                f"  {pi.label:26s} e{pi.execution} {pi.status:10s} retry {pi.auto_retry}/"
                f"{pi.max_retries} {where} {_t(pi.started)}-{_t(pi.ended)} "
                f"run {_d(pi.run_s(now)):>4} queued {_d(pi.queue_s(now)):>4} "
                f"exit {pi.exit_code if pi.exit_code is not None else '-':>3} "
                f"{pi.log_path or ''}{'  (' + pi.note + ')' if pi.note else ''}"
            )
    return 0
