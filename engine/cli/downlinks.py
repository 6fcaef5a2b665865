"""`skydeck-engine downlinks`: registered downlinks, pending and rejected deliveries.

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse

from engine.cli import SUMMARY


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("downlinks", parents=[common], help=SUMMARY["downlinks"])
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from engine.api.listings import downlink_listing, downlink_note
    from engine.core.text import printable as pr
    from engine.core.workspace import Workspace

    ws = Workspace.open(args.workspace)
    listing = downlink_listing(ws)
    dls, streams = listing.downlinks, listing.streams
    rejected, pending = listing.rejected, listing.pending
    if args.json:
        print(
            json.dumps(
                {
                    "downlinks": [
                        d.__dict__
                        | {
                            "stream": streams[d.dlid].status if d.dlid in streams else None,
                            # the stream's note: why it failed (the job's error line)
                            "note": streams[d.dlid].note if d.dlid in streams else None,
                        }
                        for d in dls
                    ],
                    "rejected": [r.__dict__ for r in rejected],
                    "pending": [p.__dict__ for p in pending],
                    "rejected_files": listing.rejected_files,
                },
                indent=1,
            )
        )
        return 0
    print(
        f"{'DOWNLINK':10s} {'FORM':6s} {'CHUNKS':>6s} {'GENSTEPS':8s} {'STREAM':10s} "
        f"{'REGISTERED':19s} NOTE"
    )
    for d in dls:
        st = streams.get(d.dlid)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.registered))
        print(
            f"{pr(d.dlid):10s} {pr(d.kind):6s} {d.chunks:6d} {'yes' if d.gensteps else 'no':8s} "
            f"{pr(st.status) if st else '-':10s} {when} "
            f"{pr(note) if (note := downlink_note(ws, d.dlid, st)) else ''}".rstrip()
        )
    for p in pending:
        print(f"PENDING  {pr(p.name)}: {pr(p.reason)}")
    for r in rejected:
        print(f"REJECTED {pr(r.name)}: {pr(r.reason)} -> {pr(r.path)}")
    return 0
