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
    args = parser.parse_args()
    if args.worker:
        worker(args.steps)
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
