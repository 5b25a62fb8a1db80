"""tinyllm.utils: parameter counts and memory estimates against real models and measured arrays."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import tinyllm as tl
from tinyllm.models import ModelConfig, Transformer
from tinyllm.optim import AdamW
from tinyllm.train import TrainConfig
from tinyllm.utils import (
    benchmark_model,
    count_parameters,
    dataclass_from_dict,
    estimate_memory,
    get_device,
    load_config,
    print_model_summary,
    save_config,
    set_seed,
)


def test_published_parameter_counts_from_config_alone() -> None:
    llama3_8b = ModelConfig(
        vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_hidden_dim=14336,
        tie_embeddings=False, max_seq_len=8192, rope_theta=500000.0,
    )
    assert count_parameters(llama3_8b) == 8_030_261_248  # "8.03B"
    smollm2 = ModelConfig(
        vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, ffn_hidden_dim=1536, tie_embeddings=True
    )
    assert count_parameters(smollm2) == 134_515_008  # "134.5M", as the GGUF file holds


@pytest.mark.parametrize(
    "norm,mlp,positions,tie,qk_norm,bias",
    list(itertools.product(["rmsnorm", "layernorm"], ["swiglu", "gelu"], ["rope", "learned"], [True, False],
                           [False, True], [False, True])),
)
def test_count_from_config_equals_the_built_model(norm, mlp, positions, tie, qk_norm, bias) -> None:  # noqa: ANN001
    config = ModelConfig(
        vocab_size=29, dim=16, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden_dim=24, max_seq_len=8,
        norm=norm, mlp=mlp, positions=positions, tie_embeddings=tie, qk_norm=qk_norm, bias=bias,
    )
    assert count_parameters(config) == Transformer(config).num_parameters()


def saved_activation_bytes(loss: tl.Tensor, parameters: list) -> int:
    """Bytes of the distinct arrays (other than parameters) that the graph behind ``loss`` keeps for backward."""
    weights = {id(p.data) for p in parameters}
    seen_buffers: dict[int, int] = {}
    stack, visited = [loss.creator], set()
    while stack:
        f = stack.pop()
        if f is None or id(f) in visited:
            continue
        visited.add(id(f))
        for array in getattr(f, "saved", ()):
            if array is None or not hasattr(array, "nbytes") or array.dtype.kind != "f":
                continue
            base = array if array.base is None else array.base
            if id(base) in weights:
                continue
            seen_buffers[id(base)] = base.nbytes
        stack.extend(t.creator for t in f.inputs)
    return sum(seen_buffers.values())


@pytest.mark.parametrize("n_kv_heads,mlp", [(2, "swiglu"), (4, "swiglu"), (1, "gelu")])
def test_estimate_memory_matches_measured_arrays(n_kv_heads: int, mlp: str) -> None:
    config = ModelConfig(vocab_size=300, dim=64, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads, ffn_hidden_dim=96,
                         max_seq_len=32, tie_embeddings=False, mlp=mlp)
    model = Transformer(config)
    optimizer = AdamW(model.parameters(), lr=1e-3)
    B, T = 3, 32
    ids = np.random.default_rng(0).integers(0, 300, (B, T))
    _, loss = model(ids, ids)
    measured_activations = saved_activation_bytes(loss, model.parameters())
    loss.backward()
    optimizer.step()
    estimate = estimate_memory(model, B, T)
    params = sum(p.data.nbytes for p in model.parameters())
    assert estimate["parameters"] == params
    assert estimate["gradients"] == sum(p.grad.nbytes for p in model.parameters())
    assert estimate["optimizer"] == sum(a.nbytes for s in optimizer.state for a in s.values())
    # Activations: the estimate lists what the fused ops save; small extras (RMSNorm's per-row
    # scale, the cross-entropy's log-sum-exp) are left out, so allow 5%.
    assert estimate["activations"] == pytest.approx(measured_activations, rel=0.05)
    assert estimate["total"] == sum(v for k, v in estimate.items() if k != "total")


def test_estimate_memory_from_config_alone_and_bad_optimizer() -> None:
    config = ModelConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2, max_seq_len=16)
    assert estimate_memory(config, 2, 16)["parameters"] == 4 * count_parameters(config)
    assert estimate_memory(config, optimizer="sgd")["optimizer"] == 0
    with pytest.raises(ValueError, match="optimizer must be one of"):
        estimate_memory(config, optimizer="lion")


def test_set_seed_reproduces_initialisation() -> None:
    config = ModelConfig(vocab_size=20, dim=16, n_layers=1, n_heads=2, max_seq_len=8)
    set_seed(3)
    a = Transformer(config).tok_embeddings.weight.numpy()
    set_seed(3)
    b = Transformer(config).tok_embeddings.weight.numpy()
    np.testing.assert_array_equal(a, b)


def test_get_device_names_the_backend() -> None:
    assert get_device().startswith(tl.get_backend().name)


def test_config_save_load_and_unknown_keys(tmp_path) -> None:  # noqa: ANN001
    config = ModelConfig(vocab_size=20, dim=16, n_layers=1, n_heads=2, max_seq_len=8)
    save_config(config, tmp_path / "model.json")
    assert load_config(tmp_path / "model.json") == config
    train_config = TrainConfig(max_steps=7)
    save_config(train_config, tmp_path / "train.json")
    assert load_config(tmp_path / "train.json", TrainConfig) == train_config
    with pytest.raises(ValueError, match=r"Unknown ModelConfig keys \['dimm'\]; valid keys are"):
        dataclass_from_dict(ModelConfig, {"dimm": 3})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config(tmp_path / "bad.json")


def test_summary_and_benchmark(capsys) -> None:  # noqa: ANN001
    model = Transformer(ModelConfig(vocab_size=20, dim=16, n_layers=1, n_heads=2, max_seq_len=8))
    print_model_summary(model, batch_size=2)
    out = capsys.readouterr().out
    assert "tok_embeddings" in out and f"{model.num_parameters():,}" in out and "activations" in out
    speeds = benchmark_model(model, batch_size=2, seq_len=8, steps=2)
    assert speeds["forward_tokens_per_second"] > 0 and speeds["train_tokens_per_second"] > 0
    assert all(p.grad is None for p in model.parameters())
