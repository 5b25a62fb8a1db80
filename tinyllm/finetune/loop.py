"""``finetune``: the training loop for a pretrained model, LoRA or full, with adapter-only checkpoints.

It is ``tinyllm.train.train`` with three differences, which is why it is a second, small loop
rather than options of that one:

1. only the parameters that require grad are optimized (LoRA's A and B, or everything for full
   fine-tuning): AdamW gets ``[p for p in model.parameters() if p.requires_grad]``;
2. a LoRA run checkpoints the adapters alone (PEFT's files, a few MB) plus their AdamW moments and
   the loop's state, never the frozen base (538 MB for SmolLM2); a full run writes ordinary
   ``tinyllm.checkpoint`` checkpoints;
3. ``time_limit`` (seconds of training) stops the run early, evaluating and saving as at the end.

One step is the step ``train`` runs (``tinyllm.train.queue_train_step``): lr from warmup + cosine; for
each micro-batch forward, loss, backward; clip the global gradient norm; AdamW; zero the gradients. As
in ``train``, steps are queued on the device and read back only to log, evaluate or end.
Every ``eval_interval`` steps the val loss (``tinyllm.train.evaluate``) and a checkpoint in
``out_dir/last`` (and ``best``).

    config = TrainConfig(batch_size=4, block_size=256, max_steps=200, lr=1e-3, out_dir="out/ft")
    apply_lora(model, r=8)
    result = finetune(model, data, config)          # data: TokenDataset or ChatDataset
    result["val_loss"], result["start_val_loss"]
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .. import distributed as dist
from ..backends import get_backend
from ..fileio import atomic_write
from ..logger import TrainingLogger
from ..nn.module import Module
from ..optim import AdamW, get_lr
from ..train import QueuedStep, TrainConfig, TrainingDiverged, evaluate, queue_train_step, read_steps, restore_batch_rng
from .lora import lora_layers
from .peft import load_lora, save_lora

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"


def make_optimizer(model: Module, config: TrainConfig) -> AdamW:
    """AdamW over the trainable parameters only; weight decay on matrices (ndim >= 2), none on vectors."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("nothing to train: every parameter is frozen (apply_lora, or requires_grad_(True) for full "
                         "fine-tuning)")
    groups = [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": config.weight_decay}]
    vectors = [p for p in trainable if p.ndim < 2]
    if vectors:
        groups.append({"params": vectors, "weight_decay": 0.0})
    groups = [g for g in groups if g["params"]]
    return AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)


# ---------------------------------------------------------------- adapter checkpoints


def save_adapter_checkpoint(directory: str | os.PathLike, model: Module, optimizer: AdamW, state: dict[str, Any]) -> Path:
    """Write adapters (PEFT files), AdamW state and ``state`` into ``directory``, replacing it whole.

    Everything is written into ``directory.tmp`` first, which then takes the old folder's place,
    so an interrupted save leaves the previous checkpoint (or, at worst, ``.tmp`` beside it).
    """
    import safetensors.numpy

    directory = Path(directory)
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    save_lora(model, staging)
    opt = optimizer.state_dict()
    backend = get_backend()
    arrays = {f"state.{i}.{name}": np.ascontiguousarray(backend.to_host(a))
              for i, values in opt["state"].items() for name, a in values.items()}
    atomic_write(staging / OPTIMIZER_FILE, safetensors.numpy.save(arrays) if arrays else safetensors.numpy.save({}))
    meta = {"state": state, "optimizer": {"step": opt["step"], "param_groups": opt["param_groups"]}}
    atomic_write(staging / STATE_FILE, (json.dumps(meta, indent=2) + "\n").encode())
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old, ignore_errors=True)
    return directory


def load_adapter_checkpoint(directory: str | os.PathLike, model: Module) -> tuple[dict[str, Any], dict[str, Any]]:
    """Add the checkpoint's adapters to a fresh base ``model``; return (optimizer state, loop state)."""
    import safetensors.numpy

    directory = Path(directory)
    if not (directory / STATE_FILE).exists():
        raise FileNotFoundError(f"no fine-tuning checkpoint in {directory} (no {STATE_FILE}); start without --resume")
    meta = json.loads((directory / STATE_FILE).read_text())
    load_lora(model, directory)
    per_param: dict[int, dict[str, Any]] = {}
    for key, array in safetensors.numpy.load_file(directory / OPTIMIZER_FILE).items():
        _, index, name = key.split(".", 2)
        per_param.setdefault(int(index), {})[name] = array
    groups = [{**g, "betas": tuple(g["betas"])} for g in meta["optimizer"]["param_groups"]]
    return {"step": meta["optimizer"]["step"], "param_groups": groups, "state": per_param}, meta["state"]


# ---------------------------------------------------------------- the loop


