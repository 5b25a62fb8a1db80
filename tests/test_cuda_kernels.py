"""Each fused CUDA kernel (tinyllm/backends/cuda_kernels.py) agrees with the NumPy-style code of its Function.

Runs where CuPy runs: on a GPU, or on the simulated CuPy, which compiles the kernels' C for the CPU
(tests/test_simulated_gpu.py runs this file so in CI); elsewhere these tests skip (the one skip the suite
allows: CI's own process has no CuPy).
Every test runs the same Function twice on the same random float32 inputs on CuPy, once with the
backend's kernels and once with ``kernels = None`` (the array code, the readable reference), and
compares forward outputs and gradients by relative error ||a - b|| / ||b||: float32 rounding in a
different summation order lands far below 1e-5, a wrong formula far above it. Fresh random inputs
(never zeros) and realistic shapes: (B, T, D) = (4, 64, 384), attention (2, 6, 64, 64).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cupy_skip_reason

import tinyllm as tl
from tinyllm.autograd.ops import cross_entropy
from tinyllm.nn.fused import apply_rope, rms_norm, scaled_dot_product_attention, swiglu
from tinyllm.optim import AdamW

REASON = cupy_skip_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"needs CuPy and a GPU: {REASON}")
TOLERANCE = 1e-5


@pytest.fixture
def cupy_backend():
    backend = tl.set_backend("cupy", seed=0)
    assert backend.kernels is not None, "TINYLLM_KERNELS=0 is set: nothing to compare"
    yield backend
    tl.set_backend("numpy", seed=0)


def rel_error(a, b) -> float:
    a, b = (np.asarray(tl.get_backend().to_host(x.data if isinstance(x, tl.Tensor) else x), np.float64) for x in (a, b))
    assert a.shape == b.shape and np.isfinite(a).all()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def both_ways(backend, fn, arrays: list[np.ndarray], seed: int = 0):
    """Run fn on fresh leaf tensors with the kernels and without; return (outputs, grads) of each."""
    results = []
    kernels = backend.kernels
    upstream = None
    for use in (kernels, None):
        backend.kernels = use
        try:
            leaves = [tl.tensor(a, requires_grad=True) for a in arrays]
            out = fn(*leaves)
            if upstream is None:
                upstream = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(out.dtype)
            (out * tl.tensor(upstream)).sum().backward()
            results.append((out, [t.grad for t in leaves]))
        finally:
            backend.kernels = kernels
    return results


def assert_agree(results, tolerance: float = TOLERANCE) -> None:
    (fused_out, fused_grads), (plain_out, plain_grads) = results
    assert rel_error(fused_out, plain_out) < tolerance
    for i, (a, b) in enumerate(zip(fused_grads, plain_grads)):
        assert rel_error(a, b) < tolerance, f"gradient of input {i}"


def f32(rng, *shape, scale=1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# The 16-bit kernels compute in float, as the 16-bit array code does where it matters; the two differ by a few
# roundings of the 16-bit type. The tolerance is eight of its unit roundoffs: float16 keeps 11 significant bits
# (2^-11 ~ 4.9e-4), bfloat16 8 (2^-8 ~ 3.9e-3). A wrong formula is off by far more.
HALF_TOLERANCE = {"float16": 4e-3, "bfloat16": 3e-2}


def half_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        return np.dtype(pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes").bfloat16)
    return np.dtype(name)


def test_rms_norm_kernel_agrees(cupy_backend):
    rng = np.random.default_rng(0)
    assert_agree(both_ways(cupy_backend, lambda x, w: rms_norm(x, w, eps=1e-5), [f32(rng, 4, 64, 384), f32(rng, 384)]))


def test_swiglu_kernel_agrees_including_large_gates(cupy_backend):
    rng = np.random.default_rng(1)
    a = f32(rng, 4, 64, 1024, scale=3.0)
    a[0, 0, :4] = [-1000.0, -100.0, 100.0, 1000.0]  # sigmoid through tanh: no overflow either way
    assert_agree(both_ways(cupy_backend, swiglu, [a, f32(rng, 4, 64, 1024)]))


def test_rope_kernel_agrees(cupy_backend):
    rng = np.random.default_rng(2)
    angles = np.outer(np.arange(64), 10000.0 ** (-np.arange(0, 64, 2) / 64))  # (T, D/2)
    cos, sin = (tl.tensor(f(angles).astype(np.float32)).data for f in (np.cos, np.sin))
    assert_agree(both_ways(cupy_backend, lambda x: apply_rope(x, cos, sin), [f32(rng, 2, 6, 64, 64)]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_kernel_agrees_with_ignored_rows(cupy_backend, reduction):
    rng = np.random.default_rng(3)
    targets = rng.integers(0, 1024, (4, 64))
    targets[0, :5] = -100  # ignored rows: no loss, no gradient
    t = tl.tensor(targets)
    results = both_ways(cupy_backend, lambda x: cross_entropy(x, t, reduction=reduction), [f32(rng, 4, 64, 1024, scale=4.0)])
    assert_agree(results)
    assert float(np.abs(tl.get_backend().to_host(results[0][1][0])[0, :5]).max()) == 0.0


@pytest.mark.parametrize("shape", [(2, 6, 6, 64, 64), (2, 6, 2, 16, 48), (1, 4, 2, 1, 9)])  # (B, H, Hkv, T, S)
@pytest.mark.parametrize("causal", [True, False])
def test_attention_softmax_kernel_agrees(cupy_backend, shape, causal):
    B, H, Hkv, T, S = shape  # MHA at the gpu preset's size; GQA with a cache (S > T); one decode step
    rng = np.random.default_rng(4)
    inputs = [f32(rng, B, H, T, 64), f32(rng, B, Hkv, S, 64), f32(rng, B, Hkv, S, 64)]
    assert_agree(both_ways(cupy_backend, lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=causal),
                           inputs))


def test_attention_kernel_gives_masked_keys_exactly_zero_probability(cupy_backend):
    from tinyllm.backends import cuda_kernels

    xp = cupy_backend.xp
    scores = xp.asarray(np.random.default_rng(5).standard_normal((3, 4, 6)).astype(np.float32))  # (rows, T, S)
    probs = tl.get_backend().to_host(cuda_kernels.causal_softmax_(scores, 4, causal=True))
    for i in range(4):  # query i sees keys 0 .. i + S - T = i + 2
        assert (probs[:, i, i + 3 :] == 0).all()
        np.testing.assert_allclose(probs[:, i].sum(axis=-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", ["rms_norm", "swiglu"])
def test_16bit_rms_norm_and_swiglu_kernels_agree(cupy_backend, op, dtype_name):
    """The kernels written with a type T, on float16 and bfloat16 (float arithmetic inside; bfloat16 travels as
    its bits): the plain 16-bit code's values within the type's rounding, and the same dtype out."""
    dtype = half_dtype(dtype_name)
    rng = np.random.default_rng(13)
    if op == "rms_norm":
        arrays, fn = [f32(rng, 4, 64, 384), 1 + f32(rng, 384, scale=0.1)], rms_norm
    else:
        arrays, fn = [f32(rng, 4, 64, 1024, scale=3.0), f32(rng, 4, 64, 1024)], swiglu
    results = both_ways(cupy_backend, fn, [a.astype(dtype) for a in arrays])
    for out, grads in results:
        assert out.dtype == dtype and all(g.dtype == dtype for g in grads)
    assert_agree(results, tolerance=HALF_TOLERANCE[dtype_name])


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
@pytest.mark.parametrize("causal", [True, False])
def test_16bit_rope_and_attention_softmax_kernels_agree(cupy_backend, causal, dtype_name):
    """RoPE (16-bit x, 16-bit tables: a 16-bit shadow's) and the attention softmax (its RawKernel's 16-bit
    entry points, and the T-typed backward) against the plain 16-bit code."""
    dtype = half_dtype(dtype_name)
    rng = np.random.default_rng(14)
    angles = np.outer(np.arange(64), 10000.0 ** (-np.arange(0, 64, 2) / 64))  # (T, D/2)
    cos, sin = (tl.tensor(f(angles).astype(dtype)).data for f in (np.cos, np.sin))
    results = both_ways(cupy_backend, lambda x: apply_rope(x, cos, sin), [f32(rng, 2, 6, 64, 64).astype(dtype)])
    assert all(out.dtype == dtype and grads[0].dtype == dtype for out, grads in results)
    assert_agree(results, tolerance=HALF_TOLERANCE[dtype_name])
    inputs = [f32(rng, 2, 6, 64, 64), f32(rng, 2, 2, 80, 64), f32(rng, 2, 2, 80, 64)]  # GQA with a cache
    results = both_ways(cupy_backend, lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=causal),
                        [a.astype(dtype) for a in inputs])
    assert all(out.dtype == dtype for out, _ in results)
    assert_agree(results, tolerance=HALF_TOLERANCE[dtype_name])


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_the_16bit_softmax_kernel_masks_and_normalises(cupy_backend, dtype_name):
    from tinyllm.backends import cuda_kernels

    dtype = half_dtype(dtype_name)
    x = np.random.default_rng(15).standard_normal((3, 4, 6)).astype(dtype)
    probs = cupy_backend.to_host(cuda_kernels.causal_softmax_(cupy_backend.xp.asarray(x), 4, causal=True))
    assert probs.dtype == dtype
    rtol = 4 * {"float16": 2.0**-11, "bfloat16": 2.0**-8}[dtype_name]  # the rounding of the exp, the sum, the quotient
    for i in range(4):  # query i sees keys 0 .. i + 2
        assert (probs[:, i, i + 3 :] == 0).all()
        seen = x[:, i, : i + 3].astype(np.float64)
        e = np.exp(seen - seen.max(axis=-1, keepdims=True))
        np.testing.assert_allclose(probs[:, i, : i + 3].astype(np.float64), e / e.sum(axis=-1, keepdims=True),
                                   rtol=rtol, atol=1e-4)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_the_mixed_precision_kernels_give_the_array_codes_bits(cupy_backend, dtype_name):
    """accumulate_grads_many, unscale_grads_many and cast_many against the same arithmetic on the host, bit
    for bit, over sizes around the launch's block and a strided view (which takes the array code)."""
    from tinyllm.amp import resolve_dtype
    from tinyllm.backends import cuda_kernels

    if dtype_name == "bfloat16":
        pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
    low = resolve_dtype(dtype_name)
    xp, rng = cupy_backend.xp, np.random.default_rng(16)
    shapes = [(1,), (255,), (256,), (257,), (17, 33), (64, 1000)]
    sources = [(f32(rng, *shape) * 100).astype(low) for shape in shapes]
    targets = [None if i % 2 else f32(rng, *shape) for i, shape in enumerate(shapes)]
    expected = [(src.astype(np.float32) * np.float32(0.25)) + (0 if dst is None else dst)
                for dst, src in zip(targets, sources)]
    got = cuda_kernels.accumulate_grads_many([None if t is None else xp.asarray(t) for t in targets],
                                             [xp.asarray(src) for src in sources], 0.25)
    assert all(np.array_equal(cupy_backend.to_host(g), e) for g, e in zip(got, expected))

    grads = [xp.asarray(e) for e in expected] + [xp.asarray(f32(rng, 8, 6))[:, ::2]]  # and a strided view
    host = [cupy_backend.to_host(g) for g in grads]
    assert int(cuda_kernels.unscale_grads_many(grads, 2.0**-10)[0]) == 0
    assert all(np.array_equal(cupy_backend.to_host(g), h * np.float32(2.0**-10)) for g, h in zip(grads, host))
    grads[4][5, 7] = np.inf  # (17, 33)
    assert int(cuda_kernels.unscale_grads_many(grads, 1.0)[0]) == 1

    masters = [f32(rng, *shape) * 1000 for shape in shapes]
    masters[0][0] = 1e6  # beyond float16's range: inf, as astype gives
    shadows = [xp.empty(shape, dtype=low) for shape in shapes]
    cuda_kernels.cast_many(shadows, [xp.asarray(m) for m in masters])
    for shadow, master in zip(shadows, masters):
        assert np.array_equal(cupy_backend.to_host(shadow).view(np.uint16), master.astype(low).view(np.uint16))


