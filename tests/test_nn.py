"""tinyllm.nn: Module bookkeeping, RoPE tables and pairing conventions, attention (GQA, causality, KV cache)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import on_device, to_numpy

import tinyllm as tl
from tinyllm.models import ModelConfig, Transformer
from tinyllm.nn import (
    Attention,
    Embedding,
    LayerNorm,
    Linear,
    Module,
    ModuleList,
    Parameter,
    RMSNorm,
    RotaryEmbedding,
    half_split_to_interleaved,
    interleaved_to_half_split,
)
from tinyllm.nn.fused import apply_rope
from tinyllm.nn.rotary import rope_frequencies

# -- Module --------------------------------------------------------------------------------------


class Toy(Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = Linear(3, 4, bias=True)
        self.scale = Parameter(np.ones(4, dtype=np.float32))
        self.norm = RMSNorm(4)
        self.blocks = ModuleList([Linear(4, 4), Linear(4, 2)])

    def forward(self, x: tl.Tensor) -> tl.Tensor:
        h = self.norm(self.first(x)) * self.scale
        for block in self.blocks:
            h = block(h)
        return h


TOY_NAMES = ["scale", "first.weight", "first.bias", "norm.weight", "blocks.0.weight", "blocks.1.weight"]


class Tied(Module):
    """An embedding whose table is also the output projection (as tied LM heads)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = Embedding(5, 3)
        self.head = Linear(3, 5)
        self.head.weight = self.embed.weight


def test_parameters_in_definition_order_with_stable_names() -> None:
    names = [name for name, _ in Toy().named_parameters()]
    assert names == TOY_NAMES  # a module's own parameters, then each child's, in assignment order
    assert names == [name for name, _ in Toy().named_parameters()]
    toy = Toy()
    assert [id(p) for p in toy.parameters()] == [id(p) for _, p in toy.named_parameters()]
    assert list(toy.state_dict()) == TOY_NAMES
    assert toy.num_parameters() == 4 + 12 + 4 + 4 + 16 + 8


def test_reassigning_an_attribute_replaces_the_registration() -> None:
    toy = Toy()
    toy.first = Linear(3, 4)  # now without bias
    assert "first.bias" not in dict(toy.named_parameters())
    toy.scale = None
    assert "scale" not in dict(toy.named_parameters())


def test_tied_parameter_is_listed_once() -> None:
    tied = Tied()
    assert [name for name, _ in tied.named_parameters()] == ["embed.weight"]
    assert len(tied.parameters()) == 1
    assert list(tied.state_dict()) == ["embed.weight"]
    assert tied.head.weight is tied.embed.weight


def test_state_dict_round_trip_copies_values() -> None:
    source, target = Toy(), Toy()
    assert not np.allclose(to_numpy(source.first.weight), to_numpy(target.first.weight))
    saved = {name: to_numpy(array).copy() for name, array in source.state_dict().items()}
    target.load_state_dict(saved)
    for name, array in target.state_dict().items():
        np.testing.assert_array_equal(to_numpy(array), saved[name], err_msg=name)
    # Loaded by copy: changing the checkpoint afterwards leaves the model alone.
    saved["first.weight"][...] = 123.0
    assert not np.any(to_numpy(target.first.weight) == 123.0)
    # Tensors are accepted as values too.
    target.load_state_dict({name: tl.tensor(array) for name, array in source.state_dict().items()})
    np.testing.assert_array_equal(to_numpy(target.blocks[1].weight), to_numpy(source.blocks[1].weight))


def test_strict_load_names_every_missing_unexpected_and_misshapen_key_at_once() -> None:
    toy = Toy()
    before = {name: to_numpy(array).copy() for name, array in toy.state_dict().items()}
    state = {name: np.zeros(array.shape, dtype=np.float32) for name, array in toy.state_dict().items()}
    del state["first.bias"], state["blocks.1.weight"]
    state["blocks.2.weight"] = np.zeros((2, 2), dtype=np.float32)
    state["norm.weight"] = np.zeros(5, dtype=np.float32)
    with pytest.raises(ValueError) as info:
        toy.load_state_dict(state)
    message = str(info.value)
    expected = ["missing", "first.bias", "blocks.1.weight", "unexpected", "blocks.2.weight", "norm.weight", "(5,)", "(4,)"]
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in: {message}"
    # Nothing was loaded by the failed call.
    for name, array in toy.state_dict().items():
        np.testing.assert_array_equal(to_numpy(array), before[name], err_msg=name)


