"""Device choice per MPI rank or Slurm task: the node-local rank (from the launcher's
variable) modulo the devices this process can see, so CUDA_VISIBLE_DEVICES, which limits
what it sees, is respected; before this every rank took device 0."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import BadInput
from engine.core.mpi import LOCAL_RANK_VARS, local_rank
from engine.propagate.gpu_host import choose_device
from tests.props import total


def test_outside_a_parallel_launch_device_0():
    assert choose_device(4, {}) == (0, "device 0 of 4 visible")


@pytest.mark.parametrize("var", LOCAL_RANK_VARS)
def test_each_launcher_variable_gives_the_local_rank(var):
    assert choose_device(4, {var: "6"}) == (2, f"device 2 of 4 visible, {var}={6}")


def test_first_variable_wins_and_visible_devices_are_counted():
    env = {"OMPI_COMM_WORLD_LOCAL_RANK": "1", "SLURM_LOCALID": "3", "CUDA_VISIBLE_DEVICES": "2,3"}
    assert choose_device(2, env) == (
        1,
        "device 1 of 2 visible (CUDA_VISIBLE_DEVICES=2,3), OMPI_COMM_WORLD_LOCAL_RANK=1",
    )
    # one device bound per task (srun --gpus-per-task=1): every task takes its only one
    assert choose_device(1, {"SLURM_LOCALID": "5", "CUDA_VISIBLE_DEVICES": "5"})[0] == 0


def test_ranks_spread_over_devices():
    picks = [choose_device(4, {"MPI_LOCALRANKID": str(r)})[0] for r in range(8)]
    assert picks == [0, 1, 2, 3, 0, 1, 2, 3]


@pytest.mark.parametrize("value", ["", "-1", "x", "1.5", "١"])
def test_a_bad_local_rank_names_the_variable(value):
    with pytest.raises(BadInput, match=r"^SLURM_LOCALID=.* is not a non-negative integer"):
        local_rank({"SLURM_LOCALID": value})


@given(st.sampled_from(LOCAL_RANK_VARS), st.text(max_size=12), st.integers(1, 16))
def test_local_rank_is_total(var, value, count):
    r = total(choose_device, count, {var: value})
    assert isinstance(r, BadInput) or 0 <= r[0] < count
