"""Train a small LLaMA-style model on Tiny Shakespeare, from the tokenizer up, and print a sample.

    python examples/train_shakespeare.py                  # cpu preset: a few minutes on a laptop CPU
    python examples/train_shakespeare.py --resume         # continue from out/shakespeare/last
    python examples/train_shakespeare.py --overwrite      # start again, replacing the run in out/shakespeare
    python examples/train_shakespeare.py --data my.txt --out-dir out/mine   # any UTF-8 text file
    python examples/train_shakespeare.py --preset gpu --backend cupy    # nanoGPT's scale, ~10M parameters
    python examples/train_shakespeare.py --preset gpu --backend cupy --dtype float16   # mixed precision (tinyllm.amp)
    python examples/train_shakespeare.py --preset tiny    # a smoke run of a few seconds
    mpiexec -n 2 python examples/train_shakespeare.py     # data-parallel on 2 processes (pip install "tinyllm[mpi]")

Steps, each in the library module named:

1. find the text: --data, or data/tinyshakespeare.txt, or download it there (once; offline, put
   the file there yourself: https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt);
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
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

import tinyllm as tl
import tinyllm.distributed as dist
from tinyllm.amp import check_backend_runs
from tinyllm.backends import backend_name_from_environment
from tinyllm.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from tinyllm.cli import (
    DATA_URL,
    DEFAULT_TEXT,
    ArgumentParser,
    UsageError,
    add_debug_flag,
    check_out_dir,
    find_text,
    run_main,
)
from tinyllm.data import TokenDataset, prepare_tokens, train_tokenizer_cached
from tinyllm.fileio import sha256_file
from tinyllm.models import ModelConfig, Transformer
from tinyllm.tokenizer import load_tokenizer
from tinyllm.train import TrainConfig, TrainingDiverged, train
from tinyllm.utils import estimate_memory, get_device

# Model and training settings of each preset; any of them can be overridden on the command line.
PRESETS = {
    # About 0.8M parameters; 1000 steps of 16 x 128 tokens (about 4 passes over the text) on 2 CPU cores.
    "cpu": {
        "vocab_size": 512, "dim": 128, "n_layers": 4, "n_heads": 4, "n_kv_heads": 2, "dropout": 0.0,
        "block_size": 128, "batch_size": 16, "max_steps": 1000, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 50,
        "eval_interval": 100, "eval_iters": 20,
    },
    # nanoGPT's Tiny Shakespeare model: 6 layers, dim 384, context 256, dropout 0.2 (about 10M parameters).
    # 750 steps, not nanoGPT's 5000: with 1024 BPE tokens the text is 384k training tokens, 23 steps of
    # 64 x 256, and on an H200 validation was best near step 250 whatever the length (5000 steps: 2.112
    # bits/char at 250, then 3.5 by 2250 as the model memorises; 750 steps: 2.106 at 250, 65 s in all).
    "gpu": {
        "vocab_size": 1024, "dim": 384, "n_layers": 6, "n_heads": 6, "n_kv_heads": 6, "dropout": 0.2,
        "block_size": 256, "batch_size": 64, "max_steps": 750, "lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 100,
        "eval_interval": 125, "eval_iters": 100,
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
              "weight_decay", "grad_clip", "eval_interval", "eval_iters", "log_interval", "seed", "dtype")


def preset_default(key: str) -> str:
    """The default of a model or training flag for --help: "default: cpu 128, gpu 384, tiny 32"."""
    values = [f"{name} {preset[key]}" for name, preset in PRESETS.items() if key in preset]
    return "default: " + (", ".join(values) if values else str(getattr(TrainConfig, key)))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(
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
                        help=f"the text file to train on: any UTF-8 text (default: {DEFAULT_TEXT}, relative to the "
                        f"current directory; downloaded there if missing; offline, copy Tiny Shakespeare there from "
                        f"{DATA_URL})")
    parser.add_argument("--out-dir", type=Path, default=Path("out/shakespeare"), metavar="DIR",
                        help="where checkpoints and logs go (default: out/shakespeare)")
    parser.add_argument("--resume", nargs="?", const="last", default=None, metavar="CHECKPOINT",
                        help="continue the run saved in DIR/last with its own settings (only --max-steps may change); "
                        "--resume best continues from DIR/best, --resume PATH from any checkpoint directory")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run even though DIR holds one, replacing its checkpoints and log")
    parser.add_argument("--new-data", action="store_true",
                        help="with --resume: continue on a --data text other than the one the run was trained on")
    add_debug_flag(parser)
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
            ("--dtype", str, "precision of forward and backward: float32, float16 (with loss scaling) or bfloat16 "
                             "(needs ml_dtypes); weights, optimizer state and checkpoints stay float32"),
        ],
    }
    for title, group_flags in flags.items():
        group = parser.add_argument_group(title)
        for flag, kind, text in group_flags:
            key = flag[2:].replace("-", "_")
            names = [flag, "--max-iters"] if flag == "--max-steps" else [flag]
            group.add_argument(*names, dest=key, type=kind, metavar="N" if kind is int else "X",
                               help=f"{text} ({preset_default(key)})")
    args = parser.parse_args(argv)
    try:
        check_settings(args)
    except ValueError as error:
        parser.error(str(error))
    return args


def check_settings(args: argparse.Namespace) -> None:
    """Build the configs from the flags once, before any slow work, so a bad flag costs no time.

    ``ModelConfig`` and ``TrainConfig`` check every value (and name the field); a vocabulary needs
    room for the 256 bytes and <|endoftext|>.
    """
    if args.resume is not None:
        return  # the run's settings come from its checkpoint
    settings = run_settings(args)
    if settings["vocab_size"] < 257:
        raise ValueError(f"--vocab-size {settings['vocab_size']}: the BPE vocabulary needs at least 257 tokens "
                         f"(256 bytes + <|endoftext|>)")
    TrainConfig.from_dict({k: settings[k] for k in TRAIN_KEYS if settings[k] is not None})
    ModelConfig(**{k: settings[k] for k in MODEL_KEYS}, max_seq_len=settings["block_size"])


def run_settings(args: argparse.Namespace) -> dict:
    """A flag given on the command line wins over the preset; None: TrainConfig's default."""
    return {key: getattr(args, key) if getattr(args, key) is not None else PRESETS[args.preset].get(key)
            for key in MODEL_KEYS + TRAIN_KEYS}


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


