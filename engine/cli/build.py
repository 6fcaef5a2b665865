"""`skydeck-engine build`: the event builder (plain, or under `mpiexec -n K`).

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.builder.limits import MAX_BATCH
from engine.cli import SUMMARY
from engine.cli.numbers import INT64_MAX, int_in


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "build",
        parents=[common],
        help=SUMMARY["build"],
        description="Match every source to the selected principal events by timestamp and write "
        "built events (one HDF5 file). Under `mpiexec -n K`, rank 0 plans and K-1 "
        "workers read and write.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="source *.h5 files, or directories holding them",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="built-events HDF5 file")
    p.add_argument(
        "--select", default=None, help='selection over small data, e.g. \'color == "red"\''
    )
    p.add_argument(
        "--batch",
        type=int_in("--batch", 1, MAX_BATCH),
        default=64,
        help="events per batch handed to a worker",
    )
    p.add_argument("--timestamp-path", default="/timestamp")
    p.add_argument("--data-path", default="/data")
    p.add_argument("--smalldata-path", default="/smalldata")
    p.add_argument("--principal", default=None, help="principal source name (file stem)")
    p.add_argument(
        "--retdef",
        type=Path,
        default=None,
        help="build only the principal events inside this RetDef's spans",
    )
    p.add_argument(
        "--index-out", type=Path, default=None, help="save the match table (.h5 or .npz)"
    )
    p.add_argument("--index-in", type=Path, default=None, help="reuse a saved match table")
    # negative: start although the projection does not fit (tests fill a disk mid-job so)
    p.add_argument(
        "--reserve",
        type=int_in("--reserve", -INT64_MAX, INT64_MAX),
        default=None,
        help="bytes to keep free (default $SKYDECK_RESERVE_BYTES or 0)",
    )
    p.add_argument(
        "--io-threads",
        type=int_in("--io-threads", 0, 1024),
        default=0,
        help="threads per process copying rows (default: the cores, 1 per MPI worker)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="never draw a progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from engine.builder.build import build, is_rank0
    from engine.builder.options import BuildOptions
    from engine.core.diskspace import env_reserve, human_bytes
    from engine.core.progress import progress

    opt = BuildOptions(
        inputs=args.inputs,
        output=args.output,
        select=args.select,
        batch=args.batch,
        timestamp_path=args.timestamp_path,
        data_path=args.data_path,
        smalldata_path=args.smalldata_path,
        principal=args.principal,
        retdef=args.retdef,
        index_in=args.index_in,
        index_out=args.index_out,
        reserve=env_reserve() if args.reserve is None else args.reserve,
        io_threads=args.io_threads,
    )
    show = is_rank0() and sys.stderr.isatty() and not args.no_progress and not args.json
    # the total is known only after planning; rank 0 sets it then
    with progress(None, "build", enabled=show) as bar:
        report = build(opt, progress=bar)
    if report is None:  # a worker rank
        return 0
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print(
            f"built {report.events} events from {len(report.sources)} sources "
            f"({', '.join(report.sources)}) -> {report.output}"
        )
        print(
            f"  ranks {report.ranks} (workers {report.workers}), batch {report.batch}, "
            f"batches {report.batches}"
        )
        print(
            f"  read {human_bytes(report.bytes_read)} in {report.elapsed_s:.3f} s (slowest rank): "
            f"{report.events_per_s:,.0f} events/s, {report.gb_per_s:.2f} GB/s"
        )
    return 0
