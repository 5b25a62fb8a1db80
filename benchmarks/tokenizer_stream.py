"""Benchmark the streaming tokenizer: ``prepare_tokens`` on a big text file, peak memory and MB/s.

Makes a text file of the asked size in /tmp (never in the repository): Tiny Shakespeare repeated
with variations (each copy has its paragraphs in another order, a numbered heading, and some
lines in upper case), trains a 512-token tokenizer on Tiny Shakespeare, and runs
``prepare_tokens`` on the file in a fresh process per run, with 1 worker and with a pool of 2.
Each run reports wall time, MB/s (the file's bytes / wall time of prepare_tokens, which includes
hashing the file and one pass counting its characters), peak RSS: of the main process, and of
the largest worker (``ru_maxrss``), so the whole pool peaks at most at main + workers * worker,
and the CPU seconds of the main process and of all workers together (on a busy machine, wall
time / CPU time shows how much of a core each process got).

    python benchmarks/tokenizer_stream.py --size-mb 1000              # the 1 GB figure
    python benchmarks/tokenizer_stream.py --size-mb 50 --workers 1 2  # quicker
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


def make_text(source: Path, target: Path, size_bytes: int, seed: int = 0) -> None:
    """Write about ``size_bytes`` of Tiny Shakespeare variations to ``target`` (one copy at a time)."""
    paragraphs = source.read_text(encoding="utf-8").split("\n\n")
    rng = random.Random(seed)
    written = 0
    with open(target, "w", encoding="utf-8") as f:
        copy = 0
        while written < size_bytes:
            order = paragraphs[:]
            rng.shuffle(order)
            order = ["\n".join(line.upper() if rng.random() < 0.02 else line for line in p.split("\n")) for p in order]
            text = f"COPY {copy}\n\n" + "\n\n".join(order) + "\n\n"
            text = text[: max(0, size_bytes - written)] if written + len(text) > size_bytes else text
            f.write(text)
            written += len(text.encode("utf-8"))
            copy += 1


def child(text_path: str, tokenizer_path: str, workers: int) -> None:
    """One measured run (in its own process, so the peak RSS is this run's)."""
    sys.path.insert(0, str(REPO))
    from tinyllm.data import prepare_tokens

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        data = prepare_tokens(text_path, tokenizer_path, cache, workers=workers)
        seconds = time.perf_counter() - start
        n_tokens = len(data.train) + len(data.val)
    result = {
        "seconds": seconds,
        "tokens": n_tokens,
        "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "cpu_main_s": resource.getrusage(resource.RUSAGE_SELF).ru_utime + resource.getrusage(resource.RUSAGE_SELF).ru_stime,
        "cpu_workers_s": resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
        + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime,
    }
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1000, help="size of the generated text (MB, 10^6 bytes)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to run, in order")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="Tiny Shakespeare")
    parser.add_argument("--text", default=None, help="the big file (default /tmp/tinyllm-stream-<size>MB.txt)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return

    sys.path.insert(0, str(REPO))
    from tinyllm.tokenizer import BPETokenizer

    size = int(args.size_mb * 1e6)
    text_path = Path(args.text or f"/tmp/tinyllm-stream-{args.size_mb:g}MB.txt")
    if not text_path.exists() or text_path.stat().st_size != size:
        start = time.perf_counter()
        make_text(Path(args.data), text_path, size)
        print(f"made {text_path} ({size / 1e6:.0f} MB) in {time.perf_counter() - start:.0f} s")
    tokenizer_path = Path(tempfile.gettempdir()) / "tinyllm-stream-tokenizer-512.json"
    BPETokenizer.train(Path(args.data).read_text(encoding="utf-8"), 512).save(tokenizer_path)

    print(f"prepare_tokens on {text_path} ({size / 1e6:.0f} MB), vocabulary 512, one fresh process per run")
    print(
        f"{'workers':>7} | {'seconds':>8} | {'MB/s':>6} | {'tokens':>12} | {'peak RSS main':>13} | {'largest worker':>14} | "
        f"{'CPU s main':>10} | {'CPU s workers':>13}"
    )
    for workers in args.workers:
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(text_path), str(tokenizer_path), str(workers)],
            check=True, capture_output=True, text=True,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        worker = f"{r['peak_rss_worker_mb']:>11.0f} MB" if workers > 1 else f"{'-':>14}"
        print(
            f"{workers:>7} | {r['seconds']:>8.1f} | {size / 1e6 / r['seconds']:>6.2f} | {r['tokens']:>12,} | "
            f"{r['peak_rss_main_mb']:>10.0f} MB | {worker} | {r['cpu_main_s']:>10.1f} | {r['cpu_workers_s']:>13.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
