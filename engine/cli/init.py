"""`skydeck-engine init`: create a workspace (docs/design.md, "Workspace").

``--state URL`` keeps the workspace's state in PostgreSQL (docs/design.md, "State on
PostgreSQL"): the schema is created there and a new skydeck.toml records the URL in
``[state] url`` (mode 0600 when the URL carries a password). An existing skydeck.toml is
never rewritten: one whose state is elsewhere is refused with what to do instead.

Its machinery is imported in ``run()``, not here: ``--help`` must stay light (test_startup).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from engine.cli import SUMMARY

if TYPE_CHECKING:
    from pathlib import Path

    from engine.core.dburl import StateURL


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help=SUMMARY["init"])
    p.add_argument(
        "--state",
        metavar="URL",
        help="keep the state in PostgreSQL at URL (postgresql://...; the schema "
        "is created there) instead of the SQLite file",
    )
    p.add_argument(
        "--json", action="store_true", help="print the workspace and its areas as one JSON object"
    )
    p.set_defaults(func=run)


def _write_config_with_url(cfg: Path, url: StateURL) -> None:
    """A new skydeck.toml: the packaged default with ``[state] url`` set to ``url``,
    written atomically (mode 0600 when the URL carries a password)."""
    import json
    import os

    from engine.core.errors import BadInput
    from engine.core.workspace import DEFAULT_CONFIG

    lines = DEFAULT_CONFIG.read_text(encoding="utf-8").splitlines(keepends=True)
    start = lines.index("[state]\n")
    at = next(i for i in range(start, len(lines)) if lines[i].startswith('url = ""'))
    lines[at] = f"url = {json.dumps(url.conninfo)}\n"
    try:
        cfg.parent.mkdir(parents=True, exist_ok=True)
        tmp = cfg.with_name(f".{cfg.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if url.password else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, cfg)
    except OSError as err:
        raise BadInput(f"cannot create workspace: {err.strerror}", err.filename or cfg) from None


def run(args: argparse.Namespace) -> int:
    import json

    from engine.core.dburl import parse_state_url
    from engine.core.errors import BadInput
    from engine.core.workspace import AREAS, CONFIG_NAME, init_workspace, resolve_root
    from engine.store import init_state

    url = parse_state_url(args.state, "--state") if args.state else None
    cfg = resolve_root(args.workspace) / CONFIG_NAME
    fresh_config = not cfg.exists()
    if url is not None and fresh_config:
        init_state(url)  # before any file: a URL that does not work leaves nothing behind
        _write_config_with_url(cfg, url)
    ws = init_workspace(args.workspace)
    if url is not None and not fresh_config and ws.settings.state.url != url.conninfo:
        raise BadInput(
            f"already a workspace, with its state in "
            f"{ws.state_url or ws.state_db}; to move it to {url.redacted}, "
            f"run `skydeck-engine db copy --to URL`",
            cfg,
        )
    init_state(url or ws.state)
    if args.json:
        print(
            json.dumps(
                {
                    "workspace": str(ws.root),
                    "state": url.redacted if url else str(ws.state_url or ws.state_db),
                    "areas": {area: str(ws.path(area)) for area in AREAS},
                }
            )
        )
        return 0
    print(f"workspace {ws.root}")
    for area in AREAS:
        print(f"  {area:16s} {ws.path(area)}")
    state = url or ws.state_url
    print(f"  {'state':16s} {state.redacted if state else ws.state_db}")
    return 0
