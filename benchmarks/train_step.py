"""Time one training step (forward + backward + AdamW) in tinyllm and in an equivalent eager PyTorch model.

Config S (the issue's): vocab 1024, dim 256, 4 layers, 8 heads, 4 KV heads, ffn 768,
context 256, batch 16, float32, on the CPU. Both sides run in this process with the
same thread count (1 by default: the steadiest on a shared machine), alternating
tinyllm, torch, tinyllm, torch ... and the medians are compared.

PyTorch is only the reference here, never a dependency of tinyllm. Run it from an
environment that has both:

    python -m venv /tmp/bench && /tmp/bench/bin/pip install torch==2.13.0 -e .
    /tmp/bench/bin/python benchmarks/train_step.py            # --repeats 5 --threads 1

Prints each side's median step time, the ratio tinyllm / torch, tokens/s and the
peak resident memory growth of each side's steps.

``--config host``: the gpu preset's depth and heads (6 layers, 6 heads) at toy widths (dim 48, batch 1 x
8 tokens), where the arithmetic is negligible and a step's time is the framework's own: Python, the
autograd graph, one dispatch per operation. On a GPU a small model's step is bound by exactly this
host-side work (each operation's launch), so the ratio here says whether tinyllm's bookkeeping or
the array library's launches are what a GPU step waits on (``docs/gpu.md``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time


def set_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per side (after one warm-up each)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/torch threads for both sides")
    parser.add_argument("--config", choices=["S", "host"], default="S",
                        help="S: the issue's config; host: toy widths, the framework's own time per step")
    parser.add_argument("--batch", type=int, default=None, help="default 16 (S), 1 (host)")
    parser.add_argument("--context", type=int, default=None, help="default 256 (S), 8 (host)")
    args = parser.parse_args()
    host = args.config == "host"
    args.batch = args.batch or (1 if host else 16)
    args.context = args.context or (8 if host else 256)
    if host and args.repeats == parser.get_default("repeats"):
        args.repeats = 50  # milliseconds each: more of them for a steady median
    set_threads(args.threads)

    import numpy as np

    try:
        import torch
    except ImportError:
        sys.exit("This benchmark compares against PyTorch: install torch==2.13.0 in the environment that runs it.")
    torch.set_num_threads(args.threads)

    import tinyllm as tl
    from tinyllm.models import ModelConfig, Transformer
    from tinyllm.optim import AdamW

    if host:
        config = ModelConfig(vocab_size=64, dim=48, n_layers=6, n_heads=6, n_kv_heads=6, ffn_hidden_dim=128,
                             max_seq_len=args.context, tie_embeddings=False)
    else:
        config = ModelConfig(
            vocab_size=1024, dim=256, n_layers=4, n_heads=8, n_kv_heads=4, ffn_hidden_dim=768,
            max_seq_len=args.context, tie_embeddings=False,
        )
    B, T = args.batch, args.context
    rng = np.random.default_rng(0)
    idx = rng.integers(0, config.vocab_size, (B, T))
    targets = rng.integers(0, config.vocab_size, (B, T))

    # -- tinyllm ------------------------------------------------------------------
    tl.set_backend("numpy", seed=0)
    model = Transformer(config)
    optimizer = AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)

    def tinyllm_step() -> float:
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    # -- PyTorch, the same architecture in plain eager code ------------------------
    torch_model = TorchLlama(config, torch)
    torch_model.load_from(model, torch)  # same initial weights
    torch_opt = torch.optim.AdamW(torch_model.parameters(), lr=3e-4, weight_decay=0.1, foreach=False)
    tidx = torch.from_numpy(idx)
    ttargets = torch.from_numpy(targets)

    def torch_step() -> float:
        loss = torch_model(tidx, ttargets)
        torch_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch_opt.step()
        return loss.item()

    times: dict[str, list[float]] = {"tinyllm": [], "torch": []}
    rss: dict[str, float] = {}
    losses = {"tinyllm": tinyllm_step(), "torch": torch_step()}  # warm-up; also checks both compute the same loss
    print(f"first-step loss: tinyllm {losses['tinyllm']:.5f}  torch {losses['torch']:.5f}")
    for _ in range(args.repeats):
        for name, step in (("tinyllm", tinyllm_step), ("torch", torch_step)):
            before = peak_rss_mb()
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
            rss[name] = max(rss.get(name, 0.0), peak_rss_mb() - before)

    tokens = B * T
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"config {args.config}, batch {B} x context {T} = {tokens} tokens/step, {args.threads} thread(s), "
          f"{args.repeats} steps each")
    for name in ("tinyllm", "torch"):
        spread = ", ".join(f"{t:.3f}" for t in times[name][:10]) + (", ..." if len(times[name]) > 10 else "")
        print(f"{name:8s} median {median[name] * 1e3:.2f} ms/step  ({tokens / median[name]:,.0f} tokens/s)   [{spread}]")
    print(f"ratio tinyllm / torch: {median['tinyllm'] / median['torch']:.2f}x")
    print(f"process peak RSS {peak_rss_mb():.0f} MB (both models live); tinyllm params {model.num_parameters():,}")


class TorchLlama:
    """Plain PyTorch LLaMA block stack matching tinyllm's Transformer (same names, half-split RoPE, GQA)."""

    def __init__(self, c, torch) -> None:  # noqa: ANN001
        nn = torch.nn
        F = torch.nn.functional
        self.torch, self.F, self.c = torch, F, c

        class Block(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.attention_norm = nn.RMSNorm(c.dim, eps=c.norm_eps)
                self.wq = nn.Linear(c.dim, c.n_heads * c.head_dim, bias=False)
                self.wk = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=False)
                self.wv = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=False)
                self.wo = nn.Linear(c.n_heads * c.head_dim, c.dim, bias=False)
                self.ffn_norm = nn.RMSNorm(c.dim, eps=c.norm_eps)
                self.w_gate = nn.Linear(c.dim, c.ffn_hidden_dim, bias=False)
                self.w_up = nn.Linear(c.dim, c.ffn_hidden_dim, bias=False)
                self.w_down = nn.Linear(c.ffn_hidden_dim, c.dim, bias=False)

        class Model(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.tok_embeddings = nn.Embedding(c.vocab_size, c.dim)
                self.layers = nn.ModuleList(Block() for _ in range(c.n_layers))
                self.norm = nn.RMSNorm(c.dim, eps=c.norm_eps)
                self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)

        self.module = Model()
        freqs = c.rope_theta ** (-torch.arange(0, c.head_dim, 2, dtype=torch.float64) / c.head_dim)
        angles = torch.outer(torch.arange(c.max_seq_len, dtype=torch.float64), freqs)
        self.cos, self.sin = angles.cos().float(), angles.sin().float()

    def parameters(self):  # noqa: ANN201
        return self.module.parameters()

    def load_from(self, model, torch) -> None:  # noqa: ANN001
        state = {}
        for name, array in model.state_dict().items():
            key = name.replace("attention.", "").replace("feed_forward.", "")
            state[key] = torch.from_numpy(array.copy())
        self.module.load_state_dict(state)

    def rope(self, x):  # noqa: ANN001, ANN201 - x (B, H, T, D)
        T, half = x.shape[2], x.shape[3] // 2
        cos, sin = self.cos[:T], self.sin[:T]
        x1, x2 = x[..., :half], x[..., half:]
        return self.torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def __call__(self, idx, targets):  # noqa: ANN001, ANN204
        c, F = self.c, self.F
        m = self.module
        B, T = idx.shape
        x = m.tok_embeddings(idx)
        for layer in m.layers:
            h = layer.attention_norm(x)
            q = layer.wq(h).view(B, T, c.n_heads, c.head_dim).transpose(1, 2)
            k = layer.wk(h).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
            v = layer.wv(h).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
            q, k = self.rope(q), self.rope(k)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            x = x + layer.wo(out.transpose(1, 2).reshape(B, T, -1))
            h = layer.ffn_norm(x)
            x = x + layer.w_down(F.silu(layer.w_gate(h)) * layer.w_up(h))
        logits = m.lm_head(m.norm(x))
        return F.cross_entropy(logits.view(-1, c.vocab_size), targets.view(-1))


if __name__ == "__main__":
    main()
