"""LoRA adapters against Hugging Face PEFT (fixture by scripts/make_peft_fixtures.py) and the PEFT file format."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import safetensors.numpy
from conftest import FIXTURES, on_device, to_numpy

import tinyllm as tl
from tinyllm.finetune import apply_lora, load_lora, lora_layers, lora_parameters, save_lora
from tinyllm.finetune.peft import PREFIX, hf_module_name, load_adapter_tensors
from tinyllm.models import ModelConfig, Transformer

PEFT = FIXTURES / "peft"


@pytest.fixture(scope="module")
def expected():  # noqa: ANN201
    return safetensors.numpy.load_file(PEFT / "expected.safetensors")


def base_model() -> Transformer:
    model, _ = tl.load_pretrained(PEFT / "base")
    return model


def test_peft_adapter_gives_peft_logits_and_gradients(expected):
    model = load_lora(base_model(), PEFT / "adapter")
    assert model.lora_config.r == 4 and model.lora_config.scaling == 2.0
    assert len(lora_layers(model)) == 2 * 7
    logits, loss = model(expected["input_ids"], expected["targets"])
    np.testing.assert_allclose(to_numpy(logits), expected["logits"], atol=1e-4, rtol=0)
    assert abs(loss.item() - float(expected["loss"])) < 1e-5
    loss.backward()
    checked = 0
    for name, layer in lora_layers(model).items():
        key = PREFIX + hf_module_name(name)
        for which, param in (("A", layer.lora_A), ("B", layer.lora_B)):
            np.testing.assert_allclose(to_numpy(param.grad), expected[f"grad.{key}.lora_{which}.weight"], atol=1e-4, rtol=0,
                                       err_msg=f"{key} lora_{which}")
            checked += 1
    assert checked == sum(k.startswith("grad.") for k in expected) == 28
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)  # the base stays frozen


def test_save_lora_writes_peft_names_shapes_and_config(tmp_path):
    model = load_lora(base_model(), PEFT / "adapter")
    save_lora(model, tmp_path / "ours")
    ours, theirs = load_adapter_tensors(tmp_path / "ours"), load_adapter_tensors(PEFT / "adapter")
    assert sorted(ours) == sorted(theirs)
    assert "base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight" in ours
    for key in theirs:
        assert ours[key].shape == theirs[key].shape and ours[key].dtype == np.float32
        np.testing.assert_array_equal(ours[key], theirs[key])
    config = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    reference = json.loads((PEFT / "adapter" / "adapter_config.json").read_text())
    for field in ("peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "bias", "use_rslora", "use_dora"):
        assert config[field] == reference[field], field
    assert sorted(config["target_modules"]) == sorted(reference["target_modules"])


def test_round_trip_of_our_own_adapter(tmp_path):
    tl.set_backend("numpy", seed=0)
    model = apply_lora(base_model(), r=2, alpha=3.0, target_modules=("wq", "w_up"))
    for p in lora_parameters(model):
        p.data[...] = on_device(np.random.default_rng(0).standard_normal(p.shape))
    save_lora(model, tmp_path)
    again = load_lora(base_model(), tmp_path)
    assert list(lora_layers(again)) == list(lora_layers(model))
    for p, q in zip(lora_parameters(model), lora_parameters(again)):
        np.testing.assert_array_equal(p.data, q.data)
    assert again.lora_config.alpha == 3.0 and again.lora_config.target_modules == ["wq", "w_up"]


def test_adapter_for_another_base_is_a_clear_error():
    other = Transformer(ModelConfig(vocab_size=64, dim=48, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32))
    before = list(other.state_dict())
    with pytest.raises(ValueError, match=r"made for another base model.*q_proj.lora_A.weight: adapter \(4, 32\) vs "
                                         r"\(4, 48\)"):
        load_lora(other, PEFT / "adapter")
    assert list(other.state_dict()) == before and not lora_layers(other)  # left as it was
    shallow = Transformer(ModelConfig(vocab_size=64, dim=32, n_layers=1, n_heads=4, n_kv_heads=2, max_seq_len=32,
                                      ffn_hidden_dim=48))
    with pytest.raises(ValueError, match="no linear layer layers.1.attention.wq"):
        load_lora(shallow, PEFT / "adapter")


def test_unsupported_peft_options_are_named(tmp_path):
    shutil.copytree(PEFT / "adapter", tmp_path / "a")
    config_path = tmp_path / "a" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["use_dora"] = True
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not support: use_dora"):
        load_lora(base_model(), tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter folder"):
        load_lora(base_model(), tmp_path)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        load_lora(load_lora(base_model(), PEFT / "adapter"), PEFT / "adapter")
