"""Mixed precision under mpiexec -n 2: float16 shadows on each rank, float32 masters all-reduced.

The gradient sum over the micro-batches is made in the float32 masters on either side, the
all-reduce averages float32 masters' gradients, and the unscale + overflow check runs after it, so
2 ranks x accumulation 1 must give what 1 process x accumulation 2 gives, as in float32.
"""

from __future__ import annotations

from test_distributed import (  # noqa: F401 (prepared is a fixture)
    TRAIN,
    largest_relative_difference,
    one_process,
    prepared,
    run_mpiexec,
    write_job,
)

from tinyllm.checkpoint import load_checkpoint

HALF = TRAIN | {"dtype": "float16"}


def test_two_float16_ranks_give_one_float16_process_with_twice_the_accumulation(prepared, tmp_path):  # noqa: F811
    job = write_job(tmp_path, prepared, train=HALF, runs=[{"name": "h"}])
    result = run_mpiexec(["tests/mpi_worker.py", str(job)])
    assert result.returncode == 0, result.stdout + result.stderr
    two_ranks = tmp_path / "out" / "h" / "rank0" / "last"

    one = one_process(prepared, tmp_path / "one", train=HALF)

    state = load_checkpoint(two_ranks).train_state
    assert state["world_size"] == 2 and state["grad_scaler"]["growth_tracker"] == HALF["max_steps"]
    assert largest_relative_difference(two_ranks, one) == 0  # the mean over micro-batches is taken in float32
