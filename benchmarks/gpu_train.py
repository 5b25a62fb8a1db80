"""Training and decode speed of tinyllm against the same model in plain PyTorch eager, on one device.

Training: the ``gpu`` preset's shape (6 layers, dim 384, 6 heads, context 256, batch 64, vocab 1024,
about 10M parameters; dropout off on both sides so they do the same work), one optimizer step
= forward + backward + AdamW. For each precision, tinyllm and PyTorch alternate step by step and
the medians are compared; peak device memory is read from each side's allocator.

Decode: a SmolLM2-135M-shaped model (30 layers, dim 576, 9 heads, 3 KV heads, vocab 49,152) with
random weights, greedy, with the KV cache: tinyllm's ``generate`` against a plain PyTorch loop
with its own KV cache (the same architecture, written out below).

    python benchmarks/gpu_train.py --backend cupy                  # on a GPU: the real figures
    python benchmarks/gpu_train.py --backend numpy --tiny          # anywhere, seconds: exercises the code
    python benchmarks/gpu_train.py --backend cupy --json out.jsonl # also one JSON line per figure
    python benchmarks/gpu_train.py --backend cupy --flash --skip decode   # tinyllm's tiled attention kernels

Precisions: ``fp32`` (TF32 off on both sides), ``tf32`` (float32 storage, TF32 matmuls),
``bf16`` and ``fp16`` (PyTorch: autocast, and a GradScaler for fp16; tinyllm: ``tinyllm.amp``, a
float16/bfloat16 shadow of float32 master weights, loss scaling for fp16; bfloat16 needs ml_dtypes,
and where tinyllm cannot run a precision the row says why and shows PyTorch only). PyTorch is only
the reference here, never a dependency of tinyllm.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_step.py's TorchLlama, the reference model

GPU_PRESET = {"vocab_size": 1024, "dim": 384, "n_layers": 6, "n_heads": 6, "n_kv_heads": 6, "batch": 64, "context": 256}
TINY_PRESET = {"vocab_size": 64, "dim": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 2, "batch": 2, "context": 16}
SMOLLM2 = {"vocab_size": 49152, "dim": 576, "n_layers": 30, "n_heads": 9, "n_kv_heads": 3, "ffn_hidden_dim": 1536,
           "rope_theta": 100000.0, "norm_eps": 1e-5}
SMOLLM2_TINY = {"vocab_size": 64, "dim": 36, "n_layers": 2, "n_heads": 3, "n_kv_heads": 1, "ffn_hidden_dim": 48,
                "rope_theta": 100000.0, "norm_eps": 1e-5}


class Recorder:
    """Prints each figure and, with --json, appends it as one JSON line (so a timeout keeps what finished)."""

    def __init__(self, path: str | None, device: str) -> None:
        self.path, self.device = path, device

    def __call__(self, **record: Any) -> None:
        record = {"benchmark": "gpu_train", "device": self.device, **record}
        print(json.dumps(record), flush=True)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="cupy")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes: a CPU smoke run of the whole script")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per side and precision")
    parser.add_argument("--precisions", default="fp32,tf32,bf16,fp16")
    parser.add_argument("--new-tokens", type=int, default=128, help="decode: tokens generated per run")
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: train,decode,torch")
    parser.add_argument("--json", default=None, metavar="PATH", help="append one JSON line per figure")
    parser.add_argument("--flash", action="store_true",
                        help="tinyllm's attention by its tiled kernels (TINYLLM_FLASH_ATTENTION=1; CuPy only)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    import numpy as np

    import tinyllm as tl

    backend = tl.set_backend(args.backend, seed=0)
    if args.flash:
        if backend.kernels is None:
            raise SystemExit("error: --flash needs the cupy backend with its kernels (TINYLLM_KERNELS not 0)")
        backend.flash_attention = True
    torch = None
    if "torch" not in skip:
        try:
            import torch
        except ImportError:
            print("(PyTorch not installed: tinyllm only)", file=sys.stderr)
    torch_device = "cuda" if args.backend == "cupy" else "cpu"
    record = Recorder(args.json, backend.device_name())

    if "train" not in skip:
        shape = TINY_PRESET if args.tiny else GPU_PRESET
        for precision in args.precisions.split(","):
            bench_train(tl, np, torch, torch_device, shape, precision, args.steps, record)
    if "decode" not in skip:
        shape = SMOLLM2_TINY if args.tiny else SMOLLM2
        bench_decode(tl, np, torch, torch_device, shape, args.prompt_tokens, args.new_tokens, record)


# ----------------------------------------------------------------------------------------- memory


class Memory:
    """Peak memory of one side: the device allocator's high-water mark, or the process's RSS on the CPU."""

    def __init__(self, side: str, tl: Any, torch: Any) -> None:
        self.side, self.tl, self.torch = side, tl, torch
        self.gpu = tl.get_backend().name == "cupy"

    def reset(self) -> None:
        self.rss_before = peak_rss_mb()
        if self.gpu and self.side == "tinyllm":
            pool = self.tl.get_backend().xp.get_default_memory_pool()
            pool.free_all_blocks()  # what the pool holds after the steps is then this side's high-water mark
        elif self.gpu:
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_mb(self) -> float:
        if self.gpu and self.side == "tinyllm":
            return self.tl.get_backend().xp.get_default_memory_pool().total_bytes() / 2**20  # held, i.e. reserved
        if self.gpu:
            return self.torch.cuda.max_memory_reserved() / 2**20
        return peak_rss_mb() - self.rss_before  # growth of the process's peak (CPU: a rough figure)


def synchronize(tl: Any, torch: Any, device: str) -> None:
    tl.get_backend().synchronize()
    if torch is not None and device == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------- training


def set_tf32(tl: Any, torch: Any, enabled: bool) -> bool:
    """TF32 matmuls on both sides; returns whether tinyllm's backend could switch it."""
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
    return tl.get_backend().set_tf32(enabled)


