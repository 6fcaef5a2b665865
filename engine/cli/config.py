"""`skydeck-engine config [--json]`: the effective settings of a workspace.

skydeck.toml holds only what differs from the defaults (or a copy of them that may be old);
what the engine actually uses is the file merged over the defaults of
``engine.core.settings``, with ``[paths]`` resolved against the workspace root. This command
prints exactly that, so an operator need not reconstruct it from the file, the packaged
defaults and the resolution rules. Opening the workspace checks the file: an unknown section
or key, or a bad value, is exit 2 with one line, as for every other command. The state URL
is the one in effect (``$SKYDECK_STATE_URL`` over the file), its password shown as ``***``.

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from engine.cli import SUMMARY

if TYPE_CHECKING:
    from engine.core.workspace import Workspace


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser("config", parents=[common], help=SUMMARY["config"])
    p.add_argument(
        "--json", action="store_true", help="print one JSON object {section: {key: value}}"
    )
    p.set_defaults(func=run)


def effective(ws: Workspace) -> dict[str, dict[str, Any]]:
    """{section: {key: value}} of every key, ``[paths]`` as absolute paths."""
    out = ws.settings.as_dict()
    out["paths"] = {area: str(ws.path(area)) for area in out["paths"]}
    url = ws.state_url  # $SKYDECK_STATE_URL wins; a password is never printed
    out["state"]["url"] = url.redacted if url else ""
    return out


def run(args: argparse.Namespace) -> int:
    import json

    from engine.core.settings import toml_value
    from engine.core.workspace import CONFIG_NAME, Workspace

    ws = Workspace.open(args.workspace)
    settings = effective(ws)
    if args.json:
        print(json.dumps(settings, indent=1))
        return 0
    print(f"# effective settings: {ws.root / CONFIG_NAME} over the packaged defaults")
    for section, table in settings.items():
        print(f"\n[{section}]")
        for key, value in table.items():
            print(f"{key} = {toml_value(value)}")
    return 0
