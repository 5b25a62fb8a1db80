"""Continuous batching: one thread owns the model and decodes every active request together.

The loop (llama.cpp's server and vLLM work the same way, with more machinery):

    while the server runs:
        drop the requests whose clients went away (their cache rows are free at once)
        admit waiting requests into free rows: prefill each prompt, sample its first token
        one decode step: the last token of every active request, (n, 1), through the model
                         as one batch; each row at its own position in its own cache row
        sample each row's next token with that request's own settings and random generator;
        a request that ends (eos, max_tokens, a full context) leaves, its row is free

Decoding on a CPU is bound by reading the weights, so n requests in one step cost little more
than one: that is the whole point. The KV cache is allocated once for ``max_batch`` rows; the
active requests always occupy rows 0 .. n-1 (when one leaves, the last row moves into its
place), so a step runs on one slice of the cache and memory never grows.

Requests join between steps: a new request's prefill runs, then it decodes with the others at
the next step. Results go back through ``emit`` callbacks (the web server turns them into
events on its own thread), so the event loop never waits for the model.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autograd import Tensor, no_grad
from ..backends import get_backend
from ..sampling import sample_next


class QueueFullError(RuntimeError):
    """The scheduler's waiting queue is at its bound (the server answers 429)."""


@dataclass(eq=False)
class GenerationRequest:
    """One prompt to continue, its sampling settings, and where its tokens go.

    ``emit`` is called from the scheduler thread with ("token", id), then ("done", finish_reason)
    where finish_reason is "stop" (an eos token, not emitted) or "length"; or ("error", message).
    """

    prompt_ids: list[int]
    max_tokens: int
    emit: Callable[[tuple[str, Any]], None]
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop_ids: frozenset[int] = frozenset()
    cancelled: bool = False  # set by the web server when the client is gone or a stop string matched
    generated: int = 0
    last_token: int = -1
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)


