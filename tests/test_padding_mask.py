"""Padding masks and per-row positions: the fused attention's key_padding_mask and query_start (gradchecked,
float64, hypothesis), a padded batch through the whole model giving each row what it gets alone (logits and
gradients, 1e-5), and a KV cache whose rows hold different lengths."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import to_numpy
from hypothesis import given
from hypothesis import strategies as st

import tinyllm as tl
from tinyllm.autograd import gradcheck, no_grad
from tinyllm.models import ModelConfig, Transformer
from tinyllm.nn.fused import scaled_dot_product_attention
from tinyllm.nn.fused.attention import row_mask
from tinyllm.nn.row_positions import row_positions

SMALL = dict(vocab_size=24, dim=16, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16)


@st.composite
def padded_attention(draw: st.DrawFn) -> tuple:
    """q, k, v (float64) of B rows of different real lengths, left- or right-padded to T, and the mask."""
    B = draw(st.integers(1, 3))
    Hkv = draw(st.integers(1, 2))
    H = Hkv * draw(st.integers(1, 2))
    D = draw(st.sampled_from([2, 4]))
    lengths = draw(st.lists(st.integers(1, 4), min_size=B, max_size=B))
    left = draw(st.booleans())
    T = max(lengths)
    mask = np.zeros((B, T), dtype=bool)
    for b, n in enumerate(lengths):
        mask[b, slice(T - n, T) if left else slice(0, n)] = True
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    q, k, v = rng.standard_normal((B, H, T, D)), rng.standard_normal((B, Hkv, T, D)), rng.standard_normal((B, Hkv, T, D))
    return q, k, v, mask, left


@given(padded_attention())
def test_masked_attention_gradcheck(case: tuple) -> None:
    q, k, v, mask, _ = case
    tensors = [tl.tensor(a, requires_grad=True) for a in (q, k, v)]
    key_mask = tl.get_backend().asarray(mask)
    assert gradcheck(lambda *x: scaled_dot_product_attention(*x, key_padding_mask=key_mask), tensors)


@given(padded_attention())
def test_masked_attention_rows_equal_each_row_alone(case: tuple) -> None:
    """Each row's real queries get the output and the gradients they get with the row alone, unpadded;
    padded keys and values get zero gradient."""
    q, k, v, mask, _ = case
    upstream = np.random.default_rng(1).standard_normal(q.shape) * mask[:, None, :, None]  # nothing flows from padding
    batch = [tl.tensor(a, requires_grad=True) for a in (q, k, v)]
    out = scaled_dot_product_attention(*batch, key_padding_mask=tl.get_backend().asarray(mask))
    (out * tl.tensor(upstream)).sum().backward()
    assert np.isfinite(to_numpy(out)).all()
    for b in range(q.shape[0]):
        real = np.flatnonzero(mask[b])
        alone = [tl.tensor(a[b : b + 1][:, :, real], requires_grad=True) for a in (q, k, v)]
        out_alone = scaled_dot_product_attention(*alone)
        (out_alone * tl.tensor(upstream[b : b + 1][:, :, real])).sum().backward()
        np.testing.assert_allclose(to_numpy(out)[b][:, real], to_numpy(out_alone)[0], atol=1e-12, rtol=1e-10)
        for x_batch, x_alone in zip(batch, alone):
            grad = to_numpy(x_batch.grad)[b]
            np.testing.assert_allclose(grad[:, real], to_numpy(x_alone.grad)[0], atol=1e-12, rtol=1e-10)
            assert not grad[:, ~mask[b]].any(), "a padded position got a gradient"


@given(st.integers(1, 3), st.integers(1, 3), st.integers(0, 2**16))
def test_query_start_gradcheck_and_matches_each_row_alone(T: int, B: int, seed: int) -> None:
    """Rows whose queries start at different key indices (a cache with rows of different lengths)."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, 4, size=B)
    S = int(starts.max()) + T
    q, k, v = rng.standard_normal((B, 2, T, 4)), rng.standard_normal((B, 1, S, 4)), rng.standard_normal((B, 1, S, 4))
    tensors = [tl.tensor(a, requires_grad=True) for a in (q, k, v)]
    assert gradcheck(lambda *x: scaled_dot_product_attention(*x, query_start=starts), tensors)
    out = to_numpy(scaled_dot_product_attention(*(tl.tensor(a) for a in (q, k, v)), query_start=starts))
    for b in range(B):
        n = int(starts[b]) + T  # row b alone: its cache holds starts[b] keys, then the T new ones
        row = (q[b : b + 1], k[b : b + 1, :, :n], v[b : b + 1, :, :n])
        alone = scaled_dot_product_attention(*(tl.tensor(a) for a in row))
        np.testing.assert_allclose(out[b], to_numpy(alone)[0], atol=1e-12, rtol=1e-10)