def bench_train(tl: Any, np: Any, torch: Any, device: str, shape: dict, precision: str, steps: int, record: Any) -> None:
    from tinyllm.amp import MixedPrecision
    from tinyllm.models import ModelConfig, Transformer
    from tinyllm.optim import AdamW

    B, T = shape["batch"], shape["context"]
    config = ModelConfig(vocab_size=shape["vocab_size"], dim=shape["dim"], n_layers=shape["n_layers"],
                         n_heads=shape["n_heads"], n_kv_heads=shape["n_kv_heads"], max_seq_len=T,
                         tie_embeddings=False, dropout=0.0)
    note = None
    tf32_switched = set_tf32(tl, torch, precision == "tf32")
    rng = np.random.default_rng(0)
    idx_host = rng.integers(0, config.vocab_size, (B, T))
    targets_host = rng.integers(0, config.vocab_size, (B, T))
    backend = tl.get_backend()

    tl.get_backend().seed(0)
    model = Transformer(config)
    steps_by_side: dict[str, Any] = {}
    memory = {"tinyllm": Memory("tinyllm", tl, torch), "torch": Memory("torch", tl, torch)}
    amp = None
    if precision in ("bf16", "fp16"):
        try:
            amp = MixedPrecision(model, {"bf16": "bfloat16", "fp16": "float16"}[precision])
        except Exception as error:  # noqa: BLE001 (bfloat16 without ml_dtypes, a backend without the dtype)
            note = f"tinyllm cannot run {precision} here: {error}"
    if note is None:
        optimizer = AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
        idx, targets = backend.asarray(idx_host), backend.asarray(targets_host)  # on the device once

        def tinyllm_step() -> Any:
            if amp is None:
                _, loss = model(idx, targets)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                return loss
            # tinyllm.train.train_step's mixed-precision path, without its clipping and loss read (as torch's side)
            _, loss = amp.forward_model()(idx, targets)  # float16/bfloat16 activations, float32 loss
            (loss * amp.loss_scale).backward()
            amp.accumulate_grads()  # float32 master gradients
            if amp.unscale_grads():  # fp16: False when a gradient overflowed (the step is skipped)
                optimizer.step()
                amp.step_done()
            optimizer.zero_grad()
            return loss

        steps_by_side["tinyllm"] = tinyllm_step

    if torch is not None:
        from train_step import TorchLlama

        torch_model = TorchLlama(config, torch)
        state = {}
        for name, array in model.state_dict().items():  # the same initial weights, through the host
            key = name.replace("attention.", "").replace("feed_forward.", "")
            state[key] = torch.from_numpy(np.array(backend.to_host(array)))
        torch_model.module.load_state_dict(state)
        torch_model.module.to(device)
        torch_model.cos, torch_model.sin = torch_model.cos.to(device), torch_model.sin.to(device)
        torch_opt = torch.optim.AdamW(torch_model.parameters(), lr=3e-4, weight_decay=0.1)
        tidx = torch.from_numpy(idx_host).to(device)
        ttargets = torch.from_numpy(targets_host).to(device)
        autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        scaler = torch.amp.GradScaler(device) if precision == "fp16" else None

        def torch_step() -> Any:
            with torch.autocast(device, dtype=autocast, enabled=autocast is not None):
                loss = torch_model(tidx, ttargets)
            torch_opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(torch_opt)
                scaler.update()
            else:
                loss.backward()
                torch_opt.step()
            return loss

        steps_by_side["torch"] = torch_step

    times: dict[str, list[float]] = {side: [] for side in steps_by_side}
    first_loss = {}
    for side, step in list(steps_by_side.items()):  # warm-up (kernels compile, pools fill); first losses must agree
        memory[side].reset()
        try:
            first_loss[side] = step().item()  # both Tensor and torch.Tensor have .item()
            step()
            synchronize(tl, torch, device)
        except Exception as error:  # noqa: BLE001 (e.g. a bfloat16 op CuPy lacks): report it, time the other side
            if side != "tinyllm":
                raise
            note = f"tinyllm {precision} failed: {type(error).__name__}: {error}"[:300]
            del steps_by_side[side]
    for _ in range(steps):  # alternate the sides, so drifting clocks or neighbours hit both alike
        for side, step in steps_by_side.items():
            synchronize(tl, torch, device)
            start = time.perf_counter()
            step()
            synchronize(tl, torch, device)
            times[side].append(time.perf_counter() - start)
    tokens = B * T
    result = {"kind": "train", "precision": precision, "batch": B, "context": T,
              "parameters": model.num_parameters(), "tinyllm_tf32_switched": tf32_switched,
              "tinyllm_attention": "tiled" if tl.get_backend().flash_attention else "matrix"}
    if amp is not None and "tinyllm" in steps_by_side:
        result["tinyllm_loss_scale"], result["tinyllm_skipped_steps"] = amp.loss_scale, amp.scaler.skipped_steps
    for side in steps_by_side:
        median = statistics.median(times[side])
        result[side] = {"median_s": median, "tokens_per_s": tokens / median, "peak_memory_mb": memory[side].peak_mb(),
                        "first_loss": first_loss[side], "steps": [round(t, 5) for t in times[side]]}
    if "tinyllm" in result and "torch" in result:
        result["ratio_tokens_per_s"] = result["tinyllm"]["tokens_per_s"] / result["torch"]["tokens_per_s"]
    if note is not None:
        result["note"] = note
    record(**result)
    set_tf32(tl, torch, False)


