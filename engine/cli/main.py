"""`skydeck-engine`: the headless command line.

Each subcommand lives in its own module under ``engine.cli`` and registers itself
through ``register(subparsers, common)``; this module only parses, dispatches and turns
errors into the documented exit codes with one line on stderr.

Thousands of pipeline jobs start it, so it imports only the module of the command it runs:
the others are listed from ``engine.cli.SUMMARY`` by name and one-line help, and
``--help`` or ``--version`` import none (no NumPy, h5py, mpi4py or Rich).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from engine import __version__
from engine.cli import COMMAND_MODULES, SUMMARY
from engine.core import interrupt
from engine.core.errors import (
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOPERM,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    SkydeckError,
)

PROG = "skydeck-engine"

# `skydeck-engine --help`'s epilog: plain text from constants, so --help stays import-free
EPILOG = f"""\
exit codes:
  {EXIT_OK:<5d}success
  {EXIT_FAILED:<5d}a job failed mid-way (I/O error, full disk, a dead worker, a failed stream)
  {EXIT_USAGE:<5d}bad input or usage: one line on stderr names the file and the problem
  {EXIT_BUSY:<5d}busy or locked (another runner holds the stream, a lock is held)
  {EXIT_UNAVAILABLE:<5d}the state database cannot be reached now (a PostgreSQL restart or
       failover lasting longer than [state] wait_s): try again later
  {EXIT_NOPERM:<5d}permission denied: this user may not read or write a workspace file (one
       line names the file, the user and the workspace's group, or the PostgreSQL role
       whose grants refuse it); nothing was changed
  {EXIT_INTERRUPTED:<5d}interrupted (Ctrl-C, SIGINT)
  {interrupt.EXIT_TERMINATED:<5d}terminated (SIGTERM)

environment:
  SKYDECK_WORKSPACE      the workspace when -w is not given (else ./skydeck-workspace)
  SKYDECK_RESERVE_BYTES  free space to leave, for commands run outside a workspace
  SKYDECK_STATE_URL      the state in PostgreSQL (postgresql://...), over [state] url
  SKYDECK_KERNEL_CACHE   compiled GPU kernels (else $XDG_CACHE_HOME/skydeck/kernels,
                         else ~/.cache/skydeck/kernels)
  SKYDECK_NVRTC          the NVRTC library to compile the kernel with (else the
                         nvidia-cuda-nvrtc wheel, $CUDA_HOME, $CUDA_PATH, /usr/local/cuda)
  SKYDECK_KERNEL_COPY    0: the builder copies payloads without copy_file_range
  SKYDECK_LOG_FORMAT     auto, human or json when --log-format is not given (else auto:
                         human at a terminal, JSON lines otherwise)
  SKYDECK_LOG_LEVEL      debug, info, warning, error or critical when --log-level is not
                         given (else info)

`skydeck-engine COMMAND --help` for a command's options; README.md and docs/ for the rest.
"""


# engine/core/log.py's names, here so that --help and --version import no logging (a test
# checks they are the same)
LOG_FORMATS = ("auto", "human", "json")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def _log_format(text: str) -> str:
    from engine.core.log import parse_format

    return parse_format(text)


def _log_level(text: str) -> str:
    from engine.core.log import parse_level

    return parse_level(text)


def build_parser(only: str | None = None, everything: bool = True) -> argparse.ArgumentParser:
    """The whole parser; with ``everything=False`` only command ``only`` (if any) is imported
    and registered in full, the others by name and summary (they cannot run)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-w",
        "--workspace",
        default=argparse.SUPPRESS,
        help="workspace root (default: $SKYDECK_WORKSPACE, else ./skydeck-workspace)",
    )
    # log options: on every command too (`watch -q`), like -w; bad values are one line (exit 2)
    common.add_argument(
        "--log-format",
        type=_log_format,
        choices=LOG_FORMATS,
        default=argparse.SUPPRESS,
        help="event lines as text for people or JSON lines (default: "
        "$SKYDECK_LOG_FORMAT, else auto: human at a terminal, else json)",
    )
    common.add_argument(
        "--log-level",
        type=_log_level,
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS,
        metavar="LEVEL",
        help="least level shown: debug, info, warning, error, critical "
        "(default: $SKYDECK_LOG_LEVEL, else info)",
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="one level more (debug lines)",
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=argparse.SUPPRESS,
        help="one level less per -q (-q: warnings and errors, -qq: errors)",
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="skydeck headless engine: event building, propagation, pipeline, daemon.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        if everything or name == only:
            importlib.import_module(f"engine.cli.{name}").register(sub, common)
        else:
            sub.add_parser(name, parents=[common], help=SUMMARY[name])
    return parser


def command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names: its first word that is one, after the global options."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in ("-w", "--workspace", "--log-format", "--log-level"):
            skip = True  # its value may be a command's name
        elif word in SUMMARY:
            return word
        elif not word.startswith("-"):
            return None  # not a command: argparse says so
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    old = interrupt.install()  # SIGTERM and SIGINT: children stopped, temporaries removed
    try:
        # bounded number types raise BadInput: one line
        args = build_parser(command_in(argv), everything=False).parse_args(argv)
        if not hasattr(args, "func"):  # a command only listed: parse again with all of them
            args = build_parser().parse_args(argv)
        if not hasattr(args, "workspace"):
            args.workspace = None
        from engine.core.log import setup

        setup(
            getattr(args, "log_format", None),
            getattr(args, "log_level", None),
            getattr(args, "verbose", 0),
            getattr(args, "quiet", 0),
        )
        return int(args.func(args) or 0)
    except SkydeckError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return err.exit_code
    except PermissionError as err:  # a workspace file this user may not touch: one line
        from engine.core.groups import no_permission

        refusal = no_permission(err.filename)
        print(f"{PROG}: {refusal}", file=sys.stderr)
        return refusal.exit_code
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
