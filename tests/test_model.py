"""tinyllm.models: ModelConfig validation and JSON files; the Transformer's outputs, errors, variants, init,
a float64 gradient check of a whole model, and overfitting one batch."""

from __future__ import annotations

import importlib
import itertools
import json
import math

import numpy as np
import pytest
from conftest import to_numpy

import tinyllm as tl
from tinyllm.autograd import gradcheck
from tinyllm.models import ModelConfig, Transformer
from tinyllm.optim import AdamW

# -- ModelConfig -------------------------------------------------------------------------------


def test_config_derives_head_dim_kv_heads_and_ffn_width() -> None:
    config = ModelConfig(vocab_size=100, dim=96, n_heads=6)
    assert config.head_dim == 16 and config.n_kv_heads == 6
    assert config.ffn_hidden_dim == 256  # int(8/3 * 96) = 256, already a multiple of 32
    assert ModelConfig(dim=100, n_heads=2).ffn_hidden_dim == 288  # int(266.67) = 266 -> next multiple of 32
    explicit = ModelConfig(dim=64, n_heads=4, head_dim=32)  # Qwen3-style: n_heads * head_dim != dim is allowed
    assert explicit.head_dim == 32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dim=100, n_heads=3), "dim=100 is not divisible by n_heads=3"),
        (dict(dim=64, n_heads=4, n_kv_heads=3), "n_heads=4 is not divisible by n_kv_heads=3"),
        (dict(dim=12, n_heads=4), "head_dim must be even, got 3"),
        (dict(dim=64, n_heads=4, head_dim=5), "head_dim must be even, got 5"),
        (dict(norm="batchnorm"), "norm='batchnorm' is not one of ('rmsnorm', 'layernorm')"),
        (dict(mlp="relu"), "mlp='relu' is not one of ('swiglu', 'gelu')"),
        (dict(positions="alibi"), "positions='alibi' is not one of ('rope', 'learned', 'sinusoidal')"),
        (dict(positions="sinusoidal", dim=15, n_heads=3), "sinusoidal positions need an even dim, got 15"),
        (dict(dropout=1.0), "dropout must be in [0, 1), got 1.0"),
        (dict(n_layers=0), "n_layers must be a positive integer, got 0"),
        (dict(n_heads=0), "n_heads must be a positive integer, got 0"),
        (dict(vocab_size=32.0), "vocab_size must be a positive integer, got 32.0"),
        # A hand-edited JSON file may hold strings or the wrong kind of value: say which field.
        (dict(dim="64"), "dim must be a positive integer, got '64'"),
        (dict(n_heads="4"), "n_heads must be a positive integer, got '4'"),
        (dict(dim=True, n_heads=1), "dim must be a positive integer, got True"),
        (dict(rope_theta="1e4"), "rope_theta must be a number, got '1e4'"),
        (dict(tie_embeddings="false"), "tie_embeddings must be true or false, got 'false'"),
    ],
)
def test_config_validation_messages(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as info:
        ModelConfig(**kwargs)
    assert message in str(info.value)


def test_odd_head_dim_is_fine_without_rope() -> None:
    assert ModelConfig(dim=12, n_heads=4, positions="learned").head_dim == 3


def test_from_dict_rejects_unknown_keys_and_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        ModelConfig.from_dict({"dim": 64, "n_head": 4, "layers": 2})
    message = str(info.value)
    assert "'layers'" in message and "'n_head'" in message
    for valid in ("'dim'", "'n_heads'", "'n_layers'", "'vocab_size'", "'rope_theta'"):
        assert valid in message


def test_config_json_round_trip(tmp_path) -> None:
    config = ModelConfig(
        vocab_size=300, dim=48, n_layers=3, n_heads=6, n_kv_heads=2, max_seq_len=64, rope_theta=5e5, qk_norm=True,
        tie_embeddings=False, extra={"source": "test"},
    )
    path = tmp_path / "config.json"
    config.save(path)
    assert json.loads(path.read_text())["n_kv_heads"] == 2  # a plain, human-readable JSON object
    loaded = ModelConfig.load(path)
    assert loaded == config
    assert loaded.extra == {"source": "test"} and loaded.rope_theta == 5e5


def test_corrupt_config_file_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"dim": 64, "n_heads": ')
    with pytest.raises(ValueError, match="is not valid JSON"):
        ModelConfig.load(path)
    path.write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match="JSON object"):
        ModelConfig.load(path)
    path.write_text('{"dim": "64"}')
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        ModelConfig.load(path)


# -- Transformer: outputs and errors ------------------------------------------------------------

SMALL = dict(vocab_size=24, dim=16, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16)


