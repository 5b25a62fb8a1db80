"""benchmarks/distributed.py --one-rank: the engine check that scripts/gpu_check.sh runs on NCCL, here on MPI.

A launcher's world of one is a plain run that skips every collective; this mode installs a real
communicator of one rank, so the collectives run, and checks data-parallel step == plain step.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from test_distributed import plain_env

from tinyllm.distributed import communicator, process_group


def load_benchmark():  # noqa: ANN201
    spec = importlib.util.spec_from_file_location("distributed_benchmark", REPO_ROOT / "benchmarks/distributed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_rank_on_mpi_is_bit_exact_and_returns_the_buffer_unchanged():
    run = subprocess.run([sys.executable, "benchmarks/distributed.py", "--one-rank", "--backend", "numpy",
                          "--megabytes", "4"], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                         env=plain_env())
    assert run.returncode == 0, run.stderr
    exact, bandwidth = (json.loads(line) for line in run.stdout.splitlines())
    assert exact["phase"] == "exact" and exact["communicator"] == "mpi" and exact["world_size"] == 1
    assert exact["bit_exact"] and exact["max_abs_diff"] == 0.0 and exact["losses_equal"]
    assert bandwidth["phase"] == "bandwidth" and bandwidth["megabytes"] == 4.0 and bandwidth["unchanged"]
    assert bandwidth["algbw_GBps"] > 0 and bandwidth["busbw_GBps"] == 0.0


class CountingRank(communicator.Communicator):
    """A real-looking communicator of one rank (not a SingleProcess) that counts its collectives and
    can add ``noise`` to every sum, as a broken engine would."""

    name = "counting"

    def __init__(self, noise: float = 0.0) -> None:
        self.calls = {"all_reduce": 0, "broadcast": 0}
        self.noise = noise

    def all_reduce_sum_(self, buffer):  # noqa: ANN001, ANN202
        self.calls["all_reduce"] += 1
        buffer += self.noise

    def broadcast_(self, buffer, root=0):  # noqa: ANN001, ANN202
        self.calls["broadcast"] += 1

    def barrier(self) -> None:
        pass


@pytest.mark.parametrize("noise", [0.0, 1e-6])
def test_the_collectives_of_a_one_rank_engine_run_and_a_wrong_sum_is_caught(monkeypatch, noise):
    monkeypatch.setattr(process_group, "_communicator", None)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    benchmark = load_benchmark()
    rank = CountingRank(noise)
    monkeypatch.setattr(benchmark, "one_rank_communicator", lambda backend_name: rank)
    exact, bandwidth = benchmark.one_rank_check("numpy", megabytes=0.4, repeats=3)
    # 3 steps x (one gradient bucket + the step's loss) + 2 warm-ups and 3 timed all-reduces of the buffer
    assert rank.calls["all_reduce"] == 3 * 2 + 5
    assert rank.calls["broadcast"] == exact["arrays"] // 3 == 20  # one per parameter (compared: parameters, m, v)
    assert exact["bit_exact"] is (noise == 0.0)
    assert bandwidth["unchanged"] is (noise == 0.0)