def test_non_strict_load_ignores_missing_and_unexpected_but_not_shapes() -> None:
    toy = Toy()
    untouched = to_numpy(toy.first.weight).copy()
    toy.load_state_dict({"scale": np.full(4, 2.0, dtype=np.float32), "extra.weight": np.zeros(3)}, strict=False)
    np.testing.assert_array_equal(to_numpy(toy.scale), 2.0)
    np.testing.assert_array_equal(to_numpy(toy.first.weight), untouched)
    with pytest.raises(ValueError, match="scale"):
        toy.load_state_dict({"scale": np.zeros(3, dtype=np.float32)}, strict=False)


def test_train_and_eval_propagate_and_switch_dropout() -> None:
    config = ModelConfig(vocab_size=16, dim=16, n_layers=2, n_heads=2, max_seq_len=8, dropout=0.5)
    model = Transformer(config)
    idx = np.arange(8).reshape(1, 8)
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    first, second = (to_numpy(model(idx)[0]) for _ in range(2))
    np.testing.assert_array_equal(first, second)  # no dropout: deterministic
    no_dropout = Transformer(ModelConfig(**{**config.to_dict(), "dropout": 0.0}))
    no_dropout.load_state_dict(model.state_dict())
    np.testing.assert_allclose(to_numpy(no_dropout(idx)[0]), first, atol=1e-6)
    model.train()
    assert all(m.training for m in model.modules())
    noisy = to_numpy(model(idx)[0])
    assert not np.allclose(noisy, first, atol=1e-3)
    assert model.train(False) is model and not model.layers[1].attention.training


def test_zero_grad_clears_accumulated_gradients() -> None:
    toy = Toy()
    x = tl.tensor(np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32))
    toy(x).sum().backward()
    once = [to_numpy(p.grad).copy() for p in toy.parameters()]
    toy(x).sum().backward()  # gradients add up across backward calls...
    for p, g in zip(toy.parameters(), once):
        np.testing.assert_allclose(to_numpy(p.grad), 2 * g, rtol=1e-5, atol=1e-7)
    toy.zero_grad()  # ...until zero_grad forgets them
    assert all(p.grad is None for p in toy.parameters())


def test_repr_shows_the_tree() -> None:
    text = repr(Toy())
    assert text.startswith("Toy(")
    expected = [
        "(first): Linear(in_features=3, out_features=4, bias=True)",
        "(norm): RMSNorm(4",
        "(blocks): ModuleList(",
        "(0): Linear(in_features=4, out_features=4, bias=False)",
        "(1): Linear(in_features=4, out_features=2",
    ]
    for fragment in expected:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    model_text = repr(Transformer(ModelConfig(vocab_size=16, dim=16, n_layers=1, n_heads=2, max_seq_len=8)))
    assert "(attention): Attention(n_heads=2, n_kv_heads=2, head_dim=8" in model_text
    assert "(wq): Linear(in_features=16, out_features=16, bias=False)" in model_text
    assert text.count("(") == text.count(")") and model_text.count("(") == model_text.count(")")


def test_module_list_indexing_len_and_iteration() -> None:
    layers = ModuleList([Linear(2, 2), LayerNorm(2), Linear(2, 3)])
    assert len(layers) == 3
    assert isinstance(layers[1], LayerNorm) and layers[-1].out_features == 3
    assert [type(m).__name__ for m in layers] == ["Linear", "LayerNorm", "Linear"]
    layers.append(RMSNorm(3))
    assert len(layers) == 4 and isinstance(layers[3], RMSNorm)
    assert [name for name, _ in layers.named_parameters()] == ["0.weight", "1.weight", "1.bias", "2.weight", "3.weight"]
    with pytest.raises(IndexError):
        layers[4]


def test_to_float64_casts_parameters_and_buffers() -> None:
    model = Transformer(ModelConfig(vocab_size=16, dim=16, n_layers=1, n_heads=2, max_seq_len=8))
    model.to(np.float64)
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model.rope.cos.dtype == np.float64 and model.rope.sin.dtype == np.float64
    logits, loss = model(np.zeros((1, 4), dtype=np.int64), np.zeros((1, 4), dtype=np.int64))
    assert logits.dtype == np.float64 and loss.dtype == np.float64


