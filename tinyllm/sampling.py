"""Generating text: a KV-cached loop that yields one token at a time, and the samplers it uses.

The loop (as llama2.c's ``generate`` and mlx-examples' ``generate``):

1. prefill: run the whole prompt through the model once, filling the KV cache;
2. pick the next token from the last position's logits;
3. run just that token (T = 1) through the model, which attends to everything
   cached so far, and repeat from 2.

Without the cache (``use_cache=False``) step 3 recomputes the whole sequence
every time: the same tokens, much slower; the tests compare the two.

Picking a token from logits z (vocab V):

- temperature 0: greedy, argmax(z);
- otherwise p = softmax(z / temperature), then optionally
  - top-k: keep the k largest probabilities;
  - top-p (nucleus): keep the smallest set of most likely tokens whose total
    probability reaches p;
  renormalise what is kept and draw from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .autograd import Tensor, no_grad
from .backends import get_backend


def top_k_mask(probs: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` most probable entries (ties at the boundary broken by index order).

    >>> top_k_mask(np.array([0.1, 0.5, 0.15, 0.25]), 2).tolist()
    [False, True, False, True]
    """
    if k <= 0:
        raise ValueError(f"top_k must be positive, got {k}")
    keep = np.zeros(probs.shape, dtype=bool)
    keep[np.argsort(-probs, kind="stable")[:k]] = True
    return keep


def top_p_mask(probs: np.ndarray, p: float) -> np.ndarray:
    """Boolean mask of the nucleus: the most probable tokens whose cumulative probability first reaches ``p``.

    The token that crosses ``p`` is included, so the set is never empty.

    >>> top_p_mask(np.array([0.1, 0.5, 0.15, 0.25]), 0.7).tolist()
    [False, True, False, True]
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    order = np.argsort(-probs, kind="stable")
    cumulative = np.cumsum(probs[order])
    n_keep = int(np.searchsorted(cumulative, p * cumulative[-1] * (1 - 1e-12))) + 1  # first index reaching p
    keep = np.zeros(probs.shape, dtype=bool)
    keep[order[:n_keep]] = True
    return keep


def sample_next(
    logits: np.ndarray,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    rng: np.random.Generator | None = None,
) -> int:
    """One token id from a row of logits (V,) on the host: greedy at temperature 0, else sampled."""
    logits = np.asarray(logits, dtype=np.float64)
    if not temperature >= 0 or temperature == np.inf:  # "not >=": NaN fails every comparison
        raise ValueError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature}")
    if np.isnan(logits).any():
        raise ValueError(
            f"the model's logits contain NaN ({int(np.isnan(logits).sum())} of {logits.size}), so no token can be "
            f"picked: its weights hold NaN or infinity (a diverged training run, or a damaged file); load another checkpoint"
        )
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits / temperature
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    keep = np.ones(probs.shape, dtype=bool)
    if top_k is not None:
        keep &= top_k_mask(probs, top_k)
    if top_p is not None:
        keep &= top_p_mask(probs, top_p)
    probs = np.where(keep, probs, 0.0)
    probs /= probs.sum()
    rng = rng if rng is not None else np.random.default_rng()
    return int(rng.choice(len(probs), p=probs))


def generate(
    model: Any,
    prompt_ids: Iterable[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_ids: Iterable[int] = (),
    use_cache: bool = True,
    cache: Any = None,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` new token ids, one at a time (so text can stream).

    Stops early after yielding a token in ``stop_ids`` (e.g. the tokenizer's eos).
    ``seed`` fixes the sampling RNG, so the same seed reproduces a sample.
    ``cache``: an existing ``KVCache`` already holding the conversation so far (chat);
    then ``prompt_ids`` are only the new tokens. The last token yielded is not yet in
    the cache: a chat loop passes it at the start of its next prompt. A prompt that does not fit in the
    model's context (``max_seq_len``) raises ``ValueError``, and an id outside the vocabulary
    ``IndexError`` (from the model, before anything is yielded); generation stops when the
    context is full.

    >>> # for token in generate(model, tokenizer.encode("ROMEO:"), 50, temperature=0.8, top_k=40):
    >>> #     print(tokenizer.decode([token]), end="", flush=True)
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int | np.integer) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if hasattr(prompt_ids, "dtype"):  # a NumPy or CuPy array: check its dtype, then take plain ints
        if prompt_ids.dtype.kind not in "iu":
            raise TypeError(f"prompt ids must be integers (token ids from tokenizer.encode), got dtype {prompt_ids.dtype}")
        prompt_ids = get_backend().to_host(prompt_ids).tolist()
    prompt = list(prompt_ids)
    not_ids = [t for t in prompt if isinstance(t, bool) or not isinstance(t, int | np.integer)]
    if not_ids:
        raise TypeError(f"prompt ids must be integers (token ids from tokenizer.encode), got {not_ids[0]!r}")
    prompt = [int(t) for t in prompt]
    max_seq_len = model.config.max_seq_len
    already = cache.length if cache is not None else 0
    if not prompt:
        raise ValueError("generate needs a non-empty prompt (start with the tokenizer's bos id if you have nothing)")
    if already + len(prompt) > max_seq_len:
        raise ValueError(
            f"the prompt has {len(prompt)} tokens (+{already} cached) but the model's context is {max_seq_len} tokens; "
            f"shorten the prompt"
        )
    stop = set(int(t) for t in stop_ids)
    rng = np.random.default_rng(seed)
    backend = get_backend()
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            if use_cache and cache is None:
                cache = model.new_cache(batch_size=1)
            sequence = list(prompt)
            step_input = prompt
            for _ in range(max_new_tokens):
                if use_cache:
                    ids = Tensor(backend.asarray(np.array([step_input], dtype=np.int64)))
                    logits, _ = model(ids, cache=cache, last_only=True)  # (1, 1, V)
                else:
                    ids = Tensor(backend.asarray(np.array([sequence], dtype=np.int64)))
                    logits, _ = model(ids, last_only=True)
                row = backend.to_host(logits.data[0, -1])
                token = sample_next(row, temperature, top_k, top_p, rng)
                yield token
                if token in stop:
                    break
                sequence.append(token)
                step_input = [token]
                if already + len(sequence) >= max_seq_len:
                    break
    finally:
        model.train(was_training)
