"""Training a language model: ``TrainConfig``, and ``train``, a loop meant to be read top to bottom.

One optimizer step, ``train_step`` (nanoGPT's ``train.py`` is the model for this loop)::

    lr = get_lr(step, ...)                           linear warmup, then cosine decay to min_lr
    for each of grad_accum_steps micro-batches:
        x, y = data.get_batch("train", B, T)         (B, T) token ids, y = x shifted by one
        loss = cross-entropy(model(x), y)            mean over the B*T predictions
        (loss / grad_accum_steps).backward()         gradients add up over the micro-batches
    all_reduce_gradients(parameters)                 several ranks: the mean over them (else nothing)
    clip_grad_norm_(parameters, grad_clip)           rescale so the global gradient norm <= grad_clip
    optimizer.step(); optimizer.zero_grad()          AdamW, weight decay on matrices only

Every ``eval_interval`` steps and at the end: evaluate on the val split (loss, perplexity,
bits per character, next-token accuracy), save ``out_dir/last``, and ``out_dir/best`` when
the val loss improved. A loss or gradient norm that is NaN or infinite stops training with
``TrainingDiverged``, leaving the last good checkpoint as it was.

The loop never waits for a GPU between steps: it runs ``queue_train_step``, which leaves a step's
loss, gradient norm and input checks on the device and lets the device skip a bad step's update
itself; ``read_steps`` reads every step since the last read in one transfer when the loop logs,
evaluates or ends, and raises what went wrong, at the step where it went wrong (``train_step``,
the one-step function, reads at once).

Resuming is exact, on NumPy and on CuPy alike: a checkpoint holds the parameters, AdamW's moments
and step counts, and the state of the host (NumPy) generator that draws the batch offsets. The
device's random numbers (dropout masks) are not saved, because CuPy cannot export its generator's
state: while micro-batch i of step s is computed, the device generator is one seeded by
``micro_batch_seed(seed, s, i)`` alone, so it draws the same masks whether or not the run stopped
before it. Hence N steps + resume + M steps give the same parameters as N + M steps.

Started by a launcher (``mpiexec -n N python ...``), the same loop trains data-parallel
(``tinyllm.distributed``): a step's global batch is N x grad_accum_steps micro-batches, rank r
computes every N-th of them, ``all_reduce_gradients`` averages the gradients before clipping,
evaluation is shared the same way, and rank 0 alone writes checkpoints and logs. The result is
that of one process with N x grad_accum_steps (docs/distributed.md).

    config = TrainConfig(max_steps=600, out_dir="out/shakespeare")
    model = Transformer(ModelConfig(vocab_size=512))
    result = train(model, data, config)               # data: a TokenDataset (tinyllm.data)
    result["val_loss"], result["val_bpc"]
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from . import distributed as dist
from .amp import DTYPES, MixedPrecision, resolve_dtype
from .autograd import no_grad
from .autograd.ops.cross_entropy import IGNORE_INDEX
from .backends import get_backend
from .backends.deferred import DeferredChecks, deferred_checks
from .checkpoint import Checkpoint, restore, save_checkpoint
from .data import TokenDataset
from .logger import TrainingLogger
from .models import Transformer
from .optim import AdamW, Optimizer, get_lr
from .optim.clip import clip_by_squared_norm_, squared_grad_norm
from .utils import dataclass_from_dict


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; training stopped.

    ``what`` names the quantity ("training loss", "gradient norm", "val loss"), ``value`` is what it became.
    """

    def __init__(self, message: str, what: str = "", value: float = math.nan) -> None:
        super().__init__(message)
        self.what, self.value = what, value


