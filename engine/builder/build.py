"""The event builder: match sources by timestamp, select, and write built events.

Done the way the trilogy's authors wished it were (docs/eventbuilder.md A.4),
in parts that each do one thing:

- ``options``: what a build is asked (``BuildOptions``; ``MAX_BATCH`` from ``limits``);
- ``plan``: rank 0 validates the inputs and reads only timestamps and small data, selects
  events (``select``), matches every source with a sorted search (``match``);
- ``output``: it creates the output file with all metadata and the small datasets, and the
  payload datasets *contiguous and allocated up front* (fill never, so the file is sparse);
  at the end it fsyncs the file and renames it into place;
- ``batchio``: a worker reads the rows of a batch in coalesced, chunk-aligned runs (or has
  the kernel copy them) and writes them straight to their place in the output with
  ``pwrite`` at the dataset's byte offset. No HDF5 metadata is touched after the output was
  created, so any number of writers is safe, and the result is one self-contained file,
  identical for 1, 2 or K ranks and any batch size;
- ``protocol``: who does what: one process, or MPI ranks in named roles (planner,
  dispatcher handing out batches to workers that ask, workers, committer);
- ``report``: the summary and the wall time of each phase (``build --json``).

This module is the entry point that composes them. The output is written under a
temporary name and renamed on success; any failure removes it.
"""

from __future__ import annotations

from engine.builder.options import BuildOptions, check_batch
from engine.builder.protocol import run_mpi, run_serial
from engine.builder.report import BuildReport, PhaseClock
from engine.core import mpi
from engine.core.errors import BadInput
from engine.core.progress import Progress


def build(opt: BuildOptions, progress: Progress | None = None) -> BuildReport | None:
    """Build events; under mpiexec the job is distributed. Returns the report (rank 0);
    its ``wall_s`` and ``phases`` are timed from this call."""
    clock = PhaseClock()
    check_batch(opt.batch)
    copies = mpi.srun_copies()
    if copies:  # K single-rank builds would race on one output
        raise BadInput(
            f"srun started {copies} separate copies of this build (no MPI between them: each "
            f"is a world of 1), which would race on {opt.output}; run `srun --mpi=pmi2 -n "
            f"{copies} skydeck-engine build ...` (the mpich wheel) or `mpiexec -n {copies} "
            "skydeck-engine build ...` inside the allocation (contrib/slurm/build.sbatch)"
        )
    if mpi.launched():
        return run_mpi(opt, progress, clock)
    return run_serial(opt, progress, clock)


def is_rank0() -> bool:
    if not mpi.launched():
        return True
    return int(mpi.world().Get_rank()) == 0
