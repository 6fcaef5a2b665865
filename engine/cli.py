"""`skydeck-engine`: the headless command line.

Each subcommand lives in its own module under ``engine.commands`` and registers itself
through ``register(subparsers, common)``; this module only parses, dispatches and turns
errors into the documented exit codes with one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from engine import __version__, interrupt
from engine.commands import COMMAND_MODULES
from engine.errors import EXIT_USAGE, SkydeckError

PROG = "skydeck-engine"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-w",
        "--workspace",
        default=argparse.SUPPRESS,
        help="workspace root (default: $SKYDECK_WORKSPACE, else ./skydeck-workspace)",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="skydeck headless engine: event building, propagation, pipeline, daemon.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"engine.commands.{name}").register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    old = interrupt.install()  # SIGTERM and SIGINT: children stopped, temporaries removed
    try:
        args = parser.parse_args(argv)  # bounded number types raise BadInput: one line
        if not hasattr(args, "workspace"):
            args.workspace = None
        return int(args.func(args) or 0)
    except SkydeckError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt as err:
        interrupt.stop_children()
        what = "terminated" if isinstance(err, interrupt.Terminated) else "interrupted"
        if interrupt.speaks_for_the_job():
            print(f"{PROG}: {what}", file=sys.stderr)
        return interrupt.exit_code(err)
    except BrokenPipeError:
        return EXIT_USAGE
    finally:
        interrupt.restore(old)


if __name__ == "__main__":
    sys.exit(main())