@dataclass
class TrainConfig:
    batch_size: int = 16  # B: sequences per micro-batch
    block_size: int = 128  # T: tokens per sequence, the context the model learns to use
    grad_accum_steps: int = 1  # micro-batches per optimizer step (per rank): B * grad_accum_steps sequences per step
    max_steps: int = 600  # optimizer steps in the whole run (the cosine schedule ends here)
    lr: float = 3e-3  # peak learning rate, reached at the end of warmup
    min_lr: float = 3e-4  # where the cosine decay ends
    warmup_steps: int = 50
    weight_decay: float = 0.1  # AdamW's decoupled decay, on matrices only (ndim >= 2)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0  # largest global gradient norm; 0 turns clipping off
    eval_interval: int = 100  # evaluate and save a checkpoint every this many steps
    eval_iters: int = 20  # val batches per evaluation
    log_interval: int = 10  # write a line to log.jsonl every this many steps
    out_dir: str = "out"  # checkpoints (last/, best/), log.jsonl and loss.png
    seed: int = 1337  # seeds the batches and dropout masks of a new run
    progress: bool = True  # show a tqdm progress bar
    dtype: str = "float32"  # forward/backward in float32, float16 (loss-scaled) or bfloat16; masters stay float32 (amp.py)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.out_dir = str(self.out_dir)
        positive = ("batch_size", "block_size", "grad_accum_steps", "max_steps", "eval_interval", "eval_iters",
                    "log_interval")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "eps"):  # NaN fails every comparison: test it first
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"TrainConfig.{name} must be a finite number >= 0, got {value!r}")
        if len(self.betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must be two numbers in [0, 1) (e.g. (0.9, 0.95)), got {self.betas!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"TrainConfig.dtype must be one of {list(DTYPES)}, got {self.dtype!r}")
        resolve_dtype(self.dtype)  # bfloat16 without ml_dtypes: a clear error now, not at the first step
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"TrainConfig needs 0 <= min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys are an error that lists the valid ones."""
        return dataclass_from_dict(cls, data)


def configure_optimizer(model: Transformer, config: TrainConfig) -> AdamW:
    """AdamW with weight decay on matrices (linear weights, embeddings) and none on vectors (norm gains, biases).

    Decay pulls weights towards zero; for a norm's gain that would fight the normalisation
    itself, so as nanoGPT only tensors with ndim >= 2 are decayed.
    """
    parameters = model.parameters()
    groups = [{"params": [p for p in parameters if p.ndim >= 2], "weight_decay": config.weight_decay}]
    no_decay = [p for p in parameters if p.ndim < 2]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)


def train_step(
    model: Transformer,
    optimizer: Optimizer,
    micro_batches: Iterable[tuple[Any, Any]],
    lr: float,
    grad_clip: float = 0.0,
    grad_accum_steps: int | None = None,
    amp: MixedPrecision | None = None,
) -> tuple[float, float]:
    """One optimizer step; returns (the step's mean training loss, the gradient norm before clipping).

    This is the whole of what ``train``'s loop does per step, with none of its bookkeeping
    (resuming, checkpoints, logging, the progress bar)::

        for x, y in micro_batches:                    (B, T) token ids, y = x shifted by one
            logits, loss = model(x, y)                (B, T, vocab), mean cross-entropy over B*T
            (loss / grad_accum_steps).backward()      gradients add up in p.grad
        all_reduce_gradients(parameters)              several ranks only: average the ranks' gradients
        norm = clip_grad_norm_(parameters, grad_clip) rescale all gradients if their norm > grad_clip
        optimizer.step()                              p -= lr * (AdamW's update), in place
        optimizer.zero_grad()                         clear p.grad for the next step

    ``micro_batches`` is a list of ``(x, y)`` pairs (``[(x, y)]`` for one batch) or any iterable
    of them; ``grad_accum_steps`` is how many it holds (by default ``len(micro_batches)``), so
    that the gradient is the mean over all of them. In a data-parallel run (``tinyllm.distributed``)
    each rank passes its share of the global batch and the average over ranks makes the gradient
    of the whole batch; in a plain run that all-reduce does nothing.

    ``grad_clip`` 0 measures the norm without clipping. A NaN or infinite loss or gradient norm
    raises ``TrainingDiverged`` and leaves the parameters as they were.

    On a GPU every value read back makes the host wait for the device. This is
    ``queue_train_step`` (the step queued whole; a bad step skips its own update on the device)
    and one read of its results: the losses, the gradient norm and the checks that the token ids
    and targets are in range (``tinyllm.backends.deferred``) travel together. ``train``'s loop
    queues steps and reads them only when it logs.

    ``amp`` (tinyllm.amp, mixed precision): the micro-batches run through its float16/bfloat16
    shadow of ``model`` with the loss times the loss scale; the gradients are summed into
    ``model``'s (the float32 masters), unscaled, and the optimizer steps the masters. A float16
    step whose gradients overflowed is skipped: nothing changes, the scale halves, and the
    returned gradient norm is inf.

    >>> import numpy as np, tinyllm as tl
    >>> from tinyllm.models import ModelConfig, Transformer
    >>> _ = tl.set_backend("numpy", seed=0)
    >>> model = Transformer(ModelConfig(vocab_size=16, dim=8, n_layers=1, n_heads=2, max_seq_len=8))
    >>> optimizer = tl.optim.AdamW(model.parameters(), lr=1e-2)
    >>> x = np.arange(8).reshape(1, 8); y = x + 1    # (B, T) = (1, 8): predict the next number
    >>> loss, norm = train_step(model, optimizer, [(x, y)], lr=1e-2)
    >>> round(loss, 1)                                # about ln(16) = 2.77 before any learning
    2.8
    """
    return read_steps([queue_train_step(model, optimizer, micro_batches, lr, grad_clip, grad_accum_steps, amp)])[0]