def test_module_without_super_init_is_a_clear_error() -> None:
    class Broken(Module):
        def __init__(self) -> None:
            self.layer = Linear(2, 2)

    with pytest.raises(RuntimeError, match="must call super"):
        Broken()


# -- RoPE tables and pairing conventions ---------------------------------------------------------


def test_rope_frequencies_example() -> None:
    assert rope_frequencies(4, theta=100.0).tolist() == [1.0, 0.1]
    np.testing.assert_allclose(rope_frequencies(8), [1.0, 0.1, 0.01, 0.001], rtol=1e-12)
    with pytest.raises(ValueError, match="even head_dim"):
        rope_frequencies(5)


def test_rope_tables_at_an_offset_are_slices_of_the_full_table() -> None:
    rope = RotaryEmbedding(head_dim=8, max_seq_len=16, theta=10000.0)
    cos_all, sin_all = (to_numpy(t) for t in rope.tables(0, 16))
    assert cos_all.shape == (16, 4)
    angles = np.outer(np.arange(16), rope_frequencies(8))
    np.testing.assert_allclose(cos_all, np.cos(angles), atol=1e-7)
    np.testing.assert_allclose(sin_all, np.sin(angles), atol=1e-7)
    for start, length in [(0, 1), (3, 5), (15, 1), (7, 9)]:
        cos, sin = (to_numpy(t) for t in rope.tables(start, length))
        np.testing.assert_array_equal(cos, cos_all[start : start + length])
        np.testing.assert_array_equal(sin, sin_all[start : start + length])
    with pytest.raises(ValueError, match="max_seq_len=16"):
        rope.tables(10, 7)