class Scheduler:
    """Owns ``model`` and a KV cache of ``max_batch`` rows; ``submit`` requests from any thread.

    >>> # scheduler = Scheduler(model, max_batch=8); scheduler.start()
    >>> # scheduler.submit(GenerationRequest(ids, 50, emit=print, temperature=0))
    """

    def __init__(self, model: Any, max_batch: int = 8, max_queue: int = 64) -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError(f"max_batch and max_queue must be at least 1, got {max_batch}, {max_queue}")
        self.model = model.eval()
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.max_seq_len = model.config.max_seq_len
        self.cache = model.new_cache(batch_size=max_batch)
        self.active: list[GenerationRequest] = []  # active[r] decodes in cache row r
        self.waiting: collections.deque[GenerationRequest] = collections.deque()
        self.admitting: GenerationRequest | None = None  # taken from waiting, its prefill running: in neither list
        self.condition = threading.Condition()
        self.running = False
        self.thread: threading.Thread | None = None
        self.steps = 0  # decode steps run, and the rows they carried (for the mean batch size in /health)
        self.rows_decoded = 0
        self.shared_steps = 0  # decode steps that carried more than one request: batching at work

    # ---------------------------------------------------------------- called from other threads

    def start(self) -> None:
        self.running = True
        self.thread = threading.Thread(target=self._loop, name="tinyllm-scheduler", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        with self.condition:
            self.running = False
            self.condition.notify()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def submit(self, request: GenerationRequest) -> None:
        """Queue a request; ``QueueFullError`` if ``max_queue`` are already waiting."""
        with self.condition:
            if len(self.waiting) >= self.max_queue:
                raise QueueFullError(f"{len(self.waiting)} requests are waiting (the bound is {self.max_queue})")
            self.waiting.append(request)
            self.condition.notify()

    def cancel(self, request: GenerationRequest) -> None:
        """Stop a request; its cache row is freed before the next step."""
        request.cancelled = True
        with self.condition:
            self.condition.notify()

    def stats(self) -> dict[str, Any]:
        return {
            "active": len(self.active),
            "waiting": len(self.waiting),
            "max_batch": self.max_batch,
            "cache_rows_in_use": int((self.cache.lengths > 0).sum()),
            "cache_positions_in_use": int(self.cache.lengths.sum()),
            "kv_cache_bytes": self.cache.nbytes,
            "decode_steps": self.steps,
            "mean_batch": self.rows_decoded / self.steps if self.steps else 0.0,
            "shared_decode_steps": self.shared_steps,
        }

    # ---------------------------------------------------------------- the scheduler thread

    def _loop(self) -> None:
        with no_grad():
            while True:
                with self.condition:
                    while self.running and not self.waiting and not self.active:
                        self.condition.wait()
                    if not self.running:
                        break
                try:
                    self._drop_cancelled()
                    self._admit()
                    if self.active:
                        self._decode_step()
                except Exception as error:  # never leave a client waiting forever: fail everyone in flight
                    for request in self.active:
                        request.emit(("error", f"{type(error).__name__}: {error}"))
                    self.active.clear()
                    self.cache.reset()
        for request in [*self.active, *self.waiting]:
            request.emit(("error", "the server is shutting down"))

    def _remove(self, r: int) -> None:
        """Free cache row r: the last active row moves into it, so rows 0 .. n-1 stay the active ones."""
        self.cache.release_row(r, len(self.active))
        self.active[r] = self.active[-1]
        self.active.pop()

    def _drop_cancelled(self) -> None:
        for r in reversed(range(len(self.active))):
            if self.active[r].cancelled:
                self._remove(r)

    def _admit(self) -> None:
        """Prefill waiting requests into free rows, each alone (its own length), and sample its first token."""
        backend = get_backend()
        while len(self.active) < self.max_batch:
            with self.condition:
                if not self.waiting:
                    return
                request = self.waiting.popleft()
                self.admitting = request
            try:
                self._admit_one(request, backend)
            finally:
                self.admitting = None

    def _admit_one(self, request: GenerationRequest, backend: Any) -> None:
        """Prefill one request into the next free row and sample its first token (or fail it alone)."""
        if request.cancelled:
            return
        r = len(self.active)
        self.cache.lengths[r] = 0
        ids = Tensor(backend.asarray(np.array([request.prompt_ids], dtype=np.int64)))  # (1, T)
        try:
            logits, _ = self.model(ids, cache=self.cache.rows(r, r + 1), last_only=True)  # (1, 1, V)
        except Exception as error:  # this prompt's fault (the web server checks ids first): fail it alone
            self.cache.lengths[r] = 0
            request.emit(("error", f"{type(error).__name__}: {error}"))
            return
        self.active.append(request)
        if self._take(request, backend.to_host(logits.data[0, -1])):
            self._remove(r)

    def _decode_step(self) -> None:
        backend = get_backend()
        n = len(self.active)
        step = np.array([[request.last_token] for request in self.active], dtype=np.int64)  # (n, 1)
        logits, _ = self.model(Tensor(backend.asarray(step)), cache=self.cache.rows(0, n), last_only=True)  # (n, 1, V)
        rows = backend.to_host(logits.data[:, -1])  # (n, V)
        self.steps += 1
        self.rows_decoded += n
        self.shared_steps += n > 1
        finished = [r for r in range(n) if self._take(self.active[r], rows[r])]
        for r in reversed(finished):  # highest first: the row moved into a freed one is never a finished one
            self._remove(r)

    def _take(self, request: GenerationRequest, logits: np.ndarray) -> bool:
        """Sample the request's next token from its logits (V,), emit it; True if the request is finished."""
        token = sample_next(logits, request.temperature, request.top_k, request.top_p, request.rng)
        request.generated += 1
        request.last_token = token
        if token in request.stop_ids:
            request.emit(("done", "stop"))
            return True
        request.emit(("token", token))
        if request.cancelled:
            return True
        if request.generated >= request.max_tokens or len(request.prompt_ids) + request.generated >= self.max_seq_len:
            request.emit(("done", "length"))
            return True
        return False


def wait_idle(scheduler: Scheduler, timeout: float = 10.0) -> bool:
    """True once no request is active or waiting (tests and benchmarks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not scheduler.active and not scheduler.waiting and scheduler.admitting is None:
            return True
        time.sleep(0.01)
    return False