class QueuedStep:
    """An optimizer step whose results are still on the device (``queue_train_step``). ``read_steps`` reads
    them, and raises what the step found wrong: a token id or target out of range (``IndexError``), a loss
    or gradient norm that is inf or NaN (``TrainingDiverged``)."""

    def __init__(self, losses: list[Any], squares: Any, checks: DeferredChecks, grad_accum_steps: int,
                 found_inf: Any = None) -> None:
        self.losses = losses  # each micro-batch's loss, 0-d device arrays
        self.squares = squares  # the squared gradient norm before clipping, a 0-d float64 device array
        self.checks = checks  # the flags of the token-id and target checks made in the step
        self.found_inf = found_inf  # float16: the overflow flag (the step's update waits for it)
        self.grad_accum_steps = grad_accum_steps
        self.bad: Any = None  # the device's verdict: this step, or an earlier unread one, was bad (update skipped)
        self.undo: tuple[Optimizer, tuple] | None = None  # the optimizer's counts before its (skipped?) update
        self.index: int | None = None  # the loop's step number and learning rate, for its messages
        self.lr: float | None = None
        self.result: tuple[float, float] | None = None  # (step loss, gradient norm) once read

    def device_values(self) -> list[Any]:
        return [*self.losses, self.squares, *([] if self.found_inf is None else [self.found_inf]),
                *self.checks.flags]

    def settle(self, values: list[float]) -> bool:
        """Given ``device_values`` read back, in order: raise what went wrong; else keep (loss, norm) in
        ``result`` and return whether float16 overflowed (the step is to be skipped)."""
        n = len(self.losses)
        try:
            self.checks.raise_first([bool(v) for v in values[n + 1 + (self.found_inf is not None):]])
            for loss_value in values[:n]:
                if not math.isfinite(loss_value):
                    raise TrainingDiverged(f"the training loss became {loss_value}", "training loss", loss_value)
            overflow = self.found_inf is not None and bool(values[n + 1])
            grad_norm = math.sqrt(values[n])
            if not overflow and not math.isfinite(grad_norm):
                raise TrainingDiverged(f"the gradient norm became {grad_norm}", "gradient norm", grad_norm)
        except Exception:
            if self.undo is not None:  # the device skipped this update (and every later one): uncount them
                optimizer, counters = self.undo
                optimizer.restore_counters(counters)
            raise
        step_loss = dist.all_reduce_mean(sum(v / self.grad_accum_steps for v in values[:n]))
        self.result = (step_loss, math.inf if overflow else grad_norm)
        return overflow