def finetune(
    model: Module,
    data: Any,
    config: TrainConfig,
    *,
    time_limit: float | None = None,
    resume: tuple[dict[str, Any], dict[str, Any]] | None = None,
    tokenizer_path: str | None = None,
    stop_at_step: int | None = None,
) -> dict[str, Any]:
    """Fine-tune the trainable parameters of ``model`` on ``data``; return the last evaluation and run figures.

    ``data``: a ``TokenDataset`` (plain text) or ``ChatDataset`` (SFT), anything with ``get_batch(split, B, T)``.
    ``resume``: what ``load_adapter_checkpoint`` returned (LoRA), to continue that run.
    ``stop_at_step``: stop there as an interrupted run would (the schedule still follows ``max_steps``).
    Returned: ``val_loss`` (and the other ``evaluate`` figures) at the end, ``start_val_loss`` (before
    the first step of this run), ``best_val_loss``, ``step``, ``tokens_per_second``, ``train_seconds``.
    """
    from ..checkpoint import save_checkpoint

    out_dir = Path(config.out_dir)
    is_lora = bool(lora_layers(model))
    optimizer = make_optimizer(model, config)
    if resume is not None:
        optimizer_state, state = resume
        optimizer.load_state_dict(optimizer_state)
        step, best = state["step"], state.get("best_val_loss") or math.inf
        batch_rng = restore_batch_rng(state, config.seed)
    else:
        step, best = 0, math.inf
        batch_rng = np.random.default_rng(config.seed)  # on the host, saved in checkpoints: draws the batches
    start_step = step
    logger = TrainingLogger(out_dir, resume_step=step if resume else None)
    bar = tqdm(total=config.max_steps, initial=step, unit="step", disable=not config.progress, dynamic_ncols=True)
    train_seconds, tokens_seen, start_val_loss, metrics = 0.0, 0, None, {}
    model.train()

    def evaluate_and_save() -> None:
        nonlocal best, metrics, start_val_loss
        scores = evaluate(model, data, config.batch_size, config.block_size, config.eval_iters, seed=config.seed)
        metrics = {f"val_{k}": v for k, v in scores.items()}
        start_val_loss = metrics["val_loss"] if start_val_loss is None else start_val_loss
        logger.log("eval", step, **metrics)
        if not math.isfinite(metrics["val_loss"]):
            raise TrainingDiverged(f"val loss {metrics['val_loss']} at step {step}; lower the learning rate")
        improved = metrics["val_loss"] < best
        best = min(best, metrics["val_loss"])
        state = {"step": step, "best_val_loss": best, "metrics": metrics,
                 "batch_rng_state": batch_rng.bit_generator.state, "train_config": config.to_dict()}
        for name in ("last", "best") if improved else ("last",):
            if is_lora:
                save_adapter_checkpoint(out_dir / name, model, optimizer, state)
            else:
                save_checkpoint(out_dir / name, model, optimizer, train_state=state, train_config=config.to_dict(),
                                tokenizer_path=tokenizer_path)
        logger.plot()
        bar.write(f"step {step}: val loss {metrics['val_loss']:.4f} (perplexity {metrics['val_perplexity']:.1f})"
                  + (" best so far, saved" if improved else ""))

    def micro_batches() -> Iterator[tuple[Any, Any]]:
        # As train() draws them: offsets from the host generator, dropout seeded by (seed, step, micro-batch),
        # so a resumed run continues exactly on CuPy too (its generator cannot be saved).
        nonlocal tokens_seen
        for x, y in dist.local_micro_batches(data, config.batch_size, config.block_size, config.grad_accum_steps,
                                             config.seed, step, rng=batch_rng):  # (B, T) each
            tokens_seen += int(x.size)
            yield x, y

    try:
        if resume is None:
            evaluate_and_save()
        end_step = config.max_steps if stop_at_step is None else min(stop_at_step, config.max_steps)
        pending: list[QueuedStep] = []  # steps queued on the device, not yet read back

        def read_pending() -> tuple[float, float]:
            """Read every queued step in one transfer (a wait for the GPU, counted as training time)."""
            nonlocal pending, train_seconds
            begin = time.perf_counter()
            try:
                results = read_steps(pending)
            except TrainingDiverged as error:
                bad = error.queued_step  # type: ignore[attr-defined]
                raise TrainingDiverged(f"{error} at step {bad.index} (lr {bad.lr:.2e}); lower the learning rate",
                                       error.what, error.value) from None
            pending = []
            train_seconds += time.perf_counter() - begin
            return results[-1]

        while step < end_step:
            if time_limit is not None and train_seconds >= time_limit:  # (host time between reads: close enough)
                bar.write(f"time limit of {time_limit:.0f} s of training reached at step {step}")
                break
            begin = time.perf_counter()
            lr = get_lr(step, config.lr, config.warmup_steps, config.max_steps, config.min_lr)
            queued = queue_train_step(model, optimizer, micro_batches(), lr, config.grad_clip, config.grad_accum_steps,
                                      after=pending[-1] if pending else None)
            queued.index, queued.lr = step, lr
            pending.append(queued)
            step += 1
            train_seconds += time.perf_counter() - begin
            bar.update(1)
            if step % config.log_interval == 0 or step % config.eval_interval == 0 or step >= end_step:
                step_loss, grad_norm = read_pending()
                bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.1e}", tok_s=f"{tokens_seen / train_seconds:,.0f}")
                if step % config.log_interval == 0:
                    logger.log("train", step, loss=step_loss, lr=lr, grad_norm=grad_norm,
                               tokens_per_second=tokens_seen / train_seconds)
            if step % config.eval_interval == 0 and step < end_step:
                evaluate_and_save()
        if pending:  # stopped by the time limit between reads
            read_pending()
        evaluate_and_save()
    finally:
        bar.close()
    return {**metrics, "step": step, "start_step": start_step, "start_val_loss": start_val_loss,
            "best_val_loss": best, "train_seconds": train_seconds,
            "tokens_per_second": tokens_seen / train_seconds if train_seconds else 0.0}
