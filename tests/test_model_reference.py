"""The Transformer against Hugging Face transformers' saved outputs (tiny random Llama-GQA and Qwen3).

Fixtures: tests/fixtures/reference/*, made by scripts/make_reference_fixtures.py with
transformers' LlamaForCausalLM / Qwen3ForCausalLM in float32 (eager attention).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import FIXTURES, to_numpy
from safetensors.numpy import load_file

import tinyllm as tl
from tinyllm.models import Transformer
from tinyllm.pretrained.hf_config import config_from_hf
from tinyllm.pretrained.mapping import get_llama_key_mapping

CASES = ["llama_gqa", "qwen3"]


def load_reference(name: str) -> tuple[Transformer, dict[str, np.ndarray], dict[str, str]]:
    folder = FIXTURES / "reference" / name
    config = config_from_hf(json.loads((folder / "config.json").read_text()))
    model = Transformer(config)
    mapping = get_llama_key_mapping(config)
    weights = load_file(folder / "model.safetensors")
    model.load_state_dict({mapping[k]: v for k, v in weights.items()})
    return model, load_file(folder / "io.safetensors"), mapping


@pytest.mark.parametrize("name", CASES)
def test_logits_and_loss_match_transformers(name: str) -> None:
    model, io, _ = load_reference(name)
    logits, loss = model(io["input_ids"], io["targets"])
    np.testing.assert_allclose(to_numpy(logits), io["logits"], atol=1e-4, rtol=1e-4)
    assert abs(loss.item() - float(io["loss"])) < 1e-4


@pytest.mark.parametrize("name", CASES)
def test_hidden_states_match_layer_by_layer(name: str) -> None:
    model, io, _ = load_reference(name)
    x = model.tok_embeddings(tl.tensor(io["input_ids"]))
    np.testing.assert_allclose(to_numpy(x), io["hidden.embed"], atol=1e-6)
    for i, layer in enumerate(model.layers):
        x = layer(x, model.rope)
        np.testing.assert_allclose(to_numpy(x), io[f"hidden.layer{i}"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(to_numpy(model.norm(x)), io["hidden.final_norm"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", CASES)
def test_gradients_match_transformers(name: str) -> None:
    model, io, mapping = load_reference(name)
    _, loss = model(io["input_ids"], io["targets"])
    loss.backward()
    params = dict(model.named_parameters())
    checked = 0
    for hf_name, name_here in mapping.items():
        expected = io[f"grad.{hf_name}"]
        got = to_numpy(params[name_here].grad)
        scale = max(float(np.abs(expected).max()), 1e-8)
        np.testing.assert_allclose(got, expected, atol=1e-3 * scale, rtol=1e-3, err_msg=hf_name)
        checked += 1
    assert checked == len(params)