def test_the_gradient_norm_kernel_sums_in_float64_with_the_same_bits_every_run(cupy_backend):
    """clip_grad_norm_'s two kernels: the squared norm of many gradients (the gpu preset's count, sizes around a
    block, a strided view) against the host's float64 sum, bit-identical over runs; then the scaling, exact."""
    import math

    from tinyllm.backends import cuda_kernels

    xp, rng = cupy_backend.xp, np.random.default_rng(17)
    host = [f32(rng, *shape) for shape in [(1,), (255,), (257,), (384, 1024), (1024, 384), (384,)] * 9]
    grads = [xp.asarray(g) for g in host] + [xp.asarray(f32(rng, 8, 6))[:, ::2]]
    host.append(cupy_backend.to_host(grads[-1]))
    expected = sum((g.astype(np.float64) ** 2).sum() for g in host)
    runs = [float(cuda_kernels.sum_of_squares_many(grads)) for _ in range(3)]
    assert abs(runs[0] - expected) <= 1e-12 * expected and runs[1] == runs[0] == runs[2]
    squares = cuda_kernels.sum_of_squares_many(grads)
    cuda_kernels.clip_many(grads, squares, 1.0, 1e-6)  # the norm is far over 1: every gradient is scaled
    factor = np.float32(1.0 / (math.sqrt(runs[0]) + 1e-6))
    assert all(np.array_equal(cupy_backend.to_host(g), h * factor) for g, h in zip(grads, host))