# ----------------------------------------------------------------------------------------- decode


class TorchDecoder:
    """The same LLaMA architecture as tinyllm's Transformer, decoding one token at a time with a KV cache."""

    def __init__(self, reference: Any, torch: Any, device: str, max_len: int) -> None:
        self.r, self.torch, self.device = reference, torch, device
        c = reference.c
        self.k = [torch.zeros(1, c.n_kv_heads, max_len, c.head_dim, device=device) for _ in range(c.n_layers)]
        self.v = [torch.zeros_like(k) for k in self.k]
        self.length = 0

    def rope(self, x: Any, start: int) -> Any:  # x (1, H, T, D)
        T, half = x.shape[2], x.shape[3] // 2
        cos, sin = self.r.cos[start : start + T], self.r.sin[start : start + T]
        x1, x2 = x[..., :half], x[..., half:]
        return self.torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def __call__(self, ids: Any) -> Any:  # ids (1, T) -> logits of the last position (vocab,)
        c, F, m = self.r.c, self.r.F, self.r.module
        B, T = ids.shape
        start, end = self.length, self.length + T
        x = m.tok_embeddings(ids)
        for i, layer in enumerate(m.layers):
            h = layer.attention_norm(x)
            q = self.rope(layer.wq(h).view(B, T, c.n_heads, c.head_dim).transpose(1, 2), start)
            k = self.rope(layer.wk(h).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2), start)
            self.k[i][:, :, start:end] = k
            self.v[i][:, :, start:end] = layer.wv(h).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
            out = F.scaled_dot_product_attention(q, self.k[i][:, :, :end], self.v[i][:, :, :end],
                                                 is_causal=T > 1, enable_gqa=True)
            x = x + layer.wo(out.transpose(1, 2).reshape(B, T, -1))
            h = layer.ffn_norm(x)
            x = x + layer.w_down(F.silu(layer.w_gate(h)) * layer.w_up(h))
        self.length = end
        return m.lm_head(m.norm(x[:, -1]))[0]


