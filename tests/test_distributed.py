"""Data-parallel training (tinyllm.distributed): 2 ranks under mpiexec against 1 process, resuming on 2 and on 1,
rank 0 alone writing, a failing rank ending the job, and the launcher, bucket and sharding logic on their own.

The two-rank runs are programs (tests/mpi_worker.py, examples/train_shakespeare.py) started by
``mpiexec -n 2``; mpiexec comes with ``pip install "tinyllm[mpi]"`` (the MPICH wheel), next to the
Python that runs the tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, child_pythonpath, on_device, shakespeare_text, to_numpy

import tinyllm as tl
import tinyllm.distributed as dist
from tinyllm.checkpoint import load_checkpoint
from tinyllm.data import prepare_tokens, train_tokenizer_cached
from tinyllm.distributed import communicator, process_group, sharding

# Dropout on: the masks, too, must not depend on the number of ranks. Untied embeddings: see test 1.
MODEL = {"vocab_size": 300, "dim": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "max_seq_len": 32,
         "dropout": 0.1, "tie_embeddings": False}
TRAIN = {"batch_size": 4, "block_size": 32, "max_steps": 6, "lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 2,
         "eval_interval": 3, "eval_iters": 2, "log_interval": 2, "progress": False}
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "RANK", "WORLD_SIZE",
                      "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def mpiexec_path() -> str:
    beside_python = Path(sys.executable).parent / "mpiexec"
    found = str(beside_python) if beside_python.exists() else shutil.which("mpiexec")
    assert found, 'mpiexec not found: pip install "tinyllm[mpi]" (mpi4py and the MPICH wheel, which brings mpiexec)'
    return found


def plain_env() -> dict[str, str]:
    """This environment without any launcher's variables, with the checkout importable and one BLAS thread.

    The ranks run on NumPy even in a CuPy test run: these tests are about MPI, and several ranks on one GPU
    is not a setup NCCL accepts (the GPU check tests NCCL with one rank, benchmarks/distributed.py --one-rank).
    """
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARIABLES}
    return env | {"PYTHONPATH": child_pythonpath(), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                  "TINYLLM_BACKEND": "numpy"}


def run_mpiexec(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([mpiexec_path(), "-n", "2", sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=plain_env(), cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict:
    """A small text, its 300-token tokenizer and token files, built once here (the ranks only read them)."""
    directory = tmp_path_factory.mktemp("dist_data")
    text = directory / "text.txt"
    text.write_text(shakespeare_text(60_000))
    tokenizer = train_tokenizer_cached(text, 300, directory)
    prepare_tokens(text, tokenizer, directory)
    return {"text": str(text), "tokenizer": str(tokenizer), "cache": str(directory)}


def write_job(directory: Path, prepared: dict, **job) -> Path:
    path = directory / "job.json"
    path.write_text(json.dumps(prepared | {"out": str(directory / "out"), "model": MODEL, "train": TRAIN} | job))
    return path


@pytest.fixture(scope="module")
def two_ranks(prepared, tmp_path_factory) -> Path:
    """One mpiexec -n 2 job: the collectives check, then a: 6 steps; b: 3 steps; c: b resumed to 6; t: a with
    tied embeddings. Returns the output directory (<run>/rank<r>/...)."""
    directory = tmp_path_factory.mktemp("two_ranks")
    runs = [{"name": "a"}, {"name": "b", "stop_at_step": 3}, {"name": "c", "resume_from": "b/rank0/last"},
            {"name": "t", "model": {"tie_embeddings": True}}]
    result = run_mpiexec(["tests/mpi_worker.py", str(write_job(directory, prepared, collectives=True, runs=runs))])
    assert result.returncode == 0, result.stdout + result.stderr
    return directory / "out"


def one_process(prepared: dict, directory: Path, resume_from: Path | None = None, train: dict = TRAIN,
                **model) -> Path:  # noqa: ANN003
    """The single-process reference: the same global batch, grad_accum_steps 2. Returns its last checkpoint.

    It runs as the ranks do, in a process of its own with one BLAS thread: a matrix product split over
    another number of threads may round differently, and the comparisons below are bit for bit.
    """
    directory.mkdir(parents=True, exist_ok=True)
    run = {"name": "one", "model": model} | ({"resume_from": str(resume_from)} if resume_from else {})
    job = write_job(directory, prepared, runs=[run], train=train | {"grad_accum_steps": 2})
    result = subprocess.run([sys.executable, "tests/mpi_worker.py", str(job)], capture_output=True, text=True,
                            timeout=120, env=plain_env(), cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return directory / "out" / "one" / "rank0" / "last"


def largest_relative_difference(a: Path, b: Path) -> float:
    """max over tensors of max|a - b| / max|b|, over the parameters and AdamW's moments of two checkpoints."""
    first, second = load_checkpoint(a), load_checkpoint(b)
    assert first.optimizer_state["step"] == second.optimizer_state["step"]
    pairs = [(v, second.model_state[k]) for k, v in first.model_state.items()]
    pairs += [(v, second.optimizer_state["state"][i][k]) for i, s in first.optimizer_state["state"].items()
              for k, v in s.items()]
    return max(float(np.abs(x - y).max() / np.abs(y).max()) for x, y in pairs)