@pytest.mark.parametrize("max_norm", [0.5, 1e9, 0.0])  # clipped; under the limit; max_norm 0 clips everything
def test_clipping_decided_on_the_device_gives_the_hosts_bits(cupy_backend, max_norm):
    """clip_many (clipping's factor from the squared norm, on the device, nothing read back) against the
    factor the array code computes on the host from the norm read back: the same bits; an inf or NaN norm
    scales nothing."""
    import math

    from tinyllm.backends import cuda_kernels

    xp, rng = cupy_backend.xp, np.random.default_rng(19)
    host = [f32(rng, *shape, scale=0.01) for shape in [(3,), (300,), (64, 48)]]
    on_device = [xp.asarray(g) for g in host]
    squares = cuda_kernels.sum_of_squares_many(on_device)
    cuda_kernels.clip_many(on_device, squares, max_norm, 1e-6)
    total = math.sqrt(float(squares))
    by_host = [h * np.float32(max_norm / (total + 1e-6)) if total > max_norm else h for h in host]
    assert all(np.array_equal(cupy_backend.to_host(a), b) for a, b in zip(on_device, by_host))
    assert any(not np.array_equal(cupy_backend.to_host(a), h) for a, h in zip(on_device, host)) == (max_norm < 1)
    for bad in (np.inf, np.nan):
        grads = [xp.asarray(g) for g in host]
        cuda_kernels.clip_many(grads, xp.asarray(np.float64(bad)), 0.5, 1e-6)
        assert all(np.array_equal(cupy_backend.to_host(g), h) for g, h in zip(grads, host))