def read_steps(steps: list[QueuedStep]) -> list[tuple[float, float]]:
    """(step loss, gradient norm) of each queued step, read in ONE transfer however many there are, and
    checked in order: the first bad step raises (its ``queued_step`` attribute says which), and its update
    and every later one were skipped on the device, so the parameters are as that step found them."""
    unread = [(s, s.device_values()) for s in steps if s.result is None]
    values = _read_back([v for _, device_values in unread for v in device_values])
    at = 0
    for s, device_values in unread:
        try:
            s.settle(values[at : at + len(device_values)])
        except Exception as error:
            error.queued_step = s  # type: ignore[attr-defined]
            raise
        at += len(device_values)
    return [s.result for s in steps]  # type: ignore[misc]


def queue_train_step(
    model: Transformer, optimizer: Optimizer, micro_batches: Iterable[tuple[Any, Any]], lr: float,
    grad_clip: float = 0.0, grad_accum_steps: int | None = None, amp: MixedPrecision | None = None,
    after: QueuedStep | None = None,
) -> QueuedStep:
    """``train_step`` without waiting for the GPU: the step is queued whole, its results stay on the device.

    What ``train_step`` decides on the host after one read, this decides on the device: a flag
    ``bad`` (a token id or target out of range, a loss or gradient norm that is inf or NaN, or the
    unread step ``after`` bad) makes the optimizer skip its update (``Optimizer.step(skip=...)``), and
    clipping reads the norm where it is (``clip_by_squared_norm_``). ``read_steps`` reads one or
    many queued steps at once and raises what they found: ``train``'s loop reads only when it logs,
    evaluates or ends. float16 is the exception: its loss scale is the host's, so such a step reads
    its values before its update, as ``train_step`` does.
    """
    if grad_accum_steps is None:
        grad_accum_steps = len(micro_batches)  # type: ignore[arg-type]
    for group in optimizer.param_groups:
        group["lr"] = lr
    net, loss_scale = (model, 1.0 / grad_accum_steps) if amp is None else (amp.forward_model(), amp.loss_scale)
    losses = []  # each micro-batch's loss, left on the device
    with deferred_checks() as checks:  # the token-id and target checks wait for the step's read
        for x, y in micro_batches:  # (B, T) each
            _, loss = net(x, y)
            (loss * loss_scale).backward()  # float32: the mean over all micro-batches; amp: times the loss scale
            if amp is not None:
                amp.accumulate_grads(1.0 / grad_accum_steps)  # masters' grads += float32(shadow's grads) / accum
            losses.append(loss.data)
    dist.all_reduce_gradients(model.parameters())  # several ranks: the mean gradient of the global batch
    found_inf = amp.start_unscale() if amp is not None else None  # float16: divide by the scale, flag overflows
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    squares = squared_grad_norm(grads)  # (sum of g^2 over every gradient, on the device)
    step = QueuedStep(losses, squares, checks, grad_accum_steps, found_inf)
    if found_inf is not None:  # float16: one read now, before the update (the scaler lives on the host)
        overflow = step.settle(_read_back(step.device_values()))
        if not amp.finish_unscale(overflow):  # type: ignore[union-attr]
            optimizer.zero_grad()  # the step skipped, the scale halved
            return step
        clip_by_squared_norm_(grads, squares, grad_clip or math.inf)  # inf: measure, never clip
        optimizer.step()
    else:  # decided on the device: the update skips itself if anything was wrong
        xp = get_backend().xp
        verdicts = [~xp.isfinite(xp.stack(losses)).all(), ~xp.isfinite(squares), *checks.flags,
                    *([] if after is None or after.bad is None else [after.bad])]
        step.bad = xp.stack(verdicts).any()  # 0-d bool
        clip_by_squared_norm_(grads, squares, grad_clip or math.inf)
        step.undo = (optimizer, optimizer.counters())
        optimizer.step(skip=step.bad)
    optimizer.zero_grad()
    if amp is not None:
        amp.step_done()  # the shadow takes the new master weights
    return step


