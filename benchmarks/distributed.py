"""Data-parallel speed-up: tokens/s of config S on 1 rank and on 2 ranks, and the all-reduce's share of a step.

Config S (as benchmarks/train_step.py): vocab 1024, dim 256, 4 layers, 8 heads, 4 KV heads,
ffn 768, untied embeddings, 3.7M parameters, float32, context 256. The global batch is the same
for both: 16 sequences x 256 tokens, as two micro-batches of 8 (1 rank: grad_accum_steps 2;
2 ranks: 1 each), so both compute exactly the same step. Each rank has one BLAS thread.

    pip install -e ".[mpi]"
    python benchmarks/distributed.py                 # --repeats 3 --steps 3

The script starts ``mpiexec -n 1`` and ``mpiexec -n 2`` jobs of itself (``--worker``),
alternating them, and compares the medians. Each worker times every step after one warm-up:

- step: forward + backward of this rank's micro-batches, the all-reduce, clipping, AdamW;
- wait: a barrier just before the all-reduce, i.e. how long the faster rank idled for the slower
  one (load imbalance, a busy core), kept apart so that
- all-reduce: ``all_reduce_gradients`` itself (copy into the bucket, MPI_Allreduce of 14.7 MB,
  divide, copy back) measures the communication alone.

On 2 cores, 2 ranks can at best halve the step; anything else running on the machine takes
cores away from them and shows up as a lower speed-up and a longer wait.

The engine itself, in one process (issue 14's GPU check; scripts/gpu_check.sh runs it on CuPy)::

    python benchmarks/distributed.py --one-rank --backend numpy       # MPI (mpi4py), here
    RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29533 \
        python benchmarks/distributed.py --one-rank --backend cupy     # NCCL (cupyx.distributed)

A launcher's world of one is a plain run (no collective at all), so this mode makes a real
communicator of one rank itself (NCCL on CuPy: a TCP rendezvous at MASTER_ADDR:MASTER_PORT, or
MPI's under ``mpiexec -n 1``; MPI on NumPy) and prints two JSON lines:

- ``exact``: the check the MPI tests make, data-parallel step == plain step. Two copies of a
  tiny model (dropout on) take the same 3 steps of 2 micro-batches, one with the plain process
  group, one with every gradient, the loss and the initial parameters through the engine's
  collectives. The sum over one rank is the gradient itself and the mean divides by 1, so the
  parameters and AdamW's moments must agree bit for bit (``max_abs_diff`` 0).
- ``bandwidth``: a ``--megabytes`` (100) float32 buffer of random numbers all-reduced in place,
  ``--repeats`` (10) times after 2 warm-ups, median time; algbw = bytes / time, and NCCL's bus
  bandwidth busbw = algbw * 2 (N - 1) / N, which is 0 for N = 1: one rank measures the engine's
  fixed cost (launch, a copy at most), not a link. ``unchanged`` says the buffer came back as it went.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GLOBAL_MICRO_BATCHES, MICRO_BATCH, CONTEXT = 2, 8, 256


def worker(steps: int) -> None:
    """One rank: time ``steps`` training steps after a warm-up; rank 0 prints the timings as JSON."""
    import numpy as np

    import tinyllm as tl
    import tinyllm.distributed as dist
    from tinyllm.data import TokenDataset
    from tinyllm.models import ModelConfig, Transformer
    from tinyllm.optim import clip_grad_norm_
    from tinyllm.train import TrainConfig, configure_optimizer

    tl.set_backend("numpy", seed=0)
    config = ModelConfig(vocab_size=1024, dim=256, n_layers=4, n_heads=8, n_kv_heads=4, ffn_hidden_dim=768,
                         max_seq_len=CONTEXT, tie_embeddings=False)
    model = Transformer(config)
    optimizer = configure_optimizer(model, TrainConfig(lr=3e-4))
    ids = np.random.default_rng(0).integers(0, config.vocab_size, 200_000).astype(np.uint16)
    data = TokenDataset(ids, ids[:10_000], config.vocab_size, 1.0, Path("unused"))
    grad_accum_steps = GLOBAL_MICRO_BATCHES // dist.world_size()
    dist.broadcast_parameters(model.parameters())
    timings = []
    for step in range(steps + 1):  # step 0 warms up
        start = time.perf_counter()
        for x, y in dist.local_micro_batches(data, MICRO_BATCH, CONTEXT, grad_accum_steps, seed=0, step=step):
            _, loss = model(x, y)
            (loss * (1.0 / grad_accum_steps)).backward()
        before_wait = time.perf_counter()
        dist.barrier()
        before_reduce = time.perf_counter()
        dist.all_reduce_gradients(model.parameters())
        after_reduce = time.perf_counter()
        clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        end = time.perf_counter()
        # The rank that finished its backward first waits; report the longest wait and all-reduce of any rank.
        waits = dist.all_reduce_sum([before_reduce - before_wait if r == dist.rank() else 0.0
                                     for r in range(dist.world_size())])
        reduces = dist.all_reduce_sum([after_reduce - before_reduce if r == dist.rank() else 0.0
                                       for r in range(dist.world_size())])
        if step:
            timings.append({"step": end - start, "wait": max(waits), "all_reduce": max(reduces)})
    if dist.is_main_process():
        print(json.dumps({"world_size": dist.world_size(), "parameters": model.num_parameters(), "timings": timings}))


def one_rank_communicator(backend_name: str):  # noqa: ANN201
    """A real communicator of one rank: NCCL on CuPy, MPI on NumPy (see the module docstring)."""
    from tinyllm.distributed import Launch
    from tinyllm.distributed.communicator import MPICommunicator, NCCLCommunicator

    env = os.environ
    under_mpiexec = any(name in env for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))
    if backend_name == "cupy" and not under_mpiexec:
        launch = Launch("env", int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)),
                        env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29533)))
    else:
        launch = Launch("mpi", 0, 1, 0)
    if launch.world_size != 1:
        sys.exit(f"--one-rank runs one process; WORLD_SIZE is {launch.world_size}")
    return NCCLCommunicator(launch) if backend_name == "cupy" else MPICommunicator(launch)


def one_rank_check(backend_name: str, megabytes: float, repeats: int) -> list[dict]:
    """The ``exact`` and ``bandwidth`` rows of ``--one-rank`` (module docstring)."""
    import numpy as np

    import tinyllm as tl
    import tinyllm.distributed as dist
    from tinyllm.data import TokenDataset
    from tinyllm.distributed.communicator import SingleProcess
    from tinyllm.models import ModelConfig, Transformer
    from tinyllm.train import TrainConfig, configure_optimizer, train_step

    backend = tl.set_backend(backend_name, seed=0)
    communicator = one_rank_communicator(backend_name)
    config = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden_dim=64,
                         max_seq_len=16, dropout=0.1)
    ids = np.random.default_rng(0).integers(0, config.vocab_size, 5_000).astype(np.uint16)
    data = TokenDataset(ids, ids[:500], config.vocab_size, 1.0, Path("unused"))
    runs = {}
    for name, group in (("plain", SingleProcess()), ("engine", communicator)):
        dist.init(group)  # from here on every collective of train_step goes through this communicator
        backend.seed(0)
        model = Transformer(config)
        optimizer = configure_optimizer(model, TrainConfig(lr=1e-2))
        dist.broadcast_parameters(model.parameters())
        batch_rng, losses = np.random.default_rng(1), []
        for step in range(3):
            micro_batches = dist.local_micro_batches(data, 4, 16, 2, seed=0, step=step, rng=batch_rng)
            losses.append(train_step(model, optimizer, micro_batches, lr=1e-2, grad_clip=1.0, grad_accum_steps=2)[0])
        arrays = [p.data for p in model.parameters()]
        arrays += [v for state in optimizer.state for v in state.values() if backend.is_array(v)]
        runs[name] = ([backend.to_host(a) for a in arrays], losses)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(runs["plain"][0], runs["engine"][0]))
    exact = {"phase": "exact", "communicator": communicator.name, "world_size": communicator.world_size,
             "backend": backend.name, "steps": 3, "arrays": len(runs["plain"][0]), "max_abs_diff": diff,
             "bit_exact": diff == 0.0, "losses_equal": runs["plain"][1] == runs["engine"][1]}

    xp = backend.xp
    size = int(megabytes * 1e6) // 4
    sent = xp.asarray(np.random.default_rng(2).standard_normal(size, dtype=np.float32))  # (size,), never zeros
    buffer = sent.copy()
    seconds = []
    for i in range(2 + repeats):  # 2 warm-ups
        backend.synchronize()
        start = time.perf_counter()
        communicator.all_reduce_sum_(buffer)
        backend.synchronize()
        if i >= 2:
            seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    n = communicator.world_size
    algbw = size * 4 / median / 1e9
    bandwidth = {"phase": "bandwidth", "communicator": communicator.name, "world_size": n, "megabytes": size * 4 / 1e6,
                 "repeats": repeats, "median_ms": median * 1e3, "min_ms": min(seconds) * 1e3,
                 "algbw_GBps": algbw, "busbw_GBps": algbw * 2 * (n - 1) / n,
                 "unchanged": bool((buffer == sent).all()) if n == 1 else None}
    return [exact, bandwidth]


def run_job(n_ranks: int, steps: int) -> dict:
    beside_python = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(beside_python) if beside_python.exists() else shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit('mpiexec not found: pip install "tinyllm[mpi]" (mpi4py and the MPICH wheel, which brings mpiexec)')
    env = os.environ | {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                        "PYTHONPATH": str(REPO)}
    command = [mpiexec, "-n", str(n_ranks), sys.executable, __file__, "--worker", "--steps", str(steps)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=1800)
    if result.returncode != 0:
        sys.exit(f"the {n_ranks}-rank job failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="jobs of each size, alternating (default 3)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per job, after one warm-up (default 3)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--one-rank", action="store_true",
                        help="check the engine in one process: exactness and all-reduce bandwidth (JSON lines)")
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="numpy",
                        help="--one-rank: numpy (MPI) or cupy (NCCL)")
    parser.add_argument("--megabytes", type=float, default=100.0, help="--one-rank: all-reduced buffer (default 100)")
    args = parser.parse_args()
    if args.worker:
        worker(args.steps)
        return
    if args.one_rank:
        for row in one_rank_check(args.backend, args.megabytes, max(args.repeats, 10)):
            print(json.dumps(row), flush=True)
        return

    timings: dict[int, list[dict]] = {1: [], 2: []}
    parameters = 0
    for repeat in range(args.repeats):
        for n_ranks in (1, 2):
            job = run_job(n_ranks, args.steps)
            parameters = job["parameters"]
            timings[n_ranks] += job["timings"]
            steps = ", ".join(f"{t['step']:.2f}" for t in job["timings"])
            print(f"repeat {repeat + 1}, {n_ranks} rank(s): step times {steps} s", flush=True)

    tokens = GLOBAL_MICRO_BATCHES * MICRO_BATCH * CONTEXT
    median = {n: {key: statistics.median(t[key] for t in timings[n]) for key in ("step", "wait", "all_reduce")}
              for n in timings}
    print(f"\nconfig S: {parameters:,} parameters ({parameters * 4 / 1e6:.1f} MB of float32 gradients), global batch "
          f"{GLOBAL_MICRO_BATCHES * MICRO_BATCH} x {CONTEXT} = {tokens} tokens, one BLAS thread per rank, "
          f"{len(timings[1])} steps each (medians)")
    for n in (1, 2):
        m = median[n]
        print(f"{n} rank(s): {m['step']:.3f} s/step, {tokens / m['step']:,.0f} tokens/s"
              + (f"; all-reduce {m['all_reduce'] * 1e3:.1f} ms ({m['all_reduce'] / m['step']:.1%} of the step), "
                 f"waiting for the other rank {m['wait'] * 1e3:.0f} ms ({m['wait'] / m['step']:.1%})" if n > 1 else ""))
    print(f"speed-up of 2 ranks: {median[1]['step'] / median[2]['step']:.2f}x (ideal 2.00x on 2 free cores)")


if __name__ == "__main__":
    main()