def bench_decode(tl: Any, np: Any, torch: Any, device: str, shape: dict, n_prompt: int, n_new: int, record: Any) -> None:
    from tinyllm.models import ModelConfig, Transformer
    from tinyllm.sampling import generate

    backend = tl.get_backend()
    backend.seed(0)
    set_tf32(tl, torch, False)  # full float32 on both sides
    context = n_prompt + n_new
    config = ModelConfig(**shape, max_seq_len=context, tie_embeddings=False)
    model = Transformer(config)
    prompt = np.random.default_rng(0).integers(0, config.vocab_size, n_prompt).tolist()

    def tinyllm_decode() -> tuple[float, float, list[int]]:
        start, first, tokens = time.perf_counter(), None, []
        for token in generate(model, prompt, n_new, temperature=0):
            tokens.append(token)
            first = first or time.perf_counter()
        return first - start, time.perf_counter() - first, tokens

    sides = {"tinyllm": tinyllm_decode}
    if torch is not None:
        from train_step import TorchLlama

        reference = TorchLlama(config, torch)
        state = {}
        for name, array in model.state_dict().items():
            key = name.replace("attention.", "").replace("feed_forward.", "")
            state[key] = torch.from_numpy(np.array(backend.to_host(array)))
        reference.module.load_state_dict(state)
        reference.module.to(device)
        reference.cos, reference.sin = reference.cos.to(device), reference.sin.to(device)

        def torch_decode() -> tuple[float, float, list[int]]:
            with torch.no_grad():
                decoder = TorchDecoder(reference, torch, device, context)
                start = time.perf_counter()
                ids = torch.tensor([prompt], device=device)
                tokens = [int(decoder(ids).argmax())]  # .item(): the token goes to the host, as tinyllm's does
                first = time.perf_counter()
                for _ in range(n_new - 1):
                    tokens.append(int(decoder(torch.tensor([[tokens[-1]]], device=device)).argmax()))
                return first - start, time.perf_counter() - first, tokens

        sides["torch"] = torch_decode

    for side in sides.values():  # warm-up
        side()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    outputs = {}
    for _ in range(3):
        for name, side in sides.items():
            prefill, decode, tokens = side()
            runs[name].append((prefill, decode))
            outputs[name] = tokens
    result = {"kind": "decode", "shape": "SmolLM2-135M (random weights)" if shape is SMOLLM2 else "tiny",
              "prompt_tokens": n_prompt, "new_tokens": n_new, "parameters": model.num_parameters()}
    for name in sides:
        decode_s = statistics.median(d for _, d in runs[name])
        result[name] = {"decode_tokens_per_s": (n_new - 1) / decode_s,
                        "prefill_s": statistics.median(p for p, _ in runs[name])}
    if "torch" in sides:
        result["ratio_tokens_per_s"] = result["tinyllm"]["decode_tokens_per_s"] / result["torch"]["decode_tokens_per_s"]
        same = sum(a == b for a, b in zip(outputs["tinyllm"], outputs["torch"]))
        result["same_greedy_tokens"] = f"{same}/{n_new}"  # random weights: near-ties may flip late tokens
    record(**result)


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