def _read_back(values: list[Any]) -> list[float]:
    """Device scalars (0-d or one-element arrays) to Python floats in ONE transfer: a GPU makes the host wait
    once, not once per value. On NumPy it costs nothing."""
    if not values:
        return []
    backend = get_backend()
    xp = backend.xp
    stacked = xp.concatenate([xp.asarray(v).astype(xp.float64, copy=False).reshape(1) for v in values])
    return [float(v) for v in backend.to_host(stacked)]


def evaluate(
    model: Transformer, data: TokenDataset, batch_size: int, block_size: int, iters: int, seed: int = 0
) -> dict[str, float]:
    """Loss, perplexity, bits per character and next-token accuracy on ``iters`` val batches.

    - loss: mean cross-entropy in nats per token;
    - perplexity = exp(loss): the model is as unsure as a uniform choice among this many tokens;
    - bpc = loss / (ln 2 * characters per token): comparable across tokenizers (a character-level
      model's loss in bits is already per character);
    - accuracy: how often the most likely next token is the right one, over the scored targets
      (targets equal to ``IGNORE_INDEX``, -100 — a chat's padding and prompt tokens — count neither
      as right nor as wrong, as they count nothing in the loss).

    The batches come from a generator seeded with ``seed`` afresh on every call, so every
    evaluation scores the same batches (two evaluations differ only because the model did), and
    evaluating leaves the training's random stream untouched. Under a launcher the ranks share
    the batches (rank r scores batches r, r + N, ...) and add up their sums, so the result is the same.
    """
    xp = get_backend().xp
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()  # dropout off
    sums = []  # per batch, on the device: (loss, right predictions, scored targets)
    # No graph (evaluation needs no backward), and no wait for the GPU per batch: the sums and the token-id
    # checks are read once, at the end (on a GPU each read would make the host wait for the device).
    with no_grad(), deferred_checks() as checks:
        for i in range(iters):
            x, y = data.get_batch("val", batch_size, block_size, rng=rng)  # (B, T) each
            if not dist.is_my_share(i):  # several ranks: each scores every N-th batch
                continue
            logits, loss = model(x, y)  # (B, T, vocab_size)
            scored = y != IGNORE_INDEX  # (B, T): the targets the loss counts
            sums.append((loss.data, ((xp.argmax(logits.data, axis=-1) == y) & scored).sum(), scored.sum()))
    values = _read_back([v for batch in sums for v in batch] + checks.flags)
    checks.raise_first([bool(v) for v in values[3 * len(sums):]])
    total_loss = 0.0
    for loss_value in values[0 : 3 * len(sums) : 3]:  # added in batch order, as the losses came
        total_loss += loss_value
    correct, count = int(sum(values[1 : 3 * len(sums) : 3])), int(sum(values[2 : 3 * len(sums) : 3]))
    total_loss, correct, count = dist.all_reduce_sum([total_loss, correct, count])  # sums over all ranks
    model.train(was_training)
    loss = total_loss / iters
    return {
        "loss": loss,
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "bpc": loss / (math.log(2) * data.chars_per_token),
        "accuracy": correct / count if count else math.nan,
    }