def test_the_adamw_kernel_changes_nothing_when_told_to_skip(cupy_backend):
    """The multi-tensor AdamW kernel reads queue_train_step's verdict on the device: set, nothing moves."""
    from tinyllm.backends import cuda_kernels

    xp, rng = cupy_backend.xp, np.random.default_rng(20)
    arrays = [[xp.asarray(f32(rng, 5, 7)) for _ in range(4)] for _ in range(3)]  # (p, g, m, v) of 3 parameters
    before = [[cupy_backend.to_host(a).copy() for a in four] for four in arrays]
    updates = [(*four, 0.99, 0.9, 0.999, 1e-8, 1e-3, 0.03) for four in arrays]
    cuda_kernels.adamw_update_many(updates, skip=xp.asarray(True))
    assert all(np.array_equal(cupy_backend.to_host(a), b) for four, bs in zip(arrays, before) for a, b in zip(four, bs))
    cuda_kernels.adamw_update_many(updates, skip=xp.asarray(False))
    assert not np.array_equal(cupy_backend.to_host(arrays[0][0]), before[0][0])  # p moved


@pytest.mark.parametrize("case", [
    (2, 6, 6, 64, 64, 64, True, np.float32),   # the gpu preset's heads (MHA, head_dim 64), causal
    (1, 4, 2, 40, 56, 32, True, np.float32),   # GQA with a cache (S > T): rows see i + S - T keys
    (1, 2, 1, 70, 70, 128, False, np.float32),  # not causal; rows spanning two heads in a block of 64
    (1, 4, 2, 32, 32, 64, True, "float16"),
    (1, 4, 2, 32, 32, 64, True, "bfloat16"),
])
def test_the_tiled_attention_kernels_agree_with_the_matrix_code(cupy_backend, case):
    """TINYLLM_FLASH_ATTENTION's kernels (forward, and the two backward ones) against the array code."""
    B, H, Hkv, T, S, D, causal, dtype = case
    if isinstance(dtype, str):
        dtype = half_dtype(dtype)
    rng = np.random.default_rng(18)
    inputs = [f32(rng, B, H, T, D).astype(dtype), f32(rng, B, Hkv, S, D).astype(dtype),
              f32(rng, B, Hkv, S, D).astype(dtype)]
    cupy_backend.flash_attention = True
    try:
        results = both_ways(cupy_backend, lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=causal),
                            inputs)
    finally:
        cupy_backend.flash_attention = False
    assert all(out.dtype == dtype for out, _ in results)
    assert_agree(results, tolerance=TOLERANCE if dtype == np.float32 else HALF_TOLERANCE[dtype.name])


