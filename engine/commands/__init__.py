"""Subcommands of `skydeck-engine`, one module each, in the order `--help` lists them.

A module provides ``register(subparsers, common)``: it adds its parser (with ``common`` as a
parent, for ``-w``) and sets ``func`` to a callable taking the parsed args and returning the
exit code.
"""

COMMAND_MODULES: list[str] = [
    "init",
    "mock",
    "build",
    "verify",
    "propagate",
    "kernel",
    "hits",
    "downlinks",
    "streams",
    "locks",
    "unlock",
    "stage",
    "run",
    "rollback",
    "watch",
]
