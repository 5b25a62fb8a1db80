"""Generating for several prompts at once: one forward pass per step serves every unfinished row.

Decoding is bound by reading the weights: a (B, dim) x (dim, out) product costs little more
than a (1, dim) one, so B prompts decoded together take far less than B times as long.

The loop:

1. prefill: the prompts, padded on the right to the longest, run through the model once with an
   ``attention_mask``; the KV cache keeps each row's own length, and the logits of each row's
   last real token give its first new token;
2. decode: every unfinished row's last token (B, 1) runs as one batch, each at its own position
   (its cache length);
3. a row that stops (a stop id, ``max_new_tokens``, or a full context) leaves the batch: the
   last active row's cache moves into its place, so the active rows are always cache rows
   0 .. n-1 and each step runs on one slice of the cache, never on finished rows.

Each row samples with its own random generator, so a row gets the tokens ``generate`` gives
for its prompt alone with the same seed (up to float rounding in the batched products).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .autograd import Tensor, no_grad
from .backends import get_backend
from .sampling import sample_next


def generate_batch(
    model: Any,
    prompts: Sequence[Iterable[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | Sequence[int | None] | None = None,
    stop_ids: Iterable[int] = (),
) -> list[list[int]]:
    """New token ids for each prompt (prompts may differ in length); each row stops on its own.

    A row ends after yielding a token in ``stop_ids`` (kept, as ``generate`` yields it), after
    ``max_new_tokens``, or when its context is full. ``seed``: one seed for every row (each row
    then equals ``generate(model, prompt, seed=seed)``) or one per row.

    >>> # generate_batch(model, [tok.encode("ROMEO:"), tok.encode("JULIET: O")], 20, temperature=0)
    >>> # -> [[...20 ids...], [...20 ids...]]
    """
    rows = [[int(t) for t in p] for p in prompts]
    B, max_seq_len = len(rows), model.config.max_seq_len
    if B == 0:
        return []
    for b, prompt in enumerate(rows):
        if not prompt:
            raise ValueError(f"prompt {b} is empty; start it with the tokenizer's bos id if you have nothing")
        if len(prompt) > max_seq_len:
            raise ValueError(f"prompt {b} has {len(prompt)} tokens but the model's context is {max_seq_len}; shorten it")
    seeds = list(seed) if isinstance(seed, Sequence) else [seed] * B
    if len(seeds) != B:
        raise ValueError(f"{len(seeds)} seeds for {B} prompts; give one seed, or one per prompt")
    rngs = [np.random.default_rng(s) for s in seeds]
    stop = set(int(t) for t in stop_ids)
    outputs: list[list[int]] = [[] for _ in rows]
    backend = get_backend()
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            cache = model.new_cache(batch_size=B)
            T = max(len(p) for p in rows)
            ids = np.zeros((B, T), dtype=np.int64)
            mask = np.zeros((B, T), dtype=np.int64)
            for b, prompt in enumerate(rows):
                ids[b, : len(prompt)], mask[b, : len(prompt)] = prompt, 1
            logits, _ = model(Tensor(backend.asarray(ids)), cache=cache, last_only=True, attention_mask=mask)
            order = list(range(B))  # order[r]: the prompt whose sequence is in cache row r
            n = B
            while n and max_new_tokens:
                last = backend.to_host(logits.data[:, -1])  # (n, V)
                next_ids = []
                for r in range(n):  # sampling settings and RNGs are per row; the model work above is batched
                    b = order[r]
                    token = sample_next(last[r], temperature, top_k, top_p, rngs[b])
                    outputs[b].append(token)
                    next_ids.append(token)
                done = [
                    r for r in range(n)
                    if next_ids[r] in stop or len(outputs[order[r]]) >= max_new_tokens
                    or len(rows[order[r]]) + len(outputs[order[r]]) >= max_seq_len
                ]
                for r in reversed(done):  # highest first, so the last active row is never one that finished
                    cache.release_row(r, n)
                    n -= 1
                    order[r], next_ids[r] = order[n], next_ids[n]
                if n == 0:
                    break
                step = Tensor(backend.asarray(np.array(next_ids[:n], dtype=np.int64)[:, None]))  # (n, 1)
                logits, _ = model(step, cache=cache.rows(0, n), last_only=True)  # (n, 1, V)
    finally:
        model.train(was_training)
    return outputs
