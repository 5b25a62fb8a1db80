"""Train a small LLaMA-style model on Tiny Shakespeare, from the tokenizer up, and print a sample.

    python examples/train_shakespeare.py                  # cpu preset: a few minutes on a laptop CPU
    python examples/train_shakespeare.py --resume         # continue from out/shakespeare/last
    python examples/train_shakespeare.py --preset gpu --backend cupy    # nanoGPT's scale, ~10M parameters
    python examples/train_shakespeare.py --preset tiny    # a smoke run of a few seconds

Steps, each in the library module named:

1. find the text: --data, or a copy already on disk, or download it (once);
2. train a byte-level BPE tokenizer on it (tinyllm.data.train_tokenizer_cached, cached);
3. tokenize the text into train/val token files (tinyllm.data.prepare_tokens, cached);
4. build the model (tinyllm.models.Transformer) and train it (tinyllm.train.train), which
   evaluates, logs to out/shakespeare/log.jsonl (+ loss.png with matplotlib) and saves
   out/shakespeare/last and out/shakespeare/best (tinyllm.checkpoint);
5. print the final val loss and bits per character, and generate a sample (tinyllm.sampling).
"""

from __future__ import annotations

import argparse
import codecs
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

import tinyllm as tl
from tinyllm.backends import backend_name_from_environment
from tinyllm.checkpoint import CheckpointError, load_checkpoint
from tinyllm.data import TokenDataset, prepare_tokens, train_tokenizer_cached
from tinyllm.models import ModelConfig, Transformer
from tinyllm.tokenizer import load_tokenizer
from tinyllm.train import TrainConfig, TrainingDiverged, train
from tinyllm.utils import estimate_memory, get_device

DATA_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
REPO = Path(__file__).resolve().parent.parent
# Where a copy of the text may already be: a checkout's shared data folder, then our own download.
KNOWN_COPIES = (REPO.parent / "shared" / "data" / "tinyshakespeare.txt", Path("data") / "tinyshakespeare.txt")

# Model and training settings of each preset; any of them can be overridden on the command line.
PRESETS = {
    # About 0.8M parameters; 1000 steps of 16 x 128 tokens (about 4 passes over the text) on 2 CPU cores.
    "cpu": {
        "vocab_size": 512, "dim": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "dropout": 0.0,
        "block_size": 128, "batch_size": 16, "max_steps": 1000, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 50,
        "eval_interval": 100, "eval_iters": 20,
    },
    # nanoGPT's Tiny Shakespeare model: 6 layers, dim 384, context 256, dropout 0.2 (about 10M parameters).
    "gpu": {
        "vocab_size": 1024, "dim": 384, "n_layers": 6, "n_heads": 6, "n_kv_heads": 6, "dropout": 0.2,
        "block_size": 256, "batch_size": 64, "max_steps": 5000, "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 100,
        "eval_interval": 250, "eval_iters": 100,
    },
    # A smoke test: seconds, not a useful model.
    "tiny": {
        "vocab_size": 320, "dim": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "dropout": 0.0,
        "block_size": 32, "batch_size": 8, "max_steps": 40, "lr": 1e-2, "min_lr": 1e-3, "warmup_steps": 5,
        "eval_interval": 20, "eval_iters": 4,
    },
}
MODEL_KEYS = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "dropout")
TRAIN_KEYS = ("block_size", "batch_size", "grad_accum_steps", "max_steps", "lr", "min_lr", "warmup_steps",
              "weight_decay", "grad_clip", "eval_interval", "eval_iters", "log_interval", "seed")


