"""The sampler: cached and uncached generation agree, top-k/top-p keep exactly the right sets, seeds reproduce."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_numpy
from hypothesis import given
from hypothesis import strategies as st

import tinyllm as tl
from tinyllm.models import ModelConfig, Transformer
from tinyllm.sampling import generate, sample_next, top_k_mask, top_p_mask


def tiny_model(**overrides) -> Transformer:
    config = dict(vocab_size=37, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=48)
    config.update(overrides)
    tl.get_backend().seed(1)
    model = Transformer(ModelConfig(**config))
    # Larger weights than the 0.02 init, so the logits are far from uniform and greedy ties are unlikely.
    for p in model.parameters():
        if p.ndim >= 2:
            p.data *= 20
    return model


def test_cached_logits_equal_full_recompute() -> None:
    model = tiny_model()
    ids = np.random.default_rng(0).integers(0, 37, (1, 20))
    with tl.no_grad():
        full, _ = model(ids)
        cache = model.new_cache()
        pieces = [model(ids[:, :7], cache=cache)[0]]
        for t in range(7, 20):
            pieces.append(model(ids[:, t : t + 1], cache=cache)[0])
    stepped = np.concatenate([to_numpy(p) for p in pieces], axis=1)
    np.testing.assert_allclose(stepped, to_numpy(full), atol=1e-5, rtol=1e-5)


def test_cache_keeps_n_kv_heads_only() -> None:
    model = tiny_model(n_heads=4, n_kv_heads=1)
    cache = model.new_cache()
    assert cache.keys[0].shape == (1, 1, 48, 8)
    mha = tiny_model(n_heads=4, n_kv_heads=4).new_cache()
    assert mha.nbytes == 4 * cache.nbytes


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4])
def test_greedy_tokens_same_with_and_without_cache(n_kv_heads: int) -> None:
    model = tiny_model(n_kv_heads=n_kv_heads)
    prompt = [3, 14, 15, 9, 2]
    cached = list(generate(model, prompt, 30, temperature=0))
    uncached = list(generate(model, prompt, 30, temperature=0, use_cache=False))
    assert cached == uncached
    assert len(cached) == 30


def test_fixed_seed_reproduces_a_sample_and_other_seeds_differ() -> None:
    model = tiny_model()
    a = list(generate(model, [1, 2, 3], 25, temperature=1.0, top_k=20, seed=7))
    b = list(generate(model, [1, 2, 3], 25, temperature=1.0, top_k=20, seed=7))
    c = list(generate(model, [1, 2, 3], 25, temperature=1.0, top_k=20, seed=8))
    assert a == b
    assert a != c


def test_stop_ids_end_generation_after_the_stop_token() -> None:
    model = tiny_model()
    free = list(generate(model, [5, 6], 20, temperature=0))
    stop = free[3]
    stopped = list(generate(model, [5, 6], 20, temperature=0, stop_ids=[stop]))
    assert stopped == free[: free.index(stop) + 1]


def test_prompt_longer_than_context_raises() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="context is 48 tokens"):
        next(generate(model, list(range(30)) * 2, 5))


def test_prompt_id_out_of_range_raises() -> None:
    with pytest.raises(IndexError, match="99"):
        next(generate(tiny_model(), [1, 99], 5))


def test_generation_stops_when_context_is_full() -> None:
    model = tiny_model()
    out = list(generate(model, [i % 37 for i in range(40)], 100, temperature=0))
    assert len(out) == 48 - 40


probabilities = st.lists(st.floats(0.001, 1.0), min_size=1, max_size=30).map(lambda xs: np.array(xs) / sum(xs))


@given(probs=probabilities, k=st.integers(1, 35))
def test_top_k_keeps_the_k_largest(probs: np.ndarray, k: int) -> None:
    keep = top_k_mask(probs, k)
    assert keep.sum() == min(k, len(probs))
    if keep.sum() < len(probs):
        assert probs[keep].min() >= probs[~keep].max()


@given(probs=probabilities, p=st.floats(0.01, 1.0))
def test_top_p_keeps_the_smallest_nucleus_reaching_p(probs: np.ndarray, p: float) -> None:
    keep = top_p_mask(probs, p)
    kept = np.sort(probs[keep])[::-1]
    assert keep.any()
    if (~keep).any():
        assert probs[keep].min() >= probs[~keep].max()
    # reaches p (up to float rounding), and removing the least likely kept token would not
    assert kept.sum() >= p - 1e-9
    assert kept[:-1].sum() < p + 1e-9


@given(seed=st.integers(0, 1000), k=st.integers(1, 5), p=st.floats(0.05, 1.0))
def test_samples_come_only_from_the_allowed_set(seed: int, k: int, p: float) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(12) * 3
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    allowed = top_k_mask(probs, k) & top_p_mask(probs, p)
    for _ in range(20):
        assert allowed[sample_next(logits, 1.0, top_k=k, top_p=p, rng=rng)]


def test_greedy_is_argmax_and_negative_temperature_raises() -> None:
    logits = np.array([0.1, 3.0, -1.0])
    assert sample_next(logits, temperature=0) == 1
    with pytest.raises(ValueError):
        sample_next(logits, temperature=-1)