@given(padded_attention(), st.integers(0, 2), st.integers(0, 2**16))
def test_a_prebuilt_attn_mask_equals_the_mask_built_from_padding_and_starts(case: tuple, extra_keys: int,
                                                                            seed: int) -> None:
    """What a model does: row_mask built once, handed to the op as attn_mask (is_causal=False)."""
    q, k, v, mask, _ = case
    B, T = mask.shape
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, extra_keys + 1, size=B)  # row b's first query at key starts[b]
    S = T + extra_keys
    pad = np.concatenate([np.ones((B, extra_keys), bool), mask], axis=1)  # (B, S): the extra (cached) keys are real
    k, v = (np.concatenate([rng.standard_normal((B, a.shape[1], extra_keys, a.shape[3])), a], axis=2) for a in (k, v))
    xp = tl.get_backend().xp
    inputs = dict(query_start=xp.asarray(starts), key_padding_mask=xp.asarray(pad))
    prebuilt = row_mask(B, T, S, True, inputs["query_start"], inputs["key_padding_mask"], np.float64)
    assert prebuilt.shape == (B, 1, 1, T, S)
    grads = []
    for kwargs in (inputs, dict(is_causal=False, attn_mask=prebuilt)):
        tensors = [tl.tensor(a, requires_grad=True) for a in (q, k, v)]
        out = scaled_dot_product_attention(*tensors, **kwargs)
        (out * out).sum().backward()
        grads.append([to_numpy(out)] + [to_numpy(t.grad) for t in tensors])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)
    tensors = [tl.tensor(a, requires_grad=True) for a in (q, k, v)]
    assert gradcheck(lambda *x: scaled_dot_product_attention(*x, is_causal=False, attn_mask=prebuilt), tensors)


def test_attn_mask_is_the_whole_mask_and_must_fit() -> None:
    q = tl.tensor(np.ones((2, 1, 3, 2)))
    mask = row_mask(2, 3, 3, True, None, None, np.float32)
    with pytest.raises(ValueError, match="pass it with is_causal=False"):
        scaled_dot_product_attention(q, q, q, attn_mask=mask)  # is_causal defaults to True
    with pytest.raises(ValueError, match="without key_padding_mask or query_start"):
        scaled_dot_product_attention(q, q, q, is_causal=False, attn_mask=mask, query_start=np.array([0, 0]))
    with pytest.raises(ValueError, match=r"attn_mask must be \(B, 1, 1, T, S\) = \(2, 1, 1, 3, 3\)"):
        scaled_dot_product_attention(q, q, q, is_causal=False, attn_mask=mask[:1])


def test_a_query_that_sees_no_key_gets_zeros_not_nan() -> None:
    q = tl.tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    k = tl.tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    out = scaled_dot_product_attention(q, k, k, key_padding_mask=tl.get_backend().asarray(np.array([[False, True]])))
    out.sum().backward()
    values = to_numpy(out)
    assert (values[0, 0, 0] == 0).all() and np.isfinite(values).all() and np.isfinite(to_numpy(q.grad)).all()


