"""generate_batch: prompts of different lengths decoded together give each prompt what generate() gives alone,
and each row stops on its own."""

from __future__ import annotations

import numpy as np
import pytest

from tinyllm.batch_generation import generate_batch
from tinyllm.models import ModelConfig, Transformer
from tinyllm.sampling import generate

CONFIG = dict(vocab_size=40, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32)
PROMPTS = [[1, 2, 3, 4, 5, 6, 7], [8], [9, 10, 11], [12, 13, 14, 15]]


def sharp_model() -> Transformer:
    """Random weights scaled up, so the next-token distributions are far from uniform (no near-ties)."""
    model = Transformer(ModelConfig(**CONFIG))
    for p in model.parameters():
        if p.ndim == 2:
            p.data *= 8.0
    return model


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_each_row_equals_generate_alone(temperature: float) -> None:
    model = sharp_model()
    batch = generate_batch(model, PROMPTS, 12, temperature=temperature, seed=7)
    for prompt, row in zip(PROMPTS, batch):
        assert row == list(generate(model, prompt, 12, temperature=temperature, seed=7))


def test_rows_stop_on_their_own() -> None:
    model = sharp_model()
    free = generate_batch(model, PROMPTS, 10, temperature=0.0)
    stop = free[2][3]  # row 2's fourth token: that row must end there, the others wherever it first appears
    stopped = generate_batch(model, PROMPTS, 10, temperature=0.0, stop_ids=[stop])
    for row, full in zip(stopped, free):
        end = full.index(stop) + 1 if stop in full else len(full)
        assert row == full[:end]
    assert len(stopped[2]) <= 4


def test_a_full_context_ends_a_row_and_seeds_per_row() -> None:
    model = sharp_model()
    long = list(range(1, 30))  # 29 tokens of a 32-token context: 3 more at most, as generate
    out = generate_batch(model, [long, [1, 2]], 10, temperature=1.0, seed=[3, 4])
    assert out[0] == list(generate(model, long, 10, temperature=1.0, seed=3)) and len(out[0]) == 3
    assert out[1] == list(generate(model, [1, 2], 10, temperature=1.0, seed=4))


def test_bad_prompts_are_clear_errors() -> None:
    model = sharp_model()
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate_batch(model, [[1], []], 3)
    with pytest.raises(ValueError, match="prompt 0 has 40 tokens"):
        generate_batch(model, [list(np.arange(40) % 30)], 3)
    with pytest.raises(ValueError, match="2 seeds for 1 prompts"):
        generate_batch(model, [[1]], 3, seed=[1, 2])