# -- two ranks under mpiexec ---------------------------------------------------------------------------------


def test_two_ranks_give_the_parameters_of_one_process_with_twice_the_accumulation(two_ranks, prepared, tmp_path):
    # Untied embeddings: bit-exact. Each parameter's gradient is g0/2 + g1/2 in one process and (g0 + g1) / 2
    # over 2 ranks: the same float32 numbers, since halving is exact and a + b == b + a.
    assert largest_relative_difference(two_ranks / "a" / "rank0" / "last", one_process(prepared, tmp_path / "one")) == 0
    # Tied embeddings: the shared matrix gets two gradients per micro-batch (embedding and output layer), added
    # as ((e0 + o0) + e1) + o1 in one process and (e0 + o0) + (e1 + o1) over 2 ranks: float32 rounding.
    tied = one_process(prepared, tmp_path / "tied", tie_embeddings=True)
    assert 0 < largest_relative_difference(two_ranks / "t" / "rank0" / "last", tied) < 1e-5  # measured 4.5e-6


def test_resuming_on_two_ranks_gives_the_uninterrupted_run(two_ranks):
    assert load_checkpoint(two_ranks / "b" / "rank0" / "last").train_state["step"] == 3
    assert largest_relative_difference(two_ranks / "c" / "rank0" / "last", two_ranks / "a" / "rank0" / "last") == 0


def test_resuming_a_two_rank_run_on_one_process_gives_the_uninterrupted_run(two_ranks, prepared, tmp_path):
    checkpoint = load_checkpoint(two_ranks / "b" / "rank0" / "last")
    assert checkpoint.train_state["world_size"] == 2 and checkpoint.train_config["grad_accum_steps"] == 1
    assert dist.resumed_grad_accum_steps(1, 2) == 2  # one process takes both ranks' micro-batches
    resumed = one_process(prepared, tmp_path / "resumed", resume_from=two_ranks / "b" / "rank0" / "last")
    assert largest_relative_difference(resumed, two_ranks / "a" / "rank0" / "last") == 0


