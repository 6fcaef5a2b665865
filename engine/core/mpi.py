"""The one MPI decision: whether this process was started by an MPI launcher, and its world
size, rank and node-local rank, read from the launcher's environment variables.

Before this module the builder, the propagation backends, the interrupt handler and the GPU
device choice each read their own subset of launcher variables, so ``build`` and
``propagate`` could disagree about whether they ran under MPI (under PMIx, for instance,
the builder distributed and propagate did not). Each question is answered here, once:

- ``launched()``: an MPI launcher started us (MPICH/Hydra ``PMI_*``/``MPI_LOCALNRANKS``,
  Open MPI ``OMPI_COMM_WORLD_*``, PMIx ``PMIX_RANK``, MVAPICH ``MV2_COMM_WORLD_*``);
- ``world_size_hint()`` / ``rank_hint()``: what those variables say, or Slurm's where srun
  is the launcher (a job step: ``SLURM_STEP_ID`` set), None when nothing says;
- ``local_rank()``: the node-local rank (GPU device choice), the first variable that has it.

None of these imports mpi4py (plain runs never initialise MPI); ``world()`` does, for code
that needs the communicator. A hint is only a hint: code that distributes work asks
``world()`` for the truth.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from engine.core.errors import BadInput

# set by an MPI launcher for each process it starts (Hydra sets MPI_LOCALNRANKS even
# where it passes PMI through a file descriptor)
LAUNCH_VARS = (
    "PMI_SIZE",
    "PMI_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "MPI_LOCALNRANKS",
    "MV2_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_RANK",
)
SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")
# srun is the launcher only inside a job step (a batch script has SLURM_* but no step)
SLURM_STEP = "SLURM_STEP_ID"
SLURM_SIZE, SLURM_RANK = "SLURM_STEP_NUM_TASKS", "SLURM_PROCID"
# node-local rank, as MPI launchers (Open MPI, MPICH/Hydra, PMI, MVAPICH) and Slurm's srun
# set it; first match wins
LOCAL_RANK_VARS = (
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MPI_LOCALRANKID",
    "PMI_LOCAL_RANK",
    "MV2_COMM_WORLD_LOCAL_RANK",
    "SLURM_LOCALID",
)


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _count(text: str) -> int | None:
    """A non-negative integer as a launcher writes it, else None."""
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None


def _first(env: Mapping[str, str], names: tuple[str, ...], slurm: str) -> int | None:
    for name in names:
        if name in env:
            return _count(env[name])
    if SLURM_STEP in env and slurm in env:
        return _count(env[slurm])
    return None


def launched(env: Mapping[str, str] | None = None) -> bool:
    """True when an MPI launcher (mpiexec/mpirun of MPICH, Open MPI, MVAPICH; PMI or PMIx,
    also through srun --mpi=...) started this process."""
    e = _env(env)
    return any(k in e for k in LAUNCH_VARS)


def srun_copies(env: Mapping[str, str] | None = None) -> int:
    """How many copies of this program ``srun`` started *without* MPI between them (plain
    ``srun -n K`` with ``MpiDefault=none``: K singletons, each a world of 1); 0 when that is
    not the case (no job step, one task, or an MPI launcher's variables are present)."""
    e = _env(env)
    if launched(e) or SLURM_STEP not in e:
        return 0
    n = _count(e.get(SLURM_SIZE, "")) or _count(e.get("SLURM_NTASKS", "")) or 0
    return n if n > 1 else 0


def world_size_hint(env: Mapping[str, str] | None = None) -> int | None:
    """The number of processes the launcher started, if a variable says so."""
    return _first(_env(env), SIZE_VARS, SLURM_SIZE)


def rank_hint(env: Mapping[str, str] | None = None) -> int | None:
    """This process's rank in the launch, if a variable says so."""
    return _first(_env(env), RANK_VARS, SLURM_RANK)


def local_rank(env: Mapping[str, str] | None = None) -> tuple[int, str | None]:
    """(node-local rank, the variable it came from); (0, None) outside a parallel launch.
    A value that is not a non-negative integer is BadInput naming the variable."""
    e = _env(env)
    for var in LOCAL_RANK_VARS:
        if var in e:
            rank = _count(e[var])
            if rank is None:
                raise BadInput(f"{var}={e[var]!r} is not a non-negative integer (node-local rank)")
            return rank, var
    return 0, None


def world() -> Any:  # mpi4py.MPI.Comm; mpi4py is optional
    """MPI's COMM_WORLD (imports mpi4py, which initialises MPI)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


def parallel_world(env: Mapping[str, str] | None = None) -> Any:  # mpi4py.MPI.Comm | None
    """COMM_WORLD when launched with more than one process, else None; mpi4py is imported
    only when launched and no variable says the world is a single process."""
    if not launched(env):
        return None
    size = world_size_hint(env)
    if size is not None and size < 2:
        return None
    comm = world()
    return comm if comm.Get_size() > 1 else None
