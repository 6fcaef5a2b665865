"""`skydeck-engine streams`: streams and their process instances (Pipeline-II statuses).

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

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


def _clock(v: Any, now: float) -> Callable[[Any], float]:
    """Where each instance's clock stops: now while its stream's runner lives. A stream whose
    runner is provably dead (STUCK) watches nothing: a local job died with its runner, so an
    instance still marked RUNNING there shows the last write of its log (its end as far as
    anyone knows), not a clock that keeps running. A batch job outlives its runner: now."""
    import os

    from engine.core.owner import owner_dead

    s = v.stream
    if s.status != "RUNNING" or s.owner_pid is None:
        return lambda pi: now
    if not owner_dead(s.owner_pid, s.owner_host, s.owner_start)[0]:
        return lambda pi: now

    def end(pi: Any) -> float:
        if pi.job_id or not pi.log_path:
            return now
        try:
            return min(now, os.stat(pi.log_path).st_mtime)
        except OSError:
            return pi.started or now

    return end


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from dataclasses import asdict

    from engine.api.alarms import acknowledgements
    from engine.api.listings import stream_views
    from engine.core.text import printable as pr
    from engine.core.workspace import Workspace

    ws = Workspace.open(args.workspace)
    views = stream_views(ws, args.dlid, latest_only=not args.all)
    now = time.time()
    acks = acknowledgements(ws, args.dlid)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "stream": asdict(v.stream),
                        # run time (started -> ended) and queue time (submitted -> started)
                        "instances": [
                            asdict(p)
                            | {"run_s": _r(p.run_s(clock(p))), "queue_s": _r(p.queue_s(now))}
                            for clock in [_clock(v, now)]
                            for p in v.instances
                        ],
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
        clock = _clock(v, now)
        if acks.get(s.id):
            print(f"  {pr(acks[s.id][-1].line())}")
        for pi in v.instances:
            # a batch job shows its job id (squeue's), a local one its pid
            where = f"job {pi.job_id:>7}" if pi.job_id else f"pid {pi.pid or '-':>7}"
            # run time, and the time it waited in a batch queue
            print(
                f"  {pr(pi.label):26s} e{pi.execution} {pi.status:10s} retry {pi.auto_retry}/"
                f"{pi.max_retries} {pr(where)} {_t(pi.started)}-{_t(pi.ended)} "
                f"run {_d(pi.run_s(clock(pi))):>4} queued {_d(pi.queue_s(now)):>4} "
                f"exit {pi.exit_code if pi.exit_code is not None else '-':>3} "
                f"{pr(pi.log_path or '')}{'  (' + pr(pi.note) + ')' if pi.note else ''}"
            )
    return 0
