"""`skydeck-engine hits DIR [--vs DIR] [--json]`: hit summary of a propagation event.

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli import SUMMARY


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("hits", parents=[common], help=SUMMARY["hits"])
    p.add_argument("event", type=Path, help="event directory (ht.npy + meta.json)")
    p.add_argument("--vs", type=Path, default=None, help="second event: A/B chi2 comparison")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from engine.propagate.hits import compare, render_comparison, render_text, summarize

    summary = summarize(args.event)
    cmp_ = compare(args.event, args.vs) if args.vs is not None else None
    if args.json:
        doc = summary.to_dict()
        if cmp_ is not None:
            doc = {"a": doc, "comparison": cmp_.to_dict()}
        print(json.dumps(doc))
        return 0
    print(render_text(summary))
    if cmp_ is not None:
        print()
        print(render_comparison(cmp_))
    return 0
