"""Subcommands of `skydeck-engine`, one module each, in the order `--help` lists them.

A module provides ``register(subparsers, common)``: it adds its parser (with ``common`` as a
parent, for ``-w``) and sets ``func`` to a callable taking the parsed args and returning the
exit code. ``SUMMARY`` holds each command's one-line help, so that ``skydeck-engine --help``
(and ``--version``) imports no command module, hence no NumPy, h5py, mpi4py or Rich: the
CLI imports only the module of the command it runs (``engine.cli.main``).
"""

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
    "locks": "list lock files and whether they are stale",
    "unlock": "remove a stale lock (or a live one with --force)",
    "stage": "disk usage per area and downlink; free space",
    "prune": "remove what the retention policy lets go (logs, events, fcopy, orphan chunks)",
    "run": "run one downlink's stream in the foreground",
    "rollback": "re-run process instances (and everything downstream) as new executions",
    "watch": "watch incoming/ and run a stream per new downlink (daemon)",
    "health": "probe: exit 0 when healthy (daemon alive, not paused, nothing stuck), 1 if not",
    "db": "the state database: `db copy --to URL` moves the SQLite state into PostgreSQL",
    "completion": "print the shell completion script (bash or zsh)",
}

COMMAND_MODULES: list[str] = list(SUMMARY)
