"""How ``python -m tinyllm.serve`` loads what its flags name: every format through one loader, an adapter folded in."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import FIXTURES, to_numpy

import tinyllm as tl
from tinyllm.finetune import apply_lora, lora_parameters, save_lora
from tinyllm.serve.__main__ import load, parse_args

MODEL = FIXTURES / "reference" / "hf_llama_dir"


def test_an_adapter_is_folded_into_the_served_model(tmp_path):
    tl.set_backend("numpy", seed=0)
    adapted, _ = tl.load_pretrained(MODEL)
    apply_lora(adapted, r=4, target_modules=("wq", "wv"))
    for p in lora_parameters(adapted):  # B starts at zero: give the adapter something to change
        p.data[...] = np.random.default_rng(1).standard_normal(p.data.shape).astype(p.data.dtype) * 0.1
    save_lora(adapted, tmp_path / "adapter")
    ids = np.array([[1, 5, 9, 2]])
    expected = to_numpy(adapted(ids)[0].data)

    model, tokenizer, name = load(parse_args(["--model", str(MODEL), "--lora", str(tmp_path / "adapter")]))
    assert name == MODEL.name and tokenizer is not None
    assert not any("lora" in key for key in model.state_dict())  # merged: no adapter layers left
    np.testing.assert_allclose(to_numpy(model(ids)[0].data), expected, rtol=1e-5, atol=1e-5)


def test_a_missing_model_or_a_bad_adapter_exits_with_the_reason(tmp_path):
    with pytest.raises(SystemExit, match="error: .*missing"):
        load(parse_args(["--model", str(tmp_path / "missing")]))
    with pytest.raises(SystemExit, match="error: --lora"):
        load(parse_args(["--model", str(MODEL), "--lora", str(tmp_path)]))