def preset_default(key: str) -> str:
    """The default of a model or training flag for --help: "default: cpu 128, gpu 384, tiny 32"."""
    values = [f"{name} {preset[key]}" for name, preset in PRESETS.items() if key in preset]
    return "default: " + (", ".join(values) if values else str(getattr(TrainConfig, key)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train a small LLaMA-style language model on Tiny Shakespeare with tinyllm.",
        epilog="Model and training flags left out take the preset's value. Outputs go to --out-dir: checkpoints "
        "last/ and best/, log.jsonl, loss.png (with matplotlib) and cache/ (tokenizer and token files).",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                        help="cpu (default): a few minutes on a laptop CPU; gpu: nanoGPT's scale, for --backend cupy; "
                        "tiny: a smoke run of seconds")
    parser.add_argument("--backend", choices=["numpy", "cupy"], default=None,
                        help="array backend (default: $TINYLLM_BACKEND, else numpy; cupy needs CuPy and an NVIDIA GPU)")
    parser.add_argument("--data", type=Path, metavar="PATH",
                        help="the text file to train on (default: ../shared/data or data/tinyshakespeare.txt, "
                        "downloaded there if missing)")
    parser.add_argument("--out-dir", type=Path, default=Path("out/shakespeare"), metavar="DIR",
                        help="where checkpoints and logs go (default: out/shakespeare)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in DIR/last with its own settings (only --max-steps may change)")
    parser.add_argument("--no-progress", action="store_true", help="print log lines instead of a progress bar")
    parser.add_argument("--sample-tokens", type=int, default=200, metavar="N",
                        help="tokens to generate at the end, at most the context (default: 200; 0: no sample)")
    flags = {
        "model": [
            ("--vocab-size", int, "BPE vocabulary size (256 bytes + merges + <|endoftext|>)"),
            ("--dim", int, "width of the residual stream"),
            ("--n-layers", int, "transformer blocks"),
            ("--n-heads", int, "query heads"),
            ("--n-kv-heads", int, "key/value heads (grouped-query attention when fewer than --n-heads)"),
            ("--dropout", float, "dropout probability while training"),
        ],
        "training": [
            ("--block-size", int, "context length: tokens per training sequence"),
            ("--batch-size", int, "sequences per micro-batch"),
            ("--grad-accum-steps", int, "micro-batches per optimizer step"),
            ("--max-steps", int, "optimizer steps in total"),
            ("--lr", float, "peak learning rate, after warmup"),
            ("--min-lr", float, "learning rate at the end of the cosine decay"),
            ("--warmup-steps", int, "steps of linear warmup"),
            ("--weight-decay", float, "AdamW weight decay, on matrices only"),
            ("--grad-clip", float, "largest global gradient norm (0: no clipping)"),
            ("--eval-interval", int, "evaluate and save a checkpoint every this many steps"),
            ("--eval-iters", int, "val batches per evaluation"),
            ("--log-interval", int, "steps between lines in log.jsonl"),
            ("--seed", int, "random seed of the weights, batches, dropout and sample"),
        ],
    }
    for title, group_flags in flags.items():
        group = parser.add_argument_group(title)
        for flag, kind, text in group_flags:
            key = flag[2:].replace("-", "_")
            names = [flag, "--max-iters"] if flag == "--max-steps" else [flag]
            group.add_argument(*names, dest=key, type=kind, metavar="N" if kind is int else "X",
                               help=f"{text} ({preset_default(key)})")
    return parser.parse_args(argv)


def find_text(path: Path | None) -> Path:
    """The text to train on: ``path``, else a known copy, else a fresh download into data/."""
    if path is not None:
        if not path.exists():
            sys.exit(f"error: --data {path} does not exist")
        return path
    for copy in KNOWN_COPIES:
        if copy.exists():
            return copy
    target = KNOWN_COPIES[-1]
    print(f"downloading Tiny Shakespeare from {DATA_URL} to {target} ...")
    try:
        with urllib.request.urlopen(DATA_URL, timeout=60) as response:
            text = response.read()
    except (urllib.error.URLError, TimeoutError) as error:
        sys.exit(
            f"error: could not download Tiny Shakespeare ({error}). If you are offline, copy the file by hand to "
            f"{target} (from {DATA_URL}), or pass --data PATH with any UTF-8 text file."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_suffix(".tmp").write_bytes(text)
    os.replace(target.with_suffix(".tmp"), target)
    return target


def unigram_loss(data: TokenDataset) -> float:
    """Val loss (nats per token) of the best model that ignores context: each token's frequency in train.

    A model that learned anything from context must beat it.
    """
    counts = np.bincount(np.asarray(data.train), minlength=data.vocab_size) + 1.0  # +1: no zero probabilities
    log_probs = np.log(counts / counts.sum())
    return float(-log_probs[np.asarray(data.val)].mean())


def print_sample(model: Transformer, tokenizer, n_tokens: int, seed: int) -> None:  # noqa: ANN001
    """Stream a sample that starts from "ROMEO:" (lazy import: sampling is only needed here).

    The model has no positions beyond its context (max_seq_len), so the sample ends there.
    """
    from tinyllm.sampling import generate

    prompt = "ROMEO:"
    prompt_ids = tokenizer.encode(prompt)
    n_tokens = min(n_tokens, model.config.max_seq_len - len(prompt_ids))
    print(f"\n--- sample ({n_tokens} tokens, temperature 0.8, top-k 40) ---\n{prompt}", end="", flush=True)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a token can end inside a character
    model.eval()
    for token in generate(model, prompt_ids, n_tokens, temperature=0.8, top_k=40, seed=seed):
        print(decoder.decode(tokenizer.decode_bytes([token])), end="", flush=True)
    print(decoder.decode(b"", final=True) + "\n---")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    settings = {}  # a flag given on the command line wins over the preset; None: TrainConfig's default
    for key in MODEL_KEYS + TRAIN_KEYS:
        settings[key] = getattr(args, key) if getattr(args, key) is not None else PRESETS[args.preset].get(key)
    seed = settings["seed"] if settings["seed"] is not None else TrainConfig.seed
    try:
        tl.set_backend(backend_name_from_environment(args.backend), seed=seed)  # the seed also fixes the weights
    except (ValueError, tl.BackendUnavailableError) as error:  # a bad TINYLLM_BACKEND, or no CuPy / GPU
        print(f"error: {error}", file=sys.stderr)
        return 2
    text_path = find_text(args.data)
    cache_dir = args.out_dir / "cache"

    # -- the run's settings: from the checkpoint when resuming, else from the preset and flags ----------
    checkpoint = None
    if args.resume:
        try:
            checkpoint = load_checkpoint(args.out_dir / "last")
        except CheckpointError as error:
            print(f"error: cannot resume: {error}", file=sys.stderr)
            return 1
        saved = {**checkpoint.train_config, "out_dir": str(args.out_dir), "progress": not args.no_progress}
        if args.max_steps is not None:
            saved["max_steps"] = args.max_steps
        train_config = TrainConfig.from_dict(saved)
        tokenizer_path = checkpoint.tokenizer_path
    else:
        train_config = TrainConfig.from_dict(
            {k: settings[k] for k in TRAIN_KEYS if settings[k] is not None}
            | {"out_dir": str(args.out_dir), "progress": not args.no_progress}
        )
        tokenizer_path = train_tokenizer_cached(text_path, settings["vocab_size"], cache_dir)
        if (args.out_dir / "last").exists():
            print(f"note: starting a new run; it replaces the checkpoints in {args.out_dir} (--resume continues them)")

    # -- data ----------------------------------------------------------------------------------------------
    data = prepare_tokens(text_path, tokenizer_path, cache_dir)
    print(f"data: {text_path} -> {len(data.train):,} train and {len(data.val):,} val tokens "
          f"({data.chars_per_token:.2f} characters per token); a unigram model scores {unigram_loss(data):.3f} on val")

    # -- model -----------------------------------------------------------------------------------------------
    if checkpoint is not None:
        model_config = checkpoint.model_config
    else:
        # A short text can run out of pairs to merge before vocab_size: size the model to the real tokenizer.
        model_config = ModelConfig(
            vocab_size=data.vocab_size, dim=settings["dim"], n_layers=settings["n_layers"], n_heads=settings["n_heads"],
            n_kv_heads=settings["n_kv_heads"], dropout=settings["dropout"], max_seq_len=train_config.block_size,
        )
    model = Transformer(model_config)
    n_params = model.num_parameters()
    memory = estimate_memory(model, train_config.batch_size, train_config.block_size)
    print(f"model: {n_params:,} parameters, {model_config.n_layers} layers, dim {model_config.dim}, "
          f"{model_config.n_heads} heads ({model_config.n_kv_heads} key/value), context {train_config.block_size}; "
          f"backend {get_device()}")
    print(f"estimated training memory {memory['total'] / 2**20:.1f} MiB: weights {memory['parameters'] / 2**20:.1f}, "
          f"gradients {memory['gradients'] / 2**20:.1f}, AdamW state {memory['optimizer'] / 2**20:.1f}, "
          f"activations {memory['activations'] / 2**20:.1f} MiB")
    print(f"training: {train_config.max_steps} steps of {train_config.batch_size} x {train_config.block_size} tokens"
          + (f" x {train_config.grad_accum_steps}" if train_config.grad_accum_steps > 1 else "")
          + (f", resuming at step {checkpoint.train_state['step']}" if checkpoint else ""))

    # -- train -----------------------------------------------------------------------------------------------
    try:
        result = train(model, data, train_config, checkpoint=checkpoint)
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted. Continue from the last checkpoint with: python {sys.argv[0]} --resume "
              f"--out-dir {args.out_dir}", file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - started
    if "val_loss" in result:
        print(f"\ndone: step {result['step']} in {elapsed / 60:.1f} min; val loss {result['val_loss']:.4f} "
              f"(perplexity {result['val_perplexity']:.1f}), {result['val_bpc']:.3f} bits per character, "
              f"next-token accuracy {result['val_accuracy']:.1%}; best val loss {result['best_val_loss']:.4f}; "
              f"{result['tokens_per_second']:,.0f} tokens/s")
    print(f"checkpoints: {args.out_dir / 'last'} and {args.out_dir / 'best'}; log: {args.out_dir / 'log.jsonl'}"
          + (f", plot: {args.out_dir / 'loss.png'}" if (args.out_dir / "loss.png").exists() else
             " (pip install 'tinyllm[plot]' for a loss plot)"))
    if args.sample_tokens > 0:
        print_sample(model, load_tokenizer(tokenizer_path), args.sample_tokens, seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
