"""Count the GPU kernel launches of one training step, on a CPU, through the simulated CuPy.

On a GPU a small model's step is often bound not by arithmetic but by launches: each kernel costs some
microseconds of Python and driver time however little it computes, so a step of 1,000 launches spends
milliseconds just starting them. The number depends only on the code, not on the GPU, so it can be
counted anywhere: this script runs ``tinyllm.train.train_step`` on the simulated CuPy
(``tests/simulated_cupy``, NumPy underneath), which counts every operation that would launch a kernel
and runs tinyllm's fused CUDA kernels on the CPU (compiled by g++; each call is one launch). It prints
one JSON line per (dtype, n_layers): the launches of a step and the ten most frequent operations::

    python scripts/count_launches.py                          # the gpu preset's model (6 layers, dim 384)
    python scripts/count_launches.py --layers 1,2 --dim 32 --context 16 --batch 2   # small: seconds
    python scripts/count_launches.py --decode --layers 30      # one greedy token of a SmolLM2-shaped model

The difference between two layer counts is the launches one layer adds; compare it across dtypes to see
what a precision costs per layer, and the rest (the embedding, the loss, the optimizer, mixed precision's
bookkeeping) is what remains at zero layers. The batch and context change no count, only the time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy

ROOT = Path(__file__).resolve().parents[1]


def reads() -> int:
    """Values read back from the device (each makes the host wait for the GPU): scalars and array copies."""
    import cupy

    return cupy.transfers["sync"] + cupy.transfers["to_host"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="1,6", help="comma-separated layer counts (default 1,6)")
    parser.add_argument("--dtypes", default="float32,float16",
                        help="comma-separated: float32, float16, bfloat16 (needs ml_dtypes)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--no-kernels", action="store_true", help="no fused kernels at all: the plain array code")
    parser.add_argument("--flash", action="store_true", help="attention by the tiled kernels (TINYLLM_FLASH_ATTENTION=1)")
    parser.add_argument("--decode", action="store_true",
                        help="count one token of greedy decoding with the KV cache instead, on a SmolLM2-shaped model "
                             "(dim 576, 9 heads, 3 KV heads, FFN 1536; random weights), after a 16-token prompt")
    args = parser.parse_args()

    # The simulated CuPy must be imported as "cupy" before tinyllm looks for it.
    sys.path[:0] = [str(ROOT / "tests" / "simulated_cupy"), str(ROOT)]
    os.environ["TINYLLM_KERNELS"] = "0" if args.no_kernels else "1"
    import cupy

    if not getattr(cupy, "SIMULATED", False):
        raise SystemExit("error: imported a real CuPy; run this script with the repository's tests/ beside it")

    import tinyllm as tl
    from tinyllm.amp import MixedPrecision
    from tinyllm.models import ModelConfig, Transformer
    from tinyllm.train import TrainConfig, configure_optimizer, train_step

    backend = tl.set_backend("cupy", seed=0)
    backend.flash_attention = args.flash and backend.kernels is not None
    if args.decode:
        from tinyllm.sampling import generate

        for n_layers in (int(n) for n in args.layers.split(",")):
            model = Transformer(ModelConfig(vocab_size=args.vocab, dim=576, n_layers=n_layers, n_heads=9, n_kv_heads=3,
                                            ffn_hidden_dim=1536, max_seq_len=64, rope_theta=100000.0)).eval()
            tokens = generate(model, list(range(16)), 3, temperature=0.0)
            next(tokens), next(tokens)  # the prompt, then a first token: the cache is warm
            cupy.reset_counts()
            next(tokens)
            print(json.dumps({"decode": True, "n_layers": n_layers, "kernels": backend.kernels is not None,
                              "launches": sum(cupy.launches.values()), "syncs": reads(),
                              "top": dict(cupy.launches.most_common(10))}), flush=True)
        return
    for dtype in args.dtypes.split(","):
        for n_layers in (int(n) for n in args.layers.split(",")):
            config = ModelConfig(vocab_size=args.vocab, dim=args.dim, n_layers=n_layers, n_heads=args.heads,
                                 max_seq_len=args.context, tie_embeddings=False, dropout=0.0)
            model = Transformer(config)
            optimizer = configure_optimizer(model, TrainConfig())
            amp = MixedPrecision(model, dtype) if dtype != "float32" else None
            rng = numpy.random.default_rng(0)
            ids = backend.asarray(rng.integers(0, args.vocab, (args.batch, args.context + 1)))
            batch = [(ids[:, :-1], ids[:, 1:])]
            train_step(model, optimizer, batch, lr=1e-3, grad_clip=1.0, amp=amp)  # the first step makes AdamW's state
            cupy.reset_counts()
            train_step(model, optimizer, batch, lr=1e-3, grad_clip=1.0, amp=amp)
            print(json.dumps({"dtype": dtype, "n_layers": n_layers, "kernels": backend.kernels is not None,
                              "attention": "tiled" if backend.flash_attention else "matrix",
                              "parameters": len(model.parameters()), "launches": sum(cupy.launches.values()),
                              "syncs": reads(), "top": dict(cupy.launches.most_common(10))}),
                  flush=True)


if __name__ == "__main__":
    main()