def numpy_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean of logsumexp(row) - row[target], in float64."""
    rows = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    t = targets.reshape(-1)
    m = rows.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(rows - m).sum(axis=1))
    return float(np.mean(lse - rows[np.arange(len(t)), t]))


def test_logits_shape_and_loss_equal_numpy_cross_entropy() -> None:
    model = Transformer(ModelConfig(**SMALL))
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 24, size=(3, 7)), rng.integers(0, 24, size=(3, 7))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 7, 24) and logits.dtype == np.float32
    assert loss.shape == ()
    assert loss.item() == pytest.approx(numpy_cross_entropy(to_numpy(logits), targets), rel=1e-6)
    assert model(idx)[1] is None
    last, _ = model(idx, last_only=True)
    np.testing.assert_allclose(to_numpy(last), to_numpy(logits)[:, -1:], atol=1e-6)
    # At init the logits are small, so the loss is close to log(vocab_size).
    assert abs(loss.item() - math.log(24)) < 0.1


def test_ignored_targets_do_not_count() -> None:
    model = Transformer(ModelConfig(**SMALL))
    rng = np.random.default_rng(1)
    idx, targets = rng.integers(0, 24, size=(2, 6)), rng.integers(0, 24, size=(2, 6))
    targets[:, :2] = -100
    logits, loss = model(idx, targets)
    kept = to_numpy(logits)[:, 2:]
    assert loss.item() == pytest.approx(numpy_cross_entropy(kept, targets[:, 2:]), rel=1e-6)


def test_token_id_out_of_range_names_the_id() -> None:
    model = Transformer(ModelConfig(**SMALL))
    with pytest.raises(IndexError, match="token id 24 is out of range for vocab_size=24"):
        model(np.array([[1, 24, 3]]))
    with pytest.raises(IndexError, match="token id -1 is out of range"):
        model(np.array([[1, -1, 3]]))


def test_token_ids_are_checked_once_a_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    # On a GPU each check is a comparison and a reduction (and, outside a training step, a read): the table
    # checks, in the model's words; the model does not check again. A quantized table likewise.
    embedding_op = importlib.import_module("tinyllm.autograd.ops.embedding")  # the module, not the function
    calls = []
    real = embedding_op.check_ids
    monkeypatch.setattr(embedding_op, "check_ids", lambda *args: calls.append(args[1]) or real(*args))
    model = Transformer(ModelConfig(**SMALL))
    model(np.array([[1, 2, 3]]), np.array([[2, 3, 4]]))
    assert calls == [24]
    with pytest.raises(IndexError, match="token id 30 is out of range for vocab_size=24"):
        tl.quant.quantize(model, "int8", group_size=None, include_embeddings=True)(np.array([[1, 30]]))


def test_sequence_longer_than_max_seq_len_names_the_lengths() -> None:
    model = Transformer(ModelConfig(**SMALL))
    with pytest.raises(ValueError, match="sequence of 17 tokens .* longer than max_seq_len=16"):
        model(np.zeros((1, 17), dtype=np.int64))
    cache = model.new_cache()
    model(np.zeros((1, 10), dtype=np.int64), cache=cache)
    with pytest.raises(ValueError, match=r"sequence of 18 tokens \(10 cached \+ 8 new\)"):
        model(np.zeros((1, 8), dtype=np.int64), cache=cache)


@pytest.mark.parametrize(
    "ids",
    [np.array([[1.0, 2.0]]), [[0.5, 1.0]], np.array([[True, False]]), "float-tensor"],
    ids=["float-array", "float-list", "bool-array", "float-tensor"],
)
def test_non_integer_ids_are_a_type_error(ids) -> None:
    model = Transformer(ModelConfig(**SMALL))
    if isinstance(ids, str):
        ids = tl.tensor([[1.0, 2.0]])
    with pytest.raises(TypeError, match="token ids must be integers"):
        model(ids)


def test_ids_must_be_batch_by_time() -> None:
    with pytest.raises(ValueError, match=r"shape \(batch, time\)"):
        Transformer(ModelConfig(**SMALL))(np.array([1, 2, 3]))


# -- every variant trains --------------------------------------------------------------------------

VARIANTS = list(
    itertools.product(
        ["rmsnorm", "layernorm"], ["swiglu", "gelu"], ["rope", "learned", "sinusoidal"], [True, False], [False, True],
        [False, True],
    )
)


def variant_id(norm: str, mlp: str, positions: str, tied: bool, qk_norm: bool, bias: bool) -> str:
    return f"{norm}-{mlp}-{positions}-{'tied' if tied else 'untied'}{'-qknorm' if qk_norm else ''}{'-bias' if bias else ''}"


@pytest.mark.parametrize("norm, mlp, positions, tied, qk_norm, bias", VARIANTS, ids=[variant_id(*v) for v in VARIANTS])
def test_every_variant_gives_finite_gradients_to_every_parameter(norm, mlp, positions, tied, qk_norm, bias) -> None:
    config = ModelConfig(
        vocab_size=13, dim=8, n_layers=2, n_heads=2, n_kv_heads=1, max_seq_len=8, norm=norm, mlp=mlp,
        positions=positions, tie_embeddings=tied, qk_norm=qk_norm, bias=bias, ffn_hidden_dim=12,
    )
    model = Transformer(config)
    names = dict(model.named_parameters())
    assert ("lm_head.weight" in names) != tied
    assert ("layers.0.attention.q_norm.weight" in names) == qk_norm
    assert ("layers.1.feed_forward.w_up.bias" in names) == bias
    assert ("pos_embeddings.weight" in names) == (positions == "learned")
    rng = np.random.default_rng(0)
    logits, loss = model(rng.integers(0, 13, size=(2, 6)), rng.integers(0, 13, size=(2, 6)))
    assert np.isfinite(loss.item())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        grad = to_numpy(p.grad)
        assert grad.shape == p.shape and np.isfinite(grad).all(), name
        assert np.abs(grad).max() > 0, f"{name} has an all-zero gradient"


# -- initialisation ------------------------------------------------------------------------------


def test_init_statistics() -> None:
    n_layers = 3
    model = Transformer(ModelConfig(vocab_size=256, dim=128, n_layers=n_layers, n_heads=4, tie_embeddings=False, bias=True))
    residual_std = 0.02 / math.sqrt(2 * n_layers)
    for name, p in model.named_parameters():
        values = to_numpy(p).astype(np.float64)
        if name.endswith(("norm.weight",)):
            np.testing.assert_array_equal(values, 1.0, err_msg=name)
        elif name.endswith(".bias"):
            np.testing.assert_array_equal(values, 0.0, err_msg=name)
        else:
            assert p.ndim == 2, name
            expected = residual_std if name.endswith(("attention.wo.weight", "feed_forward.w_down.weight")) else 0.02
            # >= 16k samples each: the sample std is within ~1% of the true one.
            assert values.std() == pytest.approx(expected, rel=0.05), name
            assert abs(values.mean()) < 0.1 * expected, name
    seen = {name.split(".")[-2] for name, _ in model.named_parameters()}
    assert {"wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down", "tok_embeddings", "lm_head"} <= seen


def test_same_seed_same_model() -> None:
    tl.set_backend(tl.get_backend().name, seed=5)
    a = Transformer(ModelConfig(**SMALL))
    tl.set_backend(tl.get_backend().name, seed=5)
    b = Transformer(ModelConfig(**SMALL))
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(to_numpy(p), to_numpy(q), err_msg=name)


# -- gradient check of a whole model ----------------------------------------------------------


def test_whole_model_gradcheck_float64() -> None:
    """Finite differences of the loss of a 2-layer GQA model with tied embeddings, for a few parameters."""
    config = ModelConfig(vocab_size=11, dim=8, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=8, ffn_hidden_dim=12)
    model = Transformer(config).to(np.float64)
    for p in model.parameters():  # larger weights than init, so every path contributes clearly to the loss
        p.data += 0.3 * tl.get_backend().rng.standard_normal(p.shape)
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 11, size=(2, 5)), rng.integers(0, 11, size=(2, 5))
    params = dict(model.named_parameters())
    checked = [
        params["tok_embeddings.weight"],  # used twice: input lookup and the tied output projection
        params["layers.0.attention.wq.weight"],
        params["layers.1.attention.wk.weight"],
        params["layers.1.feed_forward.w_down.weight"],
        params["norm.weight"],
    ]
    assert all(p.dtype == np.float64 for p in checked)

    def loss_of(*_: tl.Tensor) -> tl.Tensor:
        return model(idx, targets)[1]  # gradcheck perturbs the Parameters in place

    assert gradcheck(loss_of, checked)


# -- overfitting one batch -------------------------------------------------------------------------


def test_overfits_one_batch() -> None:
    config = ModelConfig(vocab_size=32, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16)
    model = Transformer(config)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 32, size=(4, 17))
    idx, targets = tokens[:, :-1], tokens[:, 1:]  # (4, 16) each
    optimizer = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    losses = []
    for _ in range(300):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] < 0.05:
            break
    assert losses[0] > 3.0  # about log(32) = 3.47 at init
    assert losses[-1] < 0.1, f"loss only fell from {losses[0]:.3f} to {losses[-1]:.3f} in {len(losses)} steps"
