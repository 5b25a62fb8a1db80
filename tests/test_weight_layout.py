"""The CPU decoding layout work changes speed only, never a result: input-major weights
(tinyllm.nn.weight_layout) and few-row products padded to 4 rows (NumpyBackend.matmul)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyllm as tl
from tinyllm.autograd import no_grad
from tinyllm.backends import backend_name_from_environment
from tinyllm.backends.numpy_backend import NumpyBackend
from tinyllm.models import ModelConfig, Transformer
from tinyllm.nn import Linear
from tinyllm.nn.weight_layout import input_major_weights
from tinyllm.sampling import generate

pytestmark = pytest.mark.skipif(backend_name_from_environment() != "numpy", reason="a NumPy memory layout")


def tiny(tie: bool) -> Transformer:
    config = ModelConfig(vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32, tie_embeddings=tie)
    return Transformer(config)


def float_weights(model: Transformer) -> list[np.ndarray]:
    weights = [m.weight.data for m in model.modules() if isinstance(m, Linear)]
    return weights + ([model.tok_embeddings.weight.data] if model.lm_head is None else [])


@pytest.mark.parametrize("tie", [True, False])
def test_same_logits_and_cached_decoding_with_input_major_weights(tie: bool) -> None:
    model = tiny(tie)
    ids = np.random.default_rng(0).integers(0, 97, (3, 9))
    with no_grad():
        expected = model(ids)[0].data.copy()
        reference_tokens = list(generate(model, ids[0, :4].tolist(), max_new_tokens=6, temperature=0.0))
    assert not any(w.flags.f_contiguous for w in float_weights(model))

    assert input_major_weights(model) is model
    assert all(w.flags.f_contiguous and not w.flags.c_contiguous for w in float_weights(model))
    assert model.tok_embeddings.weight.data.flags.f_contiguous == tie  # an untied table is only looked up
    with no_grad():
        np.testing.assert_allclose(model(ids)[0].data, expected, rtol=1e-5, atol=1e-6)
        tokens = list(generate(model, ids[0, :4].tolist(), max_new_tokens=6, temperature=0.0))
    assert tokens == reference_tokens and len(tokens) == 6


def test_training_steps_on_input_major_weights_match_row_major_ones() -> None:
    a, b = tiny(True), tiny(True)
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})
    input_major_weights(b)
    ids = np.random.default_rng(1).integers(0, 97, (2, 12))
    for model in (a, b):
        optimizer = tl.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(3):
            _, loss = model(ids[:, :-1], ids[:, 1:])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6, err_msg=name)
    assert b.layers[0].attention.wq.weight.data.flags.f_contiguous  # updates kept the layout


def test_quantized_layers_are_left_as_they_are() -> None:
    model = tiny(True)
    tl.quantize(model, "q4", include_embeddings=True)
    ids = np.random.default_rng(2).integers(0, 97, (2, 7))
    with no_grad():
        expected = model(ids)[0].data.copy()
        input_major_weights(model)
        np.testing.assert_array_equal(model(ids)[0].data, expected)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 20), k=st.integers(1, 40), n=st.integers(1, 40), input_major=st.booleans())
def test_numpy_matmul_pads_a_few_rows_and_gives_a_times_b(rows: int, k: int, n: int, input_major: bool) -> None:
    rng = np.random.default_rng(rows * 1000 + k * 40 + n)
    a = rng.standard_normal((rows, k), dtype=np.float32)
    weight = rng.standard_normal((n, k), dtype=np.float32)  # (out, in)
    if input_major:
        weight = np.asfortranarray(weight)
    backend = NumpyBackend()
    y = backend.matmul(a, weight.T)
    assert y.shape == (rows, n) and y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(y, a.astype(np.float64) @ weight.T.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_the_served_model_has_input_major_weights() -> None:
    from conftest import FIXTURES

    from tinyllm.serve.__main__ import load, parse_args

    path = FIXTURES / "reference" / "hf_llama_dir"
    expected, _ = tl.load_pretrained(path)
    model, _, _ = load(parse_args(["--model", str(path)]))
    assert all(w.flags.f_contiguous for w in float_weights(model))
    ids = np.array([[1, 5, 9, 2]])
    with no_grad():
        np.testing.assert_allclose(model(ids)[0].data, expected(ids)[0].data, rtol=1e-5, atol=1e-6)
