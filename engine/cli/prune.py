"""`skydeck-engine prune [--dry-run] [--json]`: apply the workspace's retention policy now.

Why a command of its own: the daemon prunes every ``[retention] interval_s``, but an
operator short of space, a cron job on a workspace without a daemon, or someone checking a
new policy (``--dry-run``) needs the same thing by hand. It prints every file it removes
(or would), the events rows, what it kept back and why, and the bytes per area; exit 0
(a file that could not be removed is listed under its error, and left).

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from engine.cli import SUMMARY

if TYPE_CHECKING:
    from engine.pipeline.retention import AreaTotal, PruneCandidate


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "prune",
        parents=[common],
        help=SUMMARY["prune"],
        description="Remove what [retention] in skydeck.toml lets go: logs, "
        "events rows, fcopy packages kept after extraction, chunk outputs "
        "finished streams left, rejected deliveries; never a staged file, a "
        "file the engine did not write, or anything of a stream in progress.",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _what(c: PruneCandidate) -> str:
    if c.path is None:
        return f"events rows {c.first_id}..{c.last_id} ({c.rows} rows)"
    return c.path + ("/" if c.is_dir else "")


def _table(areas: dict[str, AreaTotal]) -> list[str]:
    from engine.core.diskspace import human_bytes

    lines = [f"{'AREA':14s} {'FILES':>7s} {'ROWS':>9s} {'BYTES':>10s}"]
    for area, t in areas.items():
        lines.append(f"{area:14s} {t.files:7d} {t.rows:9d} {human_bytes(t.bytes):>10s}")
    total = sum(t.bytes for t in areas.values())
    lines.append(f"{'total':14s} {'':7s} {'':9s} {human_bytes(total):>10s}")
    return lines


def run(args: argparse.Namespace) -> int:
    import json

    from engine.core.diskspace import human_bytes
    from engine.core.workspace import Workspace
    from engine.pipeline.retention import prune

    ws = Workspace.open(args.workspace)
    plan, res = prune(ws, dry_run=args.dry_run)
    if args.json:
        doc = (
            plan.to_json()
            if res is None
            else res.to_json()
            | {"areas": {a: t.to_json() for a, t in res.totals().items()}, "notes": plan.notes}
        )
        print(json.dumps({"dry_run": res is None} | doc, indent=1))
        return 0
    done = plan.candidates if res is None else res.removed
    verb = "would remove" if res is None else "removed"
    for c in done:
        print(f"{verb} {c.area:13s} {human_bytes(c.bytes):>10s}  {_what(c)}  ({c.reason})")
    if not done:
        print(
            f"nothing to {'remove' if res is None else 'prune'} under the retention policy "
            "([retention] in skydeck.toml)"
        )
    for note in plan.notes:
        print(f"kept: {note}")
    if res is not None:
        for c, why in res.kept:
            print(f"kept {_what(c)}: {why}")
        for c, err in res.failed:
            print(f"could not remove {_what(c)}: {err}")
    print()
    print("\n".join(_table(plan.totals() if res is None else res.totals())))
    return 0