def train(
    model: Transformer,
    data: TokenDataset,
    config: TrainConfig,
    *,
    checkpoint: Checkpoint | None = None,
    stop_at_step: int | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``data``; return the final evaluation (``val_loss``, ``val_bpc``, ...), ``best_val_loss``
    and ``tokens_per_second`` (the average of this call's optimizer steps).

    ``checkpoint``: continue the run saved there (``load_checkpoint(out_dir / "last")``) instead of
    starting a new one. ``stop_at_step``: stop early, as an interrupted run would, saving ``last``
    there; the learning-rate schedule still follows ``config.max_steps``.
    """
    out_dir = Path(config.out_dir)
    data.check_block_size(config.block_size)
    if config.block_size > model.config.max_seq_len:
        raise ValueError(f"block_size {config.block_size} is longer than the model's max_seq_len {model.config.max_seq_len}")
    if data.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {data.vocab_size} tokens, the model's vocab_size is {model.config.vocab_size}")
    optimizer = configure_optimizer(model, config)
    main = dist.is_main_process()  # rank 0 alone writes checkpoints and logs, and prints (True in a plain run)

    # -- a new run, or the continuation of a saved one ------------------------------------------
    if checkpoint is None:
        step, best_val_loss, metrics = 0, math.inf, {}
        batch_rng = np.random.default_rng(config.seed)  # on the host: draws the batch offsets
    else:
        restore(checkpoint, model, optimizer)
        state = checkpoint.training_state()  # CheckpointError if it holds no step to resume from
        step, metrics = state["step"], state.get("metrics", {})
        best_val_loss = math.inf if state.get("best_val_loss") is None else state["best_val_loss"]
        batch_rng = restore_batch_rng(state, config.seed)
        _warn_if_the_global_batch_changed(checkpoint, state, config)
    dist.broadcast_parameters(model.parameters())  # several ranks: all start from rank 0's weights
    amp = None if config.dtype == "float32" else MixedPrecision(model, config.dtype)  # model: the float32 masters
    if amp is not None and checkpoint is not None and state.get("grad_scaler"):
        amp.scaler.load_state_dict(state["grad_scaler"])
    start_step, last_saved_step = step, (step if checkpoint else None)
    end_step = config.max_steps if stop_at_step is None else min(stop_at_step, config.max_steps)
    logger = TrainingLogger(out_dir, resume_step=step if checkpoint else None, enabled=main)
    tokens_per_step = config.batch_size * config.block_size * config.grad_accum_steps * dist.world_size()  # global
    bar = tqdm(total=config.max_steps, initial=step, unit="step", disable=not (config.progress and main),
               dynamic_ncols=True)
    window_start, window_losses, tokens_per_second = time.perf_counter(), [], 0.0
    pending: list[QueuedStep] = []  # steps queued on the device, not yet read back
    train_seconds = 0.0  # time spent in optimizer steps, for the run's average tokens/s
    model.train()
    # A diverging run overflows to inf and NaN inside the forward and backward, and NumPy warns at each
    # overflow; we check the loss and the gradient norm ourselves and stop with one clear message.
    numpy_errors = np.seterr(over="ignore", invalid="ignore", divide="ignore")

    try:
        while True:
            # -- evaluate and save, every eval_interval steps and at the end --------------------
            resumed_here = checkpoint is not None and step == start_step  # saved just before the stop
            if (step % config.eval_interval == 0 or step == end_step) and not resumed_here:
                scores = evaluate(model, data, config.batch_size, config.block_size, config.eval_iters, seed=config.seed)
                metrics = {f"val_{name}": value for name, value in scores.items()}
                logger.log("eval", step, **metrics)
                if not math.isfinite(metrics["val_loss"]):
                    loss = metrics["val_loss"]
                    message = _diverged_message("val loss", loss, step, out_dir, last_saved_step, None, config)
                    raise TrainingDiverged(message)
                improved = metrics["val_loss"] < best_val_loss
                best_val_loss = min(best_val_loss, metrics["val_loss"])
                if main:
                    save = {
                        "model": model,
                        "optimizer": optimizer,
                        "train_state": _train_state(step, best_val_loss, metrics, data, batch_rng, amp),
                        "train_config": config.to_dict(),
                        "tokenizer_path": data.tokenizer_path,
                    }
                    save_checkpoint(out_dir / "last", **save)
                    if improved:
                        save_checkpoint(out_dir / "best", **save)
                    logger.plot()
                    bar.write(
                        f"step {step}: val loss {metrics['val_loss']:.4f}, perplexity {metrics['val_perplexity']:.1f}, "
                        f"{metrics['val_bpc']:.3f} bits/char, accuracy {metrics['val_accuracy']:.1%}"
                        + (" (best so far, saved)" if improved else "")
                    )
                last_saved_step = step
                window_start, window_losses = time.perf_counter(), []  # do not count evaluation time as training
            if step >= end_step:
                break

            # -- one optimizer step -------------------------------------------------------------
            step_start = time.perf_counter()
            lr = get_lr(step, config.lr, config.warmup_steps, config.max_steps, config.min_lr)
            try:
                # This rank's micro-batches of the global batch (all of them in a plain run), with dropout
                # masks seeded by (seed, step, micro-batch): the same result on any number of ranks.
                micro_batches = dist.local_micro_batches(data, config.batch_size, config.block_size,
                                                         config.grad_accum_steps, config.seed, step,
                                                         rng=batch_rng)
                # Queued, not waited for: its loss, gradient norm and checks stay on the device (a bad step
                # skips its own update there) until the read below, so the GPU never waits for the host.
                queued = queue_train_step(model, optimizer, micro_batches, lr, config.grad_clip,
                                          config.grad_accum_steps, amp, after=pending[-1] if pending else None)
            except TrainingDiverged as error:  # (float16 steps read at once) add where the run stands and what to do
                message = _diverged_message(error.what, error.value, step, out_dir, last_saved_step, lr, config)
                raise TrainingDiverged(message, error.what, error.value) from None
            queued.index, queued.lr = step, lr
            pending.append(queued)
            step += 1
            train_seconds += time.perf_counter() - step_start

            # -- read, only to log, before an evaluation and at the end -------------------------
            if step % config.log_interval == 0 or step % config.eval_interval == 0 or step >= end_step:
                read_start = time.perf_counter()
                try:
                    results = read_steps(pending)  # one wait for the GPU, for every step since the last read
                except TrainingDiverged as error:
                    bad = error.queued_step  # type: ignore[attr-defined]
                    message = _diverged_message(error.what, error.value, bad.index, out_dir, last_saved_step, bad.lr,
                                                config)
                    raise TrainingDiverged(message, error.what, error.value) from None
                pending = []
                train_seconds += time.perf_counter() - read_start
                window_losses.extend(loss for loss, _ in results)
                step_loss, grad_norm = results[-1]
                bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_second:,.0f}")
            if step % config.log_interval == 0:
                tokens_per_second = len(window_losses) * tokens_per_step / (time.perf_counter() - window_start)
                logger.log("train", step, loss=float(np.mean(window_losses)), lr=lr, grad_norm=grad_norm,
                           tokens_per_second=tokens_per_second,
                           **({"loss_scale": amp.loss_scale, "skipped_steps": amp.scaler.skipped_steps} if amp else {}))
                if not config.progress and main:
                    print(f"step {step}: loss {np.mean(window_losses):.4f}, lr {lr:.2e}, {tokens_per_second:,.0f} tokens/s")
                window_start, window_losses = time.perf_counter(), []
            bar.update(1)
    except BaseException as error:
        dist.abort_on_error(error)  # several ranks: the others would wait for this one forever, so end them all
        raise
    finally:
        bar.close()
        np.seterr(**numpy_errors)
    dist.barrier()  # several ranks: return together, once rank 0's checkpoint is on disk
    average = (step - start_step) * tokens_per_step / train_seconds if train_seconds else 0.0
    return {"step": step, **metrics, "best_val_loss": best_val_loss, "tokens_per_second": average}


def _train_state(
    step: int, best_val_loss: float, metrics: dict[str, float], data: TokenDataset, batch_rng: np.random.Generator,
    amp: MixedPrecision | None = None,
) -> dict[str, Any]:
    """What a checkpoint needs beyond the tensors to continue exactly where this run is."""
    return {
        "step": step,
        "best_val_loss": best_val_loss if math.isfinite(best_val_loss) else None,
        "metrics": {k: (v if math.isfinite(v) else None) for k, v in metrics.items()},
        "backend": get_backend().name,
        "batch_rng_state": batch_rng.bit_generator.state,  # JSON-friendly: {"bit_generator": "PCG64", ...}
        "val_chars_per_token": data.chars_per_token,
        "text_sha256": data.text_sha256,
        "world_size": dist.world_size(),  # ranks that shared each global batch (grad_accum_steps is per rank)
        "grad_scaler": amp.scaler.state_dict() if amp is not None else None,  # mixed precision's loss scale
    }


def _warn_if_the_global_batch_changed(checkpoint: Checkpoint, state: dict[str, Any], config: TrainConfig) -> None:
    """Resuming with another global batch (sequences per optimizer step over all ranks) is allowed but
    is no longer the saved run: say so, with both sizes and how to keep the saved one."""
    saved = checkpoint.train_config
    if not isinstance(saved.get("batch_size"), int):
        return  # a checkpoint saved without its training settings: nothing to compare
    saved_accum, saved_ranks, ranks = saved.get("grad_accum_steps", 1), state.get("world_size", 1), dist.world_size()
    before = saved["batch_size"] * saved_accum * saved_ranks
    now = config.batch_size * config.grad_accum_steps * ranks
    if before != now:
        warnings.warn(
            f"resuming with a global batch of {now} sequences per step (batch_size {config.batch_size} x "
            f"grad_accum_steps {config.grad_accum_steps} x {ranks} rank(s)) where the checkpoint's run had "
            f"{before} (batch_size {saved['batch_size']} x grad_accum_steps {saved_accum} x {saved_ranks} rank(s)): "
            f"training continues, but no longer as the saved run would have. To keep the "
            f"run as it was, resume with batch_size x grad_accum_steps x ranks = {before}",
            stacklevel=3,
        )


def restore_batch_rng(state: dict[str, Any], seed: int) -> np.random.Generator:
    """The batch generator as the checkpoint left it (a checkpoint from before it was saved: warn, reseed)."""
    batch_rng = np.random.default_rng(seed)
    if state.get("batch_rng_state") is None:
        warnings.warn(
            "the checkpoint holds no state of the batch generator (it predates it): training continues, "
            "but not bit-identically to an uninterrupted run",
            stacklevel=3,
        )
        return batch_rng
    batch_rng.bit_generator.state = state["batch_rng_state"]
    return batch_rng


def _diverged_message(
    what: str,
    value: float,
    step: int,
    out_dir: Path,
    last_saved_step: int | None,
    lr: float | None = None,
    config: TrainConfig | None = None,
) -> str:
    """Say what diverged, what was kept, and what to change: advice that fits the run's own settings."""
    at_lr = f" (learning rate {lr:.3g})" if lr is not None else ""
    kept = (
        f"The last good checkpoint, from step {last_saved_step}, is untouched in {out_dir / 'last'}."
        if last_saved_step is not None
        else "No checkpoint was saved before this."
    )
    config = config or TrainConfig()
    advice = [f"Lower the learning rate (--lr {config.lr / 3:.2g} instead of {config.lr:.2g})"]
    if config.warmup_steps < 0.05 * config.max_steps:
        advice.append(f"lengthen the warmup (--warmup-steps {max(10, int(0.05 * config.max_steps))} instead of "
                      f"{config.warmup_steps})")
    if config.grad_clip == 0 or config.grad_clip > 1.0:
        now = "off" if config.grad_clip == 0 else f"{config.grad_clip:g}"
        advice.append(f"clip gradients (--grad-clip 1.0; it is {now})")
    return (
        f"the {what} became {value} at step {step}{at_lr}: training diverged and was stopped. {kept} "
        f"{', '.join(advice[:-1]) + ' or ' + advice[-1] if len(advice) > 1 else advice[0]}, then train again."
    )
