"""Tokens/s of generation with and without the KV cache, 256 new tokens.

With the cache each new token costs one position's worth of work (attention over the cached
keys); without it, the whole sequence is recomputed for every token, so the cost per token
grows with the length. Both sides produce the same greedy tokens (checked here too).

    python benchmarks/generate.py                         # a model of the cpu preset's shape, random weights
    python benchmarks/generate.py --checkpoint out/shakespeare/best
    python benchmarks/generate.py --repeats 3 --threads 1 --new-tokens 256

Runs cached, uncached, cached, uncached ... and prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="a training checkpoint directory (default: random weights)")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (1 is steadiest on a shared machine)")
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np

    import tinyllm as tl
    from tinyllm.models import ModelConfig, Transformer
    from tinyllm.sampling import generate

    tl.set_backend("numpy", seed=0)
    context = args.prompt_tokens + args.new_tokens
    if args.checkpoint:
        from tinyllm.checkpoint import load_model

        model = load_model(args.checkpoint)
        if model.config.max_seq_len < context:
            raise SystemExit(f"the checkpoint's context ({model.config.max_seq_len}) is shorter than {context} tokens")
    else:
        model = Transformer(ModelConfig(vocab_size=512, dim=128, n_layers=4, n_heads=4, n_kv_heads=2, max_seq_len=context))
    prompt = np.random.default_rng(0).integers(0, model.config.vocab_size, args.prompt_tokens).tolist()

    def run(use_cache: bool) -> tuple[float, list[int]]:
        start = time.perf_counter()
        tokens = list(generate(model, prompt, args.new_tokens, temperature=0, use_cache=use_cache))
        return time.perf_counter() - start, tokens

    times: dict[str, list[float]] = {"cached": [], "uncached": []}
    outputs = {}
    for _ in range(args.repeats):
        for name, use_cache in (("cached", True), ("uncached", False)):
            seconds, tokens = run(use_cache)
            times[name].append(seconds)
            outputs[name] = tokens
    n = args.new_tokens
    print(f"{model.num_parameters():,} parameters, prompt {args.prompt_tokens} + {n} new tokens, {args.threads} thread(s)")
    for name in ("cached", "uncached"):
        median = statistics.median(times[name])
        print(f"{name:9s} median {median:.2f} s  ({n / median:,.1f} tokens/s)")
    ratio = statistics.median(times["uncached"]) / statistics.median(times["cached"])
    print(f"KV cache speed-up: {ratio:.1f}x; same greedy tokens: {outputs['cached'] == outputs['uncached']}")


if __name__ == "__main__":
    main()
