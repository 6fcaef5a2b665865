"""`skydeck-engine completion bash|zsh`: the shell completion script, generated from the parser.

Generated, not written by hand, so that it never lags behind a new command or option: shtab
walks the same ``argparse`` parser that runs the commands (``engine.cli.main.build_parser``,
every command registered). Options that take a path complete file names, ``-w`` a directory.
shtab is imported in ``script()`` only, so ``--help`` and every other command never load it.

    skydeck-engine completion bash > ~/.local/share/bash-completion/completions/skydeck-engine
    skydeck-engine completion zsh > "${fpath[1]}/_skydeck-engine"
"""

from __future__ import annotations

import argparse

from engine.cli import SUMMARY

SHELLS = ("bash", "zsh")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("completion", parents=[common], help=SUMMARY["completion"])
    p.add_argument("shell", choices=SHELLS, help="the shell the script is for")
    p.set_defaults(func=run)


def _walk(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every action of ``parser`` and of its subcommands' parsers, each once."""
    seen: dict[int, argparse.Action] = {}
    todo = [parser]
    while todo:
        p = todo.pop()
        for action in p._actions:
            seen.setdefault(id(action), action)
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    return list(seen.values())


def script(shell: str) -> str:
    """The completion script for ``shell`` (one of ``SHELLS``)."""
    from pathlib import Path

    import shtab  # here only: no other command pays for it

    from engine.cli.main import PROG, build_parser

    parser = build_parser()
    assert parser.prog == PROG  # the name the script completes, whatever sys.argv[0] is
    for action in _walk(parser):
        if action.dest == "workspace":
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
        elif action.type is Path:
            action.complete = shtab.FILE  # type: ignore[attr-defined]
    return shtab.complete(parser, shell=shell)


def run(args: argparse.Namespace) -> int:
    import sys

    sys.stdout.write(script(args.shell))
    return 0