def test_bad_masks_are_clear_errors() -> None:
    q = tl.tensor(np.ones((2, 1, 3, 2)))
    with pytest.raises(ValueError, match="key_padding_mask must be a bool array"):
        scaled_dot_product_attention(q, q, q, key_padding_mask=tl.get_backend().asarray(np.ones((2, 3))))
    with pytest.raises(ValueError, match="key_padding_mask must be a bool array"):
        scaled_dot_product_attention(q, q, q, key_padding_mask=tl.get_backend().asarray(np.ones((1, 3), dtype=bool)))
    with pytest.raises(ValueError, match="at least one real token"):
        row_positions(2, 3, np.array([[1, 1, 1], [0, 0, 0]]))
    with pytest.raises(ValueError, match="pad on the right"):
        row_positions(1, 3, np.array([[0, 1, 1]]), cache_lengths=np.array([2]))


# -- the whole model ------------------------------------------------------------------------------------------


def padded_batch(rows: list[list[int]], left: bool) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (B, T) padded with 0s, and the attention mask (1 = real)."""
    T = max(len(r) for r in rows)
    ids, mask = np.zeros((len(rows), T), np.int64), np.zeros((len(rows), T), np.int64)
    for b, r in enumerate(rows):
        where = slice(T - len(r), T) if left else slice(0, len(r))
        ids[b, where], mask[b, where] = r, 1
    return ids, mask


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_padded_batch_gives_each_row_its_logits_and_gradients_alone(left: bool, positions: str) -> None:
    """Logits of real tokens (1e-5) and parameter gradients of the summed loss (1e-5) equal the rows run alone."""
    model = Transformer(ModelConfig(**SMALL, positions=positions))
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, 24, n).tolist() for n in (7, 3, 5)]
    targets_rows = [rng.integers(0, 24, len(r)).tolist() for r in rows]
    ids, mask = padded_batch(rows, left)
    targets, _ = padded_batch(targets_rows, left)
    targets[mask == 0] = -100  # the loss ignores the padding
    n_real = int(mask.sum())

    logits, loss = model(ids, targets, attention_mask=mask)
    (loss * n_real).backward()  # the summed loss over every real token
    batch_grads = {name: to_numpy(p.grad).copy() for name, p in model.named_parameters()}
    batch_logits = to_numpy(logits)

    alone_grads = {name: 0.0 for name in batch_grads}
    for b, (r, t) in enumerate(zip(rows, targets_rows)):
        model.zero_grad()
        logits_alone, loss_alone = model(np.array([r]), np.array([t]))
        (loss_alone * len(r)).backward()
        np.testing.assert_allclose(batch_logits[b][mask[b] == 1], to_numpy(logits_alone)[0], atol=1e-5, rtol=1e-5)
        for name, p in model.named_parameters():
            alone_grads[name] = alone_grads[name] + to_numpy(p.grad)
    for name, grad in batch_grads.items():
        np.testing.assert_allclose(grad, alone_grads[name], atol=1e-5, rtol=1e-5, err_msg=name)


def test_padding_tokens_never_change_a_real_tokens_logits() -> None:
    model = Transformer(ModelConfig(**SMALL))
    ids, mask = padded_batch([[3, 4, 5], [6, 7]], left=True)
    other = ids.copy()
    other[mask == 0] = 17  # a different padding token
    with no_grad():
        a, _ = model(ids, attention_mask=mask)
        b, _ = model(other, attention_mask=mask)
    np.testing.assert_array_equal(to_numpy(a)[mask == 1], to_numpy(b)[mask == 1])


def test_cache_rows_of_different_lengths_decode_as_each_row_alone() -> None:
    """A right-padded prefill into one cache, then decode steps with one token per row at its own position."""
    model = Transformer(ModelConfig(**SMALL)).eval()
    rows = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
    next_tokens = [[11, 12, 13], [14, 15, 16], [17, 18, 19]]
    with no_grad():
        cache = model.new_cache(batch_size=3)
        ids, mask = padded_batch(rows, left=False)
        first, _ = model(ids, cache=cache, last_only=True, attention_mask=mask)  # (3, 1, V) at each row's last token
        assert cache.lengths.tolist() == [5, 2, 3]
        steps = [to_numpy(first)[:, 0]]
        for step in range(3):
            logits, _ = model(np.array([[t[step]] for t in next_tokens]), cache=cache, last_only=True)
            steps.append(to_numpy(logits)[:, 0])
        assert cache.lengths.tolist() == [8, 5, 6]
        for b, r in enumerate(rows):
            alone, _ = model(np.array([r + next_tokens[b]]))
            expected = to_numpy(alone)[0, len(r) - 1 :]
            np.testing.assert_allclose(np.stack([s[b] for s in steps]), expected, atol=1e-5, rtol=1e-5)


def test_a_ragged_decode_step_builds_its_mask_and_rope_tables_once_for_all_layers(monkeypatch) -> None:
    """Every layer of one forward reads the same per-row mask and RoPE tables: the first layer builds them."""
    import tinyllm.nn.row_positions as rp

    model = Transformer(ModelConfig(**{**SMALL, "n_layers": 3})).eval()
    built = {"masks": 0, "tables": 0}
    real_mask, real_tables = rp.row_mask, type(model.rope).tables_at
    monkeypatch.setattr(rp, "row_mask", lambda *a: built.__setitem__("masks", built["masks"] + 1) or real_mask(*a))
    monkeypatch.setattr(type(model.rope), "tables_at",
                        lambda self, p: built.__setitem__("tables", built["tables"] + 1) or real_tables(self, p))
    cache = model.new_cache(batch_size=2)
    with no_grad():
        model(np.array([[1, 2, 3]]), cache=cache.rows(0, 1))
        model(np.array([[4]]), cache=cache.rows(1, 2))
        assert cache.lengths.tolist() == [3, 1] and built == {"masks": 0, "tables": 0}  # uniform so far
        model(np.array([[5], [6]]), cache=cache)  # rows of different lengths: one mask, one pair of tables
        assert built == {"masks": 1, "tables": 1}
        model(np.array([[7], [8]]), cache=cache)
        assert built == {"masks": 2, "tables": 2}
    r = row_positions(2, 1, cache_lengths=np.array([2, 0]))
    assert r.attention_mask(3, np.float32) is r.attention_mask(3, np.float32)
    assert r.attention_mask(4, np.float32).shape == (2, 1, 1, 1, 4)


def test_cache_writes_of_rows_at_different_lengths_land_at_each_rows_end() -> None:
    cache = tl.nn.KVCache(n_layers=2, batch_size=3, n_kv_heads=1, max_seq_len=6, head_dim=2)
    cache.lengths[:] = [2, 0, 4]
    for step in range(2):  # the write plan is made for the first layer, kept for the second, redone after advance
        for layer in range(2):
            new = np.full((3, 1, 1, 2), 10.0 * step + layer) + np.arange(3)[:, None, None, None]
            keys, values = cache.update(layer, new, -new)
            assert keys.shape == (3, 1, 5 + step, 2)
        cache.advance(1)
    for layer in range(2):
        keys = to_numpy(cache.keys[layer])[:, 0, :, 0]
        assert keys[0, 2:4].tolist() == [layer, 10 + layer]
        assert keys[1, 0:2].tolist() == [1 + layer, 11 + layer]
        assert keys[2, 4:6].tolist() == [2 + layer, 12 + layer]
        assert (to_numpy(cache.values[layer])[:, 0, :, 0] == -keys).all()
    assert cache.lengths.tolist() == [4, 2, 6]
    with pytest.raises(ValueError, match="KV cache is full: 7 positions needed, 6 allocated"):
        cache.update(0, np.zeros((3, 1, 1, 2)), np.zeros((3, 1, 1, 2)))


def test_cache_row_views_and_moves() -> None:
    model = Transformer(ModelConfig(**SMALL)).eval()
    cache = model.new_cache(batch_size=3)
    with no_grad():
        model(np.array([[1, 2, 3, 4]]), cache=cache.rows(2, 3))  # fill row 2 alone
        cache.move_row(2, 0)
        assert cache.lengths.tolist() == [4, 0, 0]
        a, _ = model(np.array([[5]]), cache=cache.rows(0, 1), last_only=True)
        b, _ = model(np.array([[1, 2, 3, 4, 5]]), last_only=True)
    np.testing.assert_allclose(to_numpy(a), to_numpy(b), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="different lengths"):
        _ = cache.length
    with pytest.raises(ValueError, match="3 rows but the token ids 1"):
        model(np.array([[1]]), cache=cache)