def test_embedding_gradient_kernel_agrees(cupy_backend):
    rng = np.random.default_rng(11)
    ids = rng.integers(0, 40, (4, 64))  # 256 ids among 40 rows: many repeats
    assert_agree(both_ways(cupy_backend, lambda w: tl.nn.functional.embedding(ids, w), [f32(rng, 50, 24)]))


def test_the_embedding_gradient_is_the_same_every_run(cupy_backend):
    """The gpu preset's shape (16,384 ids, dim 384), with a few ids repeated thousands of times: the
    kernel's sums are np.add.at's within float32 rounding and the same bits on every run (atomic adds
    are not: a resumed run drifted from an uninterrupted one by an ulp in the embedding)."""
    from tinyllm.backends import cuda_kernels

    rng = np.random.default_rng(12)
    ids = np.concatenate([rng.integers(0, 1024, 16384 - 3000), np.full(3000, 7)])
    rng.shuffle(ids)
    rows = f32(rng, ids.size, 384)
    xp = cupy_backend.xp
    runs = []
    for _ in range(3):
        grad = xp.zeros((1024, 384), xp.float32)
        cuda_kernels.scatter_add_rows(grad, xp.asarray(ids), xp.asarray(rows))
        runs.append(cupy_backend.to_host(grad))
    expected = np.zeros((1024, 384))
    np.add.at(expected, ids, rows.astype(np.float64))
    assert rel_error(runs[0], expected) < 1e-6
    assert all(np.array_equal(run, runs[0]) for run in runs[1:])


def adamw_with_and_without_kernels(cupy_backend, start, groups, grads_at):
    """Run AdamW from the arrays ``start`` with the kernels, then without: ((params, state), (params, state)).

    ``groups(params)`` gives the optimizer's parameter groups; ``grads_at(step, i, shape)`` the gradient of
    parameter i at a step (a host array, or None: the parameter skips that step)."""
    finals = []
    kernels = cupy_backend.kernels
    for use in (kernels, None):
        cupy_backend.kernels = use
        try:
            params = [tl.nn.Parameter(tl.tensor(p.copy())) for p in start]
            optimizer = AdamW(groups(params), lr=1e-2, eps=1e-8)
            for step in range(4):
                for i, p in enumerate(params):
                    g = grads_at(step, i, p.shape)
                    p.grad = None if g is None else tl.get_backend().asarray(g)
                optimizer.step()
            finals.append((params, optimizer.state))
        finally:
            cupy_backend.kernels = kernels
    return finals


