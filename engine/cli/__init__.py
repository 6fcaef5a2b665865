"""Subcommands of `skydeck-engine`, one module each, in the order `--help` lists them.

A module provides ``register(subparsers, common)``: it adds its parser (with ``common`` as a
parent, for ``-w``) and sets ``func`` to a callable taking the parsed args and returning the
exit code. ``SUMMARY`` holds each command's one-line help, so that ``skydeck-engine --help``
(and ``--version``) imports no command module, hence no NumPy, h5py, mpi4py or Rich: the
CLI imports only the module of the command it runs (``engine.cli.main``).
"""

from typing import Any

# name -> the one line `skydeck-engine --help` lists: here, so that listing imports no command
SUMMARY: dict[str, str] = {
    "init": "create the workspace layout",
    "config": "print the effective settings (skydeck.toml over the defaults)",
    "mock": "write a mock delivery (HDF5 sources + RetDefs)",
    "build": "build events from level-0 source files (MPI-aware)",
    "verify": "verify built events (rows, timestamps, payloads) against their sources",
    "propagate": "propagate optical photons through a scene; keep hits (+ metadata)",
    "geometry": "check a GDML detector: overlaps and extrusions, volumes, sensors",
    "geant4": "Geant4 on a scene: reference photon histories, gensteps of a particle gun",
    "kernel": "the GPU propagation kernel",
    "hits": "summarize the hits of a propagation event (A/B with --vs)",
    "downlinks": "list downlinks (registered deliveries) and rejected deliveries",
    "streams": "list streams and process instances",
    "logs": "search the logs (the daemon's events, process and console-job logs) by pattern",
    "locks": "list lock files and whether they are stale",
    "unlock": "remove a stale lock or one whose holder is frozen (a live one with --force)",
    "stage": "disk usage per area and downlink; free space",
    "prune": "remove what the retention policy lets go (logs, events, fcopy, orphan chunks)",
    "run": "run one downlink's stream in the foreground",
    "rollback": "re-run process instances (and everything downstream) as new executions",
    "watch": "watch incoming/ and run a stream per new downlink (daemon)",
    "ack": "acknowledge a FAILED or STUCK stream's alarm (who and why are recorded)",
    "halt": "set a halt flag (globally or for one downlink): hold part of the pipeline",
    "resume": "clear a halt flag",
    "health": "probe: exit 0 when healthy (daemon alive, not paused, nothing stuck), 1 if not",
    "db": "the state database: `db copy --to URL` moves the SQLite state into PostgreSQL",
    "completion": "print the shell completion script (bash or zsh)",
}

COMMAND_MODULES: list[str] = list(SUMMARY)

# engine.pipeline.halts.HALT_MEANING, here so that `halt --help` imports nothing (a test
# checks they are the same)
HALT_FLAGS_HELP: dict[str, str] = {
    "haltStage": "mergeEvt (staging) is held: chunks are built, no run is merged or staged",
    "haltCleanup": "cleanup is held: a downlink's intermediates (chunk outputs) are kept",
    "haltPropagate": "propagate is held: no GPU photon propagation starts",
    "halted": "no new stream starts: deliveries are registered and wait as arrived; "
    "running streams go on",
}


def halt_parser(sub: Any, common: Any, name: str) -> Any:
    """The parser of ``halt`` or ``resume``: FLAG [DLID], each flag's meaning in the epilog."""
    import argparse

    lines = ["flags:"] + [f"  {f:14s}{m}" for f, m in HALT_FLAGS_HELP.items()]
    lines += [
        "",
        "Without DLID the flag holds every downlink (the file [paths] flags/FLAG, by default",
        "config/FLAG); with DLID only that one (downlinks/DLID/FLAG). A held process waits",
        "(its note names the flag) and goes on after `resume`. Setting a flag sends the",
        "halt_set alert ([alerts] command); `health` fails while a global flag is set.",
    ]
    p = sub.add_parser(
        name,
        parents=[common],
        help=SUMMARY[name],
        epilog="\n".join(lines),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "flag", choices=list(HALT_FLAGS_HELP), metavar="FLAG", help=", ".join(HALT_FLAGS_HELP)
    )
    p.add_argument("dlid", nargs="?", default=None, help="only this downlink (default: all)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p