def test_pairing_permutations_are_inverses() -> None:
    w = np.arange(4).reshape(4, 1)
    assert interleaved_to_half_split(w, 1)[:, 0].tolist() == [0, 2, 1, 3]
    two_heads = np.arange(8).reshape(8, 1)  # heads are permuted separately, never mixed
    assert interleaved_to_half_split(two_heads, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    rng = np.random.default_rng(0)
    for n_heads, head_dim in [(1, 2), (2, 8), (3, 6)]:
        weight = rng.standard_normal((n_heads * head_dim, 5))
        np.testing.assert_array_equal(half_split_to_interleaved(interleaved_to_half_split(weight, n_heads), n_heads), weight)
        np.testing.assert_array_equal(interleaved_to_half_split(half_split_to_interleaved(weight, n_heads), n_heads), weight)
        bias = rng.standard_normal(n_heads * head_dim)  # 1-D (a q/k bias) works the same way
        np.testing.assert_array_equal(half_split_to_interleaved(interleaved_to_half_split(bias, n_heads), n_heads), bias)


def rope_interleaved_numpy(x: np.ndarray, theta: float) -> np.ndarray:
    """Meta's/llama.cpp's RoPE on x (T, n_heads, D): features (2i, 2i+1) rotated as the complex number x_2i + i x_2i+1."""
    T, H, D = x.shape
    angles = np.outer(np.arange(T), rope_frequencies(D, theta))[:, None, :]  # (T, 1, D/2)
    pairs = x.reshape(T, H, D // 2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    rotated = np.stack([a * np.cos(angles) - b * np.sin(angles), a * np.sin(angles) + b * np.cos(angles)], axis=-1)
    return rotated.reshape(T, H, D)


def test_interleaved_rope_on_w_equals_half_split_rope_on_permuted_w() -> None:
    """What GGUF loading relies on: permuting the rows of wq/wk turns interleaved RoPE into half-split RoPE."""
    T, dim, n_heads, n_kv_heads, head_dim, theta = 6, 12, 4, 2, 6, 500.0
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, dim))
    wq = rng.standard_normal((n_heads * head_dim, dim))  # rows in interleaved order (as in a GGUF file)
    wk = rng.standard_normal((n_kv_heads * head_dim, dim))

    q = rope_interleaved_numpy((x @ wq.T).reshape(T, n_heads, head_dim), theta)
    k = rope_interleaved_numpy((x @ wk.T).reshape(T, n_kv_heads, head_dim), theta)
    k = np.repeat(k, n_heads // n_kv_heads, axis=1)
    expected = np.einsum("thd,shd->hts", q, k)  # (n_heads, T, T) attention scores

    rope = RotaryEmbedding(head_dim, max_seq_len=T, theta=theta)
    cos, sin = rope.tables(0, T)
    wq_half = interleaved_to_half_split(wq, n_heads)
    wk_half = interleaved_to_half_split(wk, n_kv_heads)
    q_half = tl.tensor((x @ wq_half.T).reshape(1, T, n_heads, head_dim).transpose(0, 2, 1, 3))  # (1, H, T, D)
    k_half = tl.tensor((x @ wk_half.T).reshape(1, T, n_kv_heads, head_dim).transpose(0, 2, 1, 3))
    q_half, k_half = to_numpy(apply_rope(q_half, cos, sin))[0], to_numpy(apply_rope(k_half, cos, sin))[0]
    k_half = np.repeat(k_half, n_heads // n_kv_heads, axis=0)
    got = q_half @ k_half.swapaxes(-1, -2)  # (n_heads, T, T)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # Without the permutation the scores differ: the test can tell the conventions apart.
    q_wrong = tl.tensor((x @ wq.T).reshape(1, T, n_heads, head_dim).transpose(0, 2, 1, 3))
    k_wrong = tl.tensor((x @ wk.T).reshape(1, T, n_kv_heads, head_dim).transpose(0, 2, 1, 3))
    wrong = to_numpy(apply_rope(q_wrong, cos, sin))[0] @ np.repeat(
        to_numpy(apply_rope(k_wrong, cos, sin))[0], n_heads // n_kv_heads, axis=0
    ).swapaxes(-1, -2)
    assert not np.allclose(wrong, expected, atol=1e-3)


# -- attention -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n_kv_heads", [1, 2, 4], ids=["MQA", "GQA", "MHA"])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_gqa_equals_mha_with_repeated_kv_weights(n_kv_heads: int, qk_norm: bool) -> None:
    dim, n_heads, T = 16, 4, 5
    group, head_dim = n_heads // n_kv_heads, dim // n_heads
    gqa = Attention(dim, n_heads, n_kv_heads, qk_norm=qk_norm)
    mha = Attention(dim, n_heads, n_heads, qk_norm=qk_norm)
    rng = np.random.default_rng(1)
    if qk_norm:  # move the norm weights off their initial ones, so that they matter
        gqa.q_norm.weight.data += on_device(0.3 * rng.standard_normal(head_dim).astype(np.float32))
        gqa.k_norm.weight.data += on_device(0.3 * rng.standard_normal(head_dim).astype(np.float32))
    state = {name: to_numpy(array) for name, array in gqa.state_dict().items()}
    for name in ("wk.weight", "wv.weight"):
        # (Hkv * D, dim) -> (H * D, dim): key/value head j serves query heads j*G .. j*G + G-1
        per_head = state[name].reshape(n_kv_heads, head_dim, dim)
        state[name] = np.repeat(per_head, group, axis=0).reshape(n_heads * head_dim, dim)
    mha.load_state_dict(state)
    rope = RotaryEmbedding(head_dim, max_seq_len=8)
    x = tl.tensor(rng.standard_normal((2, T, dim)).astype(np.float32), requires_grad=True)
    out_gqa = gqa(x, rope)
    out_mha = mha(x, rope)
    assert out_gqa.shape == (2, T, dim)
    np.testing.assert_allclose(to_numpy(out_gqa), to_numpy(out_mha), rtol=1e-5, atol=1e-6)
    out_gqa.sum().backward()
    assert all(np.isfinite(to_numpy(p.grad)).all() and np.abs(to_numpy(p.grad)).max() > 0 for p in gqa.parameters())


def test_attention_is_causal() -> None:
    dim, T, t = 16, 6, 3
    attention = Attention(dim, n_heads=4, n_kv_heads=2)
    rope = RotaryEmbedding(4, max_seq_len=T)
    x = np.random.default_rng(0).standard_normal((2, T, dim)).astype(np.float32)
    changed = x.copy()
    changed[:, t] += 1.0
    before, after = to_numpy(attention(tl.tensor(x), rope)), to_numpy(attention(tl.tensor(changed), rope))
    np.testing.assert_allclose(after[:, :t], before[:, :t], rtol=1e-6, atol=1e-7)
    assert not np.allclose(after[:, t:], before[:, t:], atol=1e-4)  # position t and later do see it


def test_transformer_is_causal() -> None:
    model = Transformer(ModelConfig(vocab_size=20, dim=16, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16))
    idx = np.random.default_rng(0).integers(0, 20, size=(1, 10))
    changed = idx.copy()
    changed[0, 6] = (idx[0, 6] + 1) % 20
    before, after = to_numpy(model(idx)[0]), to_numpy(model(changed)[0])
    np.testing.assert_allclose(after[:, :6], before[:, :6], rtol=1e-6, atol=1e-7)
    assert not np.allclose(after[:, 6], before[:, 6], atol=1e-5)


def test_attention_rejects_indivisible_heads() -> None:
    with pytest.raises(ValueError, match="n_heads=4 must be a multiple of n_kv_heads=3"):
        Attention(12, 4, 3)


# -- KV cache ----------------------------------------------------------------------------------

CACHE_CONFIGS = {
    "gqa-rope": dict(n_heads=4, n_kv_heads=2),
    "mqa-qknorm": dict(n_heads=4, n_kv_heads=1, qk_norm=True),
    "qwen3-style": dict(n_heads=4, n_kv_heads=2, head_dim=8, qk_norm=True),  # n_heads * head_dim = 32 != dim
    "learned": dict(n_heads=2, positions="learned", norm="layernorm", mlp="gelu", bias=True),
    "sinusoidal": dict(n_heads=2, positions="sinusoidal", tie_embeddings=False),
}


def cache_model(case: str) -> Transformer:
    """A small model with weights scaled up from init (std 0.02 -> 0.2), so attention is far from uniform
    and a wrong position or a missing cached key shows in the logits well above the 1e-5 tolerance."""
    model = Transformer(ModelConfig(vocab_size=32, dim=16, n_layers=2, max_seq_len=16, **CACHE_CONFIGS[case]))
    for p in model.parameters():
        if p.ndim >= 2:
            p.data *= 10.0
    return model


@pytest.mark.parametrize("case", list(CACHE_CONFIGS))
def test_kv_cache_token_by_token_equals_full_forward(case: str) -> None:
    model = cache_model(case)
    idx = np.random.default_rng(0).integers(0, 32, size=(2, 12))
    full = to_numpy(model(idx)[0])  # (2, 12, vocab)
    cache = model.new_cache(batch_size=2)
    with tl.no_grad():
        steps = [to_numpy(model(idx[:, t : t + 1], cache=cache)[0]) for t in range(12)]
    assert cache.length == 12
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", list(CACHE_CONFIGS))
def test_kv_cache_prefill_then_chunks_equals_full_forward(case: str) -> None:
    model = cache_model(case)
    idx = np.random.default_rng(1).integers(0, 32, size=(1, 11))
    full = to_numpy(model(idx)[0])
    cache = model.new_cache()
    with tl.no_grad():
        chunks = [to_numpy(model(idx[:, :5], cache=cache)[0])]  # prefill
        chunks.append(to_numpy(model(idx[:, 5:8], cache=cache)[0]))  # a chunk of 3 after 5 cached: T=3, S=8
        chunks += [to_numpy(model(idx[:, t : t + 1], cache=cache)[0]) for t in range(8, 11)]
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), full, atol=1e-5, rtol=0)
    # last_only with a cache gives the last position's logits alone.
    cache.truncate(10)
    with tl.no_grad():
        last = to_numpy(model(idx[:, 10:11], cache=cache, last_only=True)[0])
    np.testing.assert_allclose(last, full[:, 10:11], atol=1e-5, rtol=0)


def test_kv_cache_stores_only_the_kv_heads_and_refuses_to_overflow() -> None:
    model = cache_model("mqa-qknorm")
    cache = model.new_cache(batch_size=3, max_seq_len=6)
    assert len(cache.keys) == 2 and cache.keys[0].shape == (3, 1, 6, 4) and cache.values[1].shape == (3, 1, 6, 4)
    model(np.zeros((3, 4), dtype=np.int64), cache=cache)
    with pytest.raises(ValueError, match="KV cache is full: 7 positions needed, 6 allocated"):
        model(np.zeros((3, 3), dtype=np.int64), cache=cache)