def test_adamw_kernel_agrees_over_several_steps(cupy_backend):
    rng = np.random.default_rng(6)
    start = [f32(rng, 384, 1024), f32(rng, 384)]
    grads = [[f32(rng, *p.shape) for p in start] for _ in range(4)]
    (fused, fused_state), (plain, plain_state) = adamw_with_and_without_kernels(
        cupy_backend, start,
        lambda params: [{"params": [params[0]], "weight_decay": 0.1, "betas": (0.9, 0.95)},
                        {"params": [params[1]], "weight_decay": 0.0, "betas": (0.9, 0.95)}],
        lambda step, i, shape: grads[step][i])
    for a, b in zip(fused, plain):
        assert rel_error(a, b) < TOLERANCE
    for a, b in zip(fused_state, plain_state):
        for key in ("exp_avg", "exp_avg_sq"):
            assert rel_error(a[key], b[key]) < TOLERANCE, key


def test_the_multi_tensor_adamw_kernel_agrees_for_many_sizes_groups_and_steps(cupy_backend):
    rng = np.random.default_rng(8)
    shapes = [(1,), (3,), (255,), (256,), (257,), (17, 33), (2, 3, 5), (64, 1000)]
    (fused, _), (plain, _) = adamw_with_and_without_kernels(
        cupy_backend, [f32(rng, *shape) for shape in shapes],
        lambda params: [{"params": params[::2], "weight_decay": 0.1, "betas": (0.8, 0.99)},
                        {"params": params[1::2], "weight_decay": 0.0}],
        # some parameters skip steps: their t (bias correction) differs
        lambda step, i, shape: f32(np.random.default_rng(step * 100 + i), *shape) if (i + step) % 3 else None)
    for a, b in zip(fused, plain):
        assert rel_error(a, b) < TOLERANCE


def test_a_training_step_with_and_without_kernels_agrees(cupy_backend):
    """The loss and every gradient of a whole forward and backward, then the optimizer step from the same
    gradients, with the kernels and without.

    The step is taken from one run's gradients on both sides: AdamW's first update is lr * g / (|g| + eps),
    about lr * sign(g), so a gradient element at float32's rounding floor (|g| ~ 1e-9 where the largest is
    ~1e-2) moves its weight by an amount that rounding decides. Comparing the weights after steps from the
    two runs' own gradients measured that amplification, not the kernels (seen with the kernels run on a CPU:
    gradients within 6e-7, weights 2e-5 apart through elements with |g| ~ 3e-9)."""
    from tinyllm.models import ModelConfig, Transformer
    from tinyllm.train import TrainConfig, configure_optimizer

    config = ModelConfig(vocab_size=256, dim=128, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)
    ids = tl.tensor(np.random.default_rng(7).integers(0, 256, (4, 65)))
    x, y = ids[:, :-1], ids[:, 1:]
    runs = []
    kernels = cupy_backend.kernels
    for use in (kernels, None):
        cupy_backend.kernels = use
        try:
            tl.get_backend().seed(0)
            model = Transformer(config)
            _, loss = model(x.data, y.data)
            loss.backward()
            runs.append((model, loss.item(), [p.grad.copy() for p in model.parameters()]))
        finally:
            cupy_backend.kernels = kernels
    (model_a, loss_a, grads_a), (model_b, loss_b, grads_b) = runs
    assert abs(loss_a - loss_b) <= 1e-5 * abs(loss_b)
    for a, b in zip(grads_a, grads_b):
        assert rel_error(a, b) < TOLERANCE
    for model, use in ((model_a, kernels), (model_b, None)):
        cupy_backend.kernels = use
        try:
            for p, g in zip(model.parameters(), grads_a):  # the same gradients on both sides
                p.grad = g.copy()
            configure_optimizer(model, TrainConfig()).step()
        finally:
            cupy_backend.kernels = kernels
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert rel_error(a, b) < TOLERANCE


def test_bfloat16_reaches_the_kernels_as_its_bits(cupy_backend):
    """The bfloat16 kernels take a uint16 view of the same memory: this CuPy must make one (else bfloat16
    activations run the array code, and the bfloat16 agreement tests above compare the array code with itself)."""
    pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
    from tinyllm.backends import cuda_kernels

    assert cuda_kernels.bfloat16_views_work()