def load_run_checkpoint(out_dir: Path, which: str) -> Checkpoint:
    """The checkpoint --resume names (last, best, or a path), checked to hold a training run.

    When last/ is damaged but best/ is intact, the error says how to continue from best/.
    """
    path = out_dir / which if which in ("last", "best") else Path(which)
    try:
        checkpoint = load_checkpoint(path)
        checkpoint.training_state()
        return checkpoint
    except CheckpointError as error:
        hint = ""
        if which == "last" and (out_dir / "best").exists():
            try:
                step = load_checkpoint(out_dir / "best").training_state()["step"]
                hint = f" {out_dir / 'best'} is intact (step {step}): continue from it with --resume best"
            except CheckpointError:
                hint = f" {out_dir / 'best'} cannot be resumed from either."
        raise CheckpointError(f"cannot resume: {error}{hint}") from None


def check_same_data(checkpoint: Checkpoint, text_path: Path, new_data: bool) -> None:
    """Refuse to continue a run on a text other than its own (by SHA-256), unless ``new_data``."""
    saved = checkpoint.train_state.get("text_sha256")
    if not saved:
        print(f"warning: {checkpoint.directory} does not record the hash of the text it was trained on (saved by an "
              f"older tinyllm), so it cannot be checked against {text_path}; continuing", file=sys.stderr)
        return
    current = sha256_file(text_path)
    if current != saved and not new_data:
        raise UsageError(
            f"{checkpoint.directory} was trained on a text with SHA-256 {saved[:12]}..., but --data {text_path} has "
            f"{current[:12]}...: pass the --data the run was trained on, or --new-data to continue training on this "
            f"text (its val loss then decides what is saved in best/)"
        )


