"""engine.core.mpi, the one MPI decision, from each launcher's environment: the builder,
propagate, the interrupt line and the GPU device choice all ask it, so they agree."""

from __future__ import annotations

import sys

import pytest

from engine.core import interrupt, mpi
from engine.core.errors import BadInput
from engine.propagate.backends import mpi_world

ALL_VARS = {
    *mpi.LAUNCH_VARS,
    *mpi.SIZE_VARS,
    *mpi.RANK_VARS,
    *mpi.LOCAL_RANK_VARS,
    mpi.SLURM_STEP,
    mpi.SLURM_SIZE,
    mpi.SLURM_RANK,
    "SLURM_JOB_ID",
    "SLURM_NTASKS",
}

LAUNCHES = {  # launcher -> (what it sets for rank 2 of 4 on a node's second slot, launched)
    "hydra": (
        {"PMI_SIZE": "4", "PMI_RANK": "2", "MPI_LOCALNRANKS": "2", "MPI_LOCALRANKID": "1"},
        True,
    ),
    "openmpi": (
        {
            "OMPI_COMM_WORLD_SIZE": "4",
            "OMPI_COMM_WORLD_RANK": "2",
            "OMPI_COMM_WORLD_LOCAL_RANK": "1",
        },
        True,
    ),
    "mvapich": (
        {"MV2_COMM_WORLD_SIZE": "4", "MV2_COMM_WORLD_RANK": "2", "MV2_COMM_WORLD_LOCAL_RANK": "1"},
        True,
    ),
    "srun": (
        {
            "SLURM_JOB_ID": "9",
            "SLURM_STEP_ID": "0",
            "SLURM_STEP_NUM_TASKS": "4",
            "SLURM_PROCID": "2",
            "SLURM_LOCALID": "1",
        },
        False,
    ),  # srun --mpi=none: no MPI
}


@pytest.fixture(autouse=True)
def _no_launcher(monkeypatch):
    for var in ALL_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("name", LAUNCHES)
def test_each_launcher(name, monkeypatch):
    env, launched = LAUNCHES[name]
    assert mpi.launched(env) is launched
    assert (mpi.world_size_hint(env), mpi.rank_hint(env)) == (4, 2)
    assert mpi.local_rank(env) == (1, next(v for v in mpi.LOCAL_RANK_VARS if v in env))
    for k, v in env.items():  # the same from os.environ
        monkeypatch.setenv(k, v)
    assert mpi.launched() is launched and mpi.rank_hint() == 2
    assert not interrupt.speaks_for_the_job()  # only rank 0 prints the job's line


def test_a_plain_process(monkeypatch):
    assert not mpi.launched() and mpi.world_size_hint() is None and mpi.rank_hint() is None
    assert mpi.local_rank() == (0, None) and interrupt.speaks_for_the_job()
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # an import would raise
    assert mpi_world() is None  # propagate's question: never initialises MPI


def test_pmix_alone_is_launched_and_rank_0_speaks():
    env = {"PMIX_RANK": "0"}
    assert mpi.launched(env) and mpi.rank_hint(env) == 0 and mpi.world_size_hint(env) is None


def test_a_slurm_batch_script_is_no_launch():
    """sbatch's script has SLURM_* but no step: srun is not its launcher."""
    env = {"SLURM_JOB_ID": "9", "SLURM_NTASKS": "4", "SLURM_PROCID": "0"}
    assert not mpi.launched(env) and mpi.world_size_hint(env) is None and mpi.rank_hint(env) is None


def test_an_mpi_launchers_variables_win_over_slurms():
    env = {
        "PMI_SIZE": "2",
        "PMI_RANK": "1",
        "SLURM_STEP_ID": "0",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_PROCID": "5",
    }
    assert (mpi.world_size_hint(env), mpi.rank_hint(env)) == (2, 1)


def test_a_single_process_world_never_imports_mpi4py(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # an import would raise
    assert mpi.parallel_world({"PMI_SIZE": "1", "PMI_RANK": "0"}) is None
    assert mpi.parallel_world({}) is None
    with pytest.raises(ImportError):
        mpi.parallel_world({"PMIX_RANK": "0"})  # size unknown: MPI is asked


@pytest.mark.parametrize("value", ["", "x", "-1", "1.5", "١", "9" * 10])
def test_odd_values_are_no_hint_and_a_bad_local_rank_is_bad_input(value):
    env = {"PMI_SIZE": value, "PMI_RANK": value, "MPI_LOCALRANKID": value}
    assert mpi.launched(env) and mpi.world_size_hint(env) is None and mpi.rank_hint(env) is None
    with pytest.raises(BadInput, match=r"^MPI_LOCALRANKID=.* is not a non-negative integer"):
        mpi.local_rank(env)


def test_srun_copies_without_mpi_between_them():
    """`srun -n 4 skydeck-engine build` with MpiDefault=none: four singletons (the trap)."""
    step = {"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "2"}
    assert mpi.srun_copies(step) == 4
    assert mpi.srun_copies({**step, "SLURM_STEP_NUM_TASKS": "1"}) == 0  # one task: fine
    assert mpi.srun_copies({**step, "PMI_RANK": "2", "PMI_SIZE": "4"}) == 0  # srun --mpi=pmi2
    batch_script = {"SLURM_NTASKS": "4", "SLURM_JOB_ID": "7"}  # no job step
    assert mpi.srun_copies(batch_script) == 0
    assert mpi.srun_copies({}) == 0
    assert mpi.srun_copies({"SLURM_STEP_ID": "0", "SLURM_NTASKS": "3"}) == 3
    assert mpi.srun_copies({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "x"}) == 0