def test_rank_zero_alone_writes(two_ranks):
    for run in ("a", "b", "c", "t"):
        assert not (two_ranks / run / "rank1").exists(), f"rank 1 wrote into {two_ranks / run / 'rank1'}"
        written = sorted(path.name for path in (two_ranks / run / "rank0").iterdir())
        assert written == ["best", "last", "log.jsonl", "loss.png"]
    log = [json.loads(line) for line in (two_ranks / "a" / "rank0" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"] == [2, 4, 6]  # each step logged once
    assert [r["step"] for r in log if r["kind"] == "eval"] == [0, 3, 6]


def test_gradients_are_averaged_in_buckets_and_half_precision_in_float32(two_ranks):
    results = np.load(two_ranks / "collectives.npz")  # rank r's gradients were r + 1 + i / 4
    np.testing.assert_array_equal(results["grad0"], np.full((3, 4), 1.5, np.float32))
    np.testing.assert_array_equal(results["grad1"], np.full(5, 1.75, np.float32))
    assert results["grad2"].dtype == np.float16  # 60000 and 60064: the float16 sum would be inf
    np.testing.assert_array_equal(results["grad2"], np.full(7, 60032, np.float16))
    assert results["grad3"].dtype == np.float64 and np.all(results["grad3"] == 2.25)
    np.testing.assert_array_equal(results["grad4"], np.full(6, 2.0, np.float32))  # rank 1's 4 and rank 0's none
    assert results["none"].tolist() == [False] * 5 + [True]  # no gradient on any rank: stays None
    np.testing.assert_array_equal(results["broadcast"], np.zeros(5, np.float32))  # rank 0's values


@pytest.mark.parametrize("where", ["in_training", "before_training"])
def test_a_failing_rank_ends_the_job_with_its_message(prepared, tmp_path, where):
    start = time.perf_counter()
    result = run_mpiexec(["tests/mpi_worker.py", str(write_job(tmp_path, prepared, fail=where, runs=[{"name": "a"}]))],
                         timeout=60)
    elapsed = time.perf_counter() - start
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "[rank 1 of 2] failed, stopping all 2 ranks" in output and "RuntimeError: rank 1 fails on purpose" in output
    assert elapsed < 20, f"the job took {elapsed:.0f} s to end"


def test_the_example_trains_on_two_ranks_and_resumes_on_one(tmp_path):
    text = tmp_path / "small.txt"
    text.write_text(shakespeare_text(30_000))
    common = ["--preset", "tiny", "--data", str(text), "--out-dir", str(tmp_path / "out"), "--no-progress"]
    result = run_mpiexec(["examples/train_shakespeare.py", *common, "--max-steps", "4", "--eval-interval", "2",
                          "--sample-tokens", "0"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("training: 4 steps of 8 x 32 tokens x 2 ranks") == 1  # rank 0 alone prints
    assert result.stdout.count("done: step 4") == 1
    resumed = subprocess.run([sys.executable, "examples/train_shakespeare.py", *common, "--resume", "--max-steps", "6",
                              "--sample-tokens", "0"], capture_output=True, text=True, timeout=120, env=plain_env(),
                             cwd=REPO_ROOT)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "6 steps of 8 x 32 tokens x 2, resuming at step 4" in resumed.stdout  # the same global batch
    assert load_checkpoint(tmp_path / "out" / "last").train_state["world_size"] == 1


# -- one process ------------------------------------------------------------------------------------------------


def test_a_plain_run_does_not_import_mpi4py(tmp_path):
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text("{}")
    program = f"""
import sys
import numpy as np
import tinyllm as tl
import tinyllm.distributed as dist
from tinyllm.data import TokenDataset
from tinyllm.models import ModelConfig, Transformer
from tinyllm.train import TrainConfig, train
tl.set_backend("numpy", seed=0)
ids = np.arange(2000) % 50
data = TokenDataset(ids[:1800], ids[1800:], 50, 1.0, {str(tokenizer)!r})  # the checkpoint copies the file
model = Transformer(ModelConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, max_seq_len=8))
train(model, data, TrainConfig(batch_size=2, block_size=8, max_steps=2, eval_iters=1, progress=False,
                               out_dir={str(tmp_path)!r}))
assert dist.world_size() == 1 and "mpi4py" not in sys.modules, sorted(m for m in sys.modules if "mpi" in m)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120,
                            env=plain_env())
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr


@pytest.fixture
def fresh_process_group(monkeypatch):
    """Forget the communicator of this (plain) process, and the launcher's variables, for one test."""
    monkeypatch.setattr(process_group, "_communicator", None)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_mpiexec_without_mpi4py_is_a_clear_error(fresh_process_group):
    tl.set_backend("numpy", seed=0)  # MPI is the NumPy backend's transport (CuPy's is NCCL)
    fresh_process_group.setenv("PMI_RANK", "0")
    fresh_process_group.setenv("PMI_SIZE", "2")
    fresh_process_group.setitem(sys.modules, "mpi4py", None)  # "import mpi4py" now raises ImportError
    with pytest.raises(dist.DistributedError, match=r"rank 0 of 2 started by an MPI launcher .* mpi4py is not "
                       r"installed.*pip install \"tinyllm\[mpi\]\""):
        dist.init()


def test_torchrun_variables_on_the_numpy_backend_ask_for_mpiexec(fresh_process_group):
    tl.set_backend("numpy", seed=0)
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost", "MASTER_PORT": "29500"}.items():
        fresh_process_group.setenv(name, value)
    with pytest.raises(dist.DistributedError, match=r"numpy backend, which communicates through MPI: launch with "
                       r"`mpiexec -n 2 python"):
        dist.init()


def test_detect_launch_reads_each_launcher():
    assert dist.detect_launch({}) == dist.Launch("single")
    assert dist.detect_launch({"PMI_RANK": "0", "PMI_SIZE": "1"}) == dist.Launch("single")  # mpiexec -n 1
    mpich = dist.detect_launch({"PMI_RANK": "3", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1"})
    assert (mpich.kind, mpich.rank, mpich.world_size, mpich.local_rank) == ("mpi", 3, 4, 1)
    openmpi = dist.detect_launch({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8",
                                  "OMPI_COMM_WORLD_LOCAL_RANK": "1", "RANK": "7"})  # MPI's variables win
    assert (openmpi.kind, openmpi.rank, openmpi.world_size, openmpi.local_rank) == ("mpi", 5, 8, 1)
    torchrun = dist.detect_launch({"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "MASTER_ADDR": "node0",
                                   "MASTER_PORT": "29500"})
    assert torchrun == dist.Launch("env", 2, 4, 0, "node0", 29500)
    with pytest.raises(RuntimeError, match="MASTER_ADDR is not set: set MASTER_ADDR to rank 0's host name"):
        dist.detect_launch({"RANK": "1", "WORLD_SIZE": "2", "MASTER_PORT": "29500"})
    with pytest.raises(RuntimeError, match="PMI_RANK is 'x', not an integer"):
        dist.detect_launch({"PMI_RANK": "x", "PMI_SIZE": "2"})


def test_buckets_hold_one_reduce_dtype_and_at_most_bucket_bytes():
    def param(n, dtype=np.float32):  # noqa: ANN001, ANN202
        return tl.Tensor(np.zeros(n, dtype), requires_grad=True)

    params = [param(100), param(100, np.float16), param(10, np.float64), param(100), param(1000), param(5)]
    buckets = dist.plan_buckets(params, bucket_bytes=1200)  # 300 float32
    assert [(b.dtype, b.indices, b.size) for b in buckets] == [
        (np.float32, [0, 1, 3], 300),  # float16 is reduced in float32, next to the float32 gradients
        (np.float64, [2], 10),
        (np.float32, [4], 1000),  # larger than a bucket: a bucket of its own
        (np.float32, [5], 5),
    ]


def test_all_reduce_gradients_averages_what_the_communicator_sums(fresh_process_group):
    class TwoEqualRanks(communicator.SingleProcess):  # the other rank holds the same gradients: the sum doubles
        world_size = 2

        def all_reduce_sum_(self, buffer):  # noqa: ANN001, ANN202
            buffer *= 2

    fresh_process_group.setattr(process_group, "_communicator", TwoEqualRanks())
    params = [tl.Tensor(np.zeros(3, dtype), requires_grad=True) for dtype in (np.float32, np.float16, np.float32)]
    params[0].grad = on_device(np.array([1.0, -2.0, 3.5], np.float32))
    params[1].grad = on_device(np.array([40000.0, 1.0, -0.5], np.float16))  # doubled in float16 it would overflow
    frozen = tl.Tensor(np.zeros(2, np.float32))
    dist.all_reduce_gradients([*params, frozen])
    np.testing.assert_array_equal(to_numpy(params[0].grad), [1.0, -2.0, 3.5])
    assert params[1].grad.dtype == np.float16 and params[1].grad.tolist() == [40000.0, 1.0, -0.5]
    assert params[2].grad is None and frozen.grad is None


def test_micro_batches_and_dropout_masks_do_not_depend_on_the_number_of_ranks(prepared, monkeypatch):
    data = prepare_tokens(prepared["text"], prepared["tokenizer"], prepared["cache"])

    def one_step(n_ranks: int, me: int, grad_accum_steps: int) -> tuple[list, dict]:
        monkeypatch.setattr(sharding, "world_size", lambda: n_ranks)
        monkeypatch.setattr(sharding, "rank", lambda: me)
        backend = tl.set_backend("numpy", seed=7)
        batch_rng = np.random.default_rng(7)  # the host generator of the batch offsets, as train() keeps it
        drawn = []
        for x, _ in dist.local_micro_batches(data, 2, 8, grad_accum_steps, seed=1337, step=5, rng=batch_rng):
            drawn.append((x.copy(), backend.rng.random(3)))  # a batch and the "dropout" draws made with it
        return drawn, batch_rng.bit_generator.state

    single, single_state = one_step(1, 0, grad_accum_steps=4)
    rank0, state0 = one_step(2, 0, grad_accum_steps=2)
    rank1, state1 = one_step(2, 1, grad_accum_steps=2)
    assert len(single) == 4 and len(rank0) == len(rank1) == 2
    for mine, reference in zip(rank0 + rank1, single[0::2] + single[1::2]):  # rank r: micro-batches r, r + 2
        np.testing.assert_array_equal(mine[0], reference[0])
        np.testing.assert_array_equal(mine[1], reference[1])
    assert state0 == state1 == single_state  # the batch generator (checkpointed) ends where one process's does
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(single[0][1], single[1][1])  # each micro-batch has its own masks


def test_resumed_grad_accum_steps_keeps_the_global_batch_or_says_which_ranks_can(monkeypatch):
    assert dist.resumed_grad_accum_steps(2, 2) == 4  # on this one process
    monkeypatch.setattr(sharding, "world_size", lambda: 3)
    with pytest.raises(ValueError, match=r"4 micro-batches a step \(2 rank\(s\) x grad_accum_steps 2\), which 3 "
                       r"ranks cannot share evenly: resume on 1, 2, 4 rank\(s\)"):
        dist.resumed_grad_accum_steps(2, 2)


def test_the_nccl_communicator_calls_cupyx_distributed_as_documented(monkeypatch):
    # No GPU in CI: a stand-in for cupyx.distributed records the calls (the signatures of CuPy's documentation).
    calls = []

    class Backend:
        def all_reduce(self, in_array, out_array, op="sum", stream=None):  # noqa: ANN001, ANN201
            calls.append(("all_reduce", in_array is out_array, op))

        def broadcast(self, in_out_array, root=0, stream=None):  # noqa: ANN001, ANN201
            calls.append(("broadcast", root))

        def barrier(self):  # noqa: ANN201
            calls.append(("barrier",))

    def init_process_group(n_devices, rank, *, backend="nccl", host=None, port=None, use_mpi=False):  # noqa: ANN001, ANN202
        calls.append(("init", n_devices, rank, host, port, use_mpi))
        return Backend()

    cupyx = types.ModuleType("cupyx")
    cupyx.distributed = types.SimpleNamespace(init_process_group=init_process_group)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setitem(sys.modules, "cupyx.distributed", cupyx.distributed)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.delenv("TINYLLM_NCCL_PORT", raising=False)
    nccl = communicator.NCCLCommunicator(dist.Launch("env", 1, 2, 1, "node0", 29500))
    buffer = np.zeros(4, np.float32)
    nccl.all_reduce_sum_(buffer)
    nccl.broadcast_(buffer, 0)
    nccl.barrier()
    assert calls == [("init", 2, 1, "node0", 29500, False), ("all_reduce", True, "sum"), ("broadcast", 0), ("barrier",)]
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")  # under torchrun, torch's store holds MASTER_PORT
    assert communicator.rendezvous_port(dist.Launch("env", 1, 2, 1, "node0", 29500)) == 29501


def test_a_launcher_of_another_mpi_than_mpi4py_is_a_clear_error():
    # Open MPI's variables, but mpi4py loads MPICH: MPI starts this process as a world of one.
    env = plain_env() | {"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}
    program = "import tinyllm.distributed as dist; dist.init()"
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode != 0
    assert "the launcher started 2 processes, but MPI in this process sees a world of 1" in result.stderr
    assert "mpi4py is linked to a different MPI" in result.stderr


def test_a_user_error_caught_on_one_rank_ends_the_job_instead_of_hanging_it():
    """Rank 1 reports a user error as the examples do (one line, an exit status) while rank 0 waits for it
    in a barrier: the job must end with the message, not wait forever."""
    program = (
        "import tinyllm.distributed as dist\n"
        "from tinyllm.cli import UsageError, run_main\n"
        "def main(argv):\n"
        "    if dist.rank() == 1:\n"
        "        raise UsageError('--max-steps must be positive')\n"
        "    dist.barrier()\n"
        "raise SystemExit(run_main(main, []))\n"
    )
    result = run_mpiexec(["-c", program], timeout=60)  # before the fix: TimeoutExpired
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "error: --max-steps must be positive" in output
    assert "[rank 1 of 2] the error above ends every rank of this job" in output