def resume_hint(argv: list[str]) -> str:
    """The command as it was run, plus --resume (without --overwrite or a --resume of another checkpoint)."""
    words, skip = [], False
    for i, word in enumerate(argv):
        if skip:
            skip = False
            continue
        if word == "--resume":  # "--resume best": continue from last/ now, which is newer
            skip = i + 1 < len(argv) and not argv[i + 1].startswith("-")
            continue
        if word != "--overwrite" and not word.startswith("--resume="):
            words.append(word)
    return shlex.join(["python", sys.argv[0], *words, "--resume"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    started = time.perf_counter()
    if args.new_data and args.resume is None:
        raise UsageError("--new-data only applies with --resume (continuing a run on another text)")
    check_out_dir(args.out_dir, resume=args.resume is not None, overwrite=args.overwrite)  # before any slow work
    settings = run_settings(args)
    seed = settings["seed"] if settings["seed"] is not None else TrainConfig.seed
    try:
        tl.set_backend(backend_name_from_environment(args.backend), seed=seed)  # the seed also fixes the weights
        check_backend_runs(settings.get("dtype") or "float32")  # bfloat16 on NumPy: say so before any work
    except (ValueError, tl.BackendUnavailableError) as error:  # a bad TINYLLM_BACKEND, or no CuPy / GPU
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not dist.is_main_process():  # under mpiexec: rank 0 alone prints (errors still come from any rank)
        sys.stdout = open(os.devnull, "w")
    text_path = find_text(args.data)
    cache_dir = args.out_dir / "cache"

    # -- the run's settings: from the checkpoint when resuming, else from the preset and flags ----------
    checkpoint = None
    if args.resume is not None:
        checkpoint = load_run_checkpoint(args.out_dir, args.resume)
        check_same_data(checkpoint, text_path, args.new_data)
        saved = {**checkpoint.train_config, "out_dir": str(args.out_dir), "progress": not args.no_progress}
        if args.max_steps is not None:
            saved["max_steps"] = args.max_steps
        try:  # the same global batch on another number of ranks: grad_accum_steps is per rank
            saved["grad_accum_steps"] = dist.resumed_grad_accum_steps(
                saved.get("grad_accum_steps", 1), checkpoint.train_state.get("world_size", 1))
        except ValueError as error:
            print(f"error: cannot resume: {error}", file=sys.stderr)
            return 1
        train_config = TrainConfig.from_dict(saved)
        tokenizer_path = checkpoint.tokenizer_path
    else:
        train_config = TrainConfig.from_dict(
            {k: settings[k] for k in TRAIN_KEYS if settings[k] is not None}
            | {"out_dir": str(args.out_dir), "progress": not args.no_progress}
        )
        with dist.main_process_first():  # rank 0 trains the tokenizer; the others then read it
            tokenizer_path = train_tokenizer_cached(text_path, settings["vocab_size"], cache_dir)

    # -- data ----------------------------------------------------------------------------------------------
    with dist.main_process_first():  # rank 0 writes the token files; the others then map them
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
          + (f" x {dist.world_size()} ranks" if dist.world_size() > 1 else "")
          + (f", {train_config.dtype} compute (float32 weights)" if train_config.dtype != "float32" else "")
          + (f", resuming at step {checkpoint.train_state['step']}" if checkpoint else ""))

    # -- train -----------------------------------------------------------------------------------------------
    if args.overwrite:  # the user chose to replace the run: remove it whole, so no old best/ outlives it
        removed = [name for name in ("last", "best", "log.jsonl", "loss.png") if (args.out_dir / name).exists()]
        for name in removed:
            path = args.out_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        if removed:
            print(f"note: --overwrite: removed the previous run's {', '.join(removed)} from {args.out_dir}")
    try:
        result = train(model, data, train_config, checkpoint=checkpoint)
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted. Continue from the last checkpoint with: {resume_hint(argv)}", file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - started
    if "val_loss" in result:
        print(f"\ndone: step {result['step']} in {elapsed / 60:.1f} min; val loss {result['val_loss']:.4f} "
              f"(perplexity {result['val_perplexity']:.1f}), {result['val_bpc']:.3f} bits per character, "
              f"next-token accuracy {result['val_accuracy']:.1%}; best val loss {result['best_val_loss']:.4f}; "
              f"{result['tokens_per_second']:,.0f} tokens/s")
    print(f"checkpoints: {args.out_dir / 'last'} and {args.out_dir / 'best'}; log: {args.out_dir / 'log.jsonl'}"
          + (f", plot: {args.out_dir / 'loss.png'}" if (args.out_dir / "loss.png").exists() else
             " (for a loss plot: pip install 'tinyllm[plot]', then python -m tinyllm.plot "
             f"{args.out_dir / 'log.jsonl'})"))
    if args.sample_tokens > 0 and dist.is_main_process():
        print_sample(model, load_tokenizer(tokenizer_path), args.sample_tokens, seed)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
