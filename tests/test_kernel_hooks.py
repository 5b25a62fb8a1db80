"""The Functions' kernel hooks, checked on the CPU with a NumPy stand-in for tinyllm/backends/cuda_kernels.py.

On CuPy a Function hands its arrays to ``backend.kernels`` (fused CUDA kernels) instead of running
its array code. The CUDA itself can only run on a GPU (tests/test_cuda_kernels.py), but the wiring
can be checked anywhere: this stand-in has the same functions and signatures, each written from the
kernel's C expression in plain NumPy, and every Function must give the same outputs and gradients
through it as through its own array code. A hook that passes arguments in the wrong order, forgets
to save what backward needs, or returns the wrong shape fails here, on CI, before a GPU sees it.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinyllm as tl
from tinyllm.autograd.ops import cross_entropy
from tinyllm.nn.fused import apply_rope, rms_norm, scaled_dot_product_attention, swiglu
from tinyllm.optim import AdamW


class NumpyKernels:
    """cuda_kernels' interface, computed as each kernel's C expression says (float32 in, float32 out)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    HALF = ("rms_norm_forward", "rms_norm_backward", "swiglu_forward", "swiglu_backward",  # written with a type T
            "rope", "causal_softmax_", "softmax_backward", "row_dot",
            "accumulate_grads_many", "cast_many",  # the mixed-precision ones: 16-bit shadows
            "flash_attention_forward", "flash_attention_backward")

    def usable(self, *arrays, half=False) -> bool:
        dtype = arrays[0].dtype
        return (dtype == np.float32 or (half and dtype == np.float16)) and all(a.dtype == dtype for a in arrays)

    def is_16bit(self, *arrays) -> bool:
        name = arrays[0].dtype.name
        return name in ("float16", "bfloat16") and all(a.dtype.name == name for a in arrays)

    def __getattribute__(self, name: str):  # noqa: ANN204
        """Every kernel refuses a floating array that is not float32 (or float16, for those in HALF), as
        CuPy's typed kernels do ("Type is mismatched"): a Function must check with ``usable`` every array
        it hands over."""
        attr = object.__getattribute__(self, name)
        if name.startswith("_") or name in ("usable", "is_16bit", "flash_usable") or not callable(attr):
            return attr
        def typed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            stack = list(args[:1] if name == "clip_many" else args)  # clip_many's squared norm: float64 by design
            while stack:
                a = stack.pop()
                if isinstance(a, (list, tuple)):
                    stack.extend(a)
                elif (isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.dtype != np.float32
                      and not (a.dtype == np.float16 and name in NumpyKernels.HALF)):
                    raise TypeError(f"Type is mismatched: {name} got a {a.dtype} array (its kernel takes float32)")
            return attr(*args, **kwargs)

        return typed

    # The T-typed kernels: float arithmetic inside, outputs rounded to the inputs' dtype (T), sums float32.
    def rms_norm_forward(self, x, weight, eps):
        self.calls.append("rms_norm_forward")
        xf, wf = x.astype(np.float32), weight.astype(np.float32)
        r = np.float32(1.0) / np.sqrt((xf * xf).sum(axis=-1, keepdims=True) * np.float32(1 / x.shape[-1]) + np.float32(eps))
        xhat = xf * r
        return (xhat * wf).astype(x.dtype), xhat.astype(x.dtype), r

    def rms_norm_backward(self, gy, xhat, r, weight):
        self.calls.append("rms_norm_backward")
        g, xh, w = (a.astype(np.float32) for a in (gy, xhat, weight))
        gw = (g * xh).sum(axis=tuple(range(gy.ndim - 1)))
        dot = (g * w * xh).sum(axis=-1, keepdims=True)
        return (r * (g * w - xh * (dot * np.float32(1 / gy.shape[-1])))).astype(gy.dtype), gw.astype(gy.dtype)

    def swiglu_forward(self, a, b):
        self.calls.append("swiglu_forward")
        af, bf = a.astype(np.float32), b.astype(np.float32)
        s = np.float32(0.5) * (1 + np.tanh(np.float32(0.5) * af))
        return (af * s * bf).astype(a.dtype), s.astype(a.dtype)

    def swiglu_backward(self, gy, a, b, s):
        self.calls.append("swiglu_backward")
        g, af, bf, sf = (x.astype(np.float32) for x in (gy, a, b, s))
        silu = af * sf
        return (g * bf * (sf + silu * (1 - sf))).astype(gy.dtype), (g * silu).astype(gy.dtype)

    def rope(self, x, cos, sin, inverse=False):
        self.calls.append("rope_backward" if inverse else "rope")
        half = x.shape[-1] // 2
        c, sn = cos.astype(np.float32), (-sin if inverse else sin).astype(np.float32)
        x1, x2 = x[..., :half].astype(np.float32), x[..., half:].astype(np.float32)
        return np.concatenate([x1 * c - x2 * sn, x2 * c + x1 * sn], axis=-1).astype(x.dtype)

    def shifted_logsumexp_rows(self, x):
        self.calls.append("shifted_logsumexp_rows")
        m = x.max(axis=-1, keepdims=True)
        return m, np.log(np.exp(x - m).sum(axis=-1, keepdims=True))

    def cross_entropy_backward(self, x, lse, targets, scale):
        self.calls.append("cross_entropy_backward")
        assert lse.shape == targets.shape == scale.shape == x.shape[:1]  # (N,) each, indexed by row
        onehot = np.arange(x.shape[1]) == targets[:, None]
        return (np.exp(x - lse[:, None]) - onehot) * scale[:, None].astype(np.float32)

    def causal_softmax_(self, scores, T, causal, scale=1.0):
        self.calls.append("causal_softmax_")
        assert scores.flags.c_contiguous
        S = scores.shape[-1]
        rows = scores.reshape(-1, S)  # a view: in place, as the kernel
        for r, row in enumerate(rows):
            visible = (r % T) + S - T + 1 if causal else S
            x = row[:visible].astype(np.float32) * np.float32(scale)
            e = np.exp(x - x.max()).astype(row.dtype)  # stored in the scores' dtype, as the kernel's first pass
            row[:visible] = e.astype(np.float32) * (np.float32(1) / np.exp(x - x.max()).sum())
            row[visible:] = 0
        return scores

    def row_dot(self, a, b):
        self.calls.append("row_dot")
        return (a.astype(np.float32) * b.astype(np.float32)).sum(axis=-1, keepdims=True).astype(a.dtype)

    def softmax_backward(self, probs, gprobs, rowdot, scale=1.0):
        self.calls.append("softmax_backward")
        p, g, d = (a.astype(np.float32) for a in (probs, gprobs, rowdot))
        gprobs[...] = np.float32(scale) * (p * (g - d))
        return gprobs

    def scatter_add_rows(self, grad, ids, rows):
        self.calls.append("scatter_add_rows")
        assert grad.ndim == 2 and ids.ndim == 1 and rows.shape == (ids.size, grad.shape[1])
        np.add.at(grad, ids, rows)

    def adamw_update(self, p, g, m, v, decay, beta1, beta2, eps, step_size, sqrt_bias2):
        self.calls.append("adamw_update")
        f = np.float32
        v[...] = f(beta2) * v + (1 - f(beta2)) * g * g
        m[...] = f(beta1) * m + (1 - f(beta1)) * g
        p[...] = p * f(decay) - f(step_size) * m / (np.sqrt(v) / f(sqrt_bias2) + f(eps))

    def accumulate_grads_many(self, targets, sources, weight):
        self.calls.append("accumulate_grads_many")
        assert self.is_16bit(*sources) and all(t is None or t.dtype == np.float32 for t in targets)
        out = []
        for dst, src in zip(targets, sources):
            g = src.astype(np.float32) * np.float32(weight) if weight != 1.0 else src.astype(np.float32)
            if dst is None:
                out.append(g)
            else:
                dst += g
                out.append(dst)
        return out

    def unscale_grads_many(self, grads, inverse):
        self.calls.append("unscale_grads_many")
        found_inf = np.zeros(1, np.int32)
        for g in grads:
            found_inf |= ~np.isfinite(g).all()
            g *= np.float32(inverse)
        return found_inf

    def cast_many(self, targets, sources):
        self.calls.append("cast_many")
        assert self.is_16bit(*targets) and all(a.dtype == np.float32 for a in sources)
        for dst, src in zip(targets, sources):
            dst[...] = src

    def sum_of_squares_many(self, grads):
        self.calls.append("sum_of_squares_many")
        return sum((g.astype(np.float64) ** 2).sum() for g in grads)

    def clip_many(self, grads, squares, max_norm, eps):
        self.calls.append("clip_many")
        norm = float(np.sqrt(squares))  # as the kernel: a double sqrt and division, the factor rounded to float
        if norm > max_norm and np.isfinite(norm):
            for g in grads:
                g *= np.float32(max_norm / (norm + eps))

    FLASH_HEAD_DIMS = (4, 8)  # the stand-in takes small heads; the CUDA kernels are built for 32, 64, 128

    def flash_usable(self, q, k, v):
        return q.shape[-1] in self.FLASH_HEAD_DIMS and self.usable(q, k, v, half=True)

    def _flash_probs(self, q, k, scale, T, causal):
        s = (q.astype(np.float64) * scale) @ np.swapaxes(k.astype(np.float64), -1, -2)  # (B, Hkv, R, S)
        R, S = s.shape[-2:]
        if causal:
            i = (np.arange(R) % T)[:, None]
            s = np.where(np.arange(S)[None, :] <= i + S - T, s, -np.inf)
        lse = np.log(np.exp(s - s.max(-1, keepdims=True)).sum(-1)) + s.max(-1)
        return np.exp(s - lse[..., None]), lse

    def flash_attention_forward(self, q, k, v, scale, T, causal):
        self.calls.append("flash_attention_forward")
        probs, lse = self._flash_probs(q, k, scale, T, causal)
        return (probs @ v.astype(np.float64)).astype(q.dtype), lse.astype(np.float32)

    def flash_attention_backward(self, q, k, v, out, lse, gout, scale, T, causal):
        self.calls.append("flash_attention_backward")
        probs, _ = self._flash_probs(q, k, scale, T, causal)
        g = gout.astype(np.float64)
        delta = (g * out.astype(np.float64)).sum(-1, keepdims=True)
        ds = probs * (g @ np.swapaxes(v.astype(np.float64), -1, -2) - delta)
        gq = scale * ds @ k.astype(np.float64)
        gk = scale * np.swapaxes(ds, -1, -2) @ q.astype(np.float64)
        gv = np.swapaxes(probs, -1, -2) @ g
        return gq.astype(q.dtype), gk.astype(k.dtype), gv.astype(v.dtype)

    def adamw_update_many(self, updates, skip=None):
        self.calls.append("adamw_update_many")
        self.updated = [u[0] for u in updates]
        if skip is not None and bool(skip):  # the kernel reads the flag on the device and changes nothing
            return
        for u in updates:
            self.adamw_update(*u)
            self.calls.pop()  # counted once per call of adamw_update_many


@pytest.fixture
def kernels():
    backend = tl.get_backend()
    if backend.name != "numpy":
        pytest.skip("checks the hooks with a NumPy stand-in; on CuPy tests/test_cuda_kernels.py checks the real kernels")
    stand_in = NumpyKernels()
    backend.kernels = stand_in
    yield stand_in
    backend.kernels = None


def rel_error(a, b) -> float:
    a, b = (np.asarray(x.data if isinstance(x, tl.Tensor) else x, np.float64) for x in (a, b))
    assert a.shape == b.shape and np.isfinite(a).all()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def assert_hooks_agree(kernels, fn, arrays, expected_calls, tolerance: float = 1e-5) -> None:
    """fn's output and gradients with the stand-in kernels and without agree, in the inputs' dtype."""
    dtype = arrays[0].dtype
    results = []
    for use in (kernels, None):
        tl.get_backend().kernels = use
        leaves = [tl.tensor(a, requires_grad=True) for a in arrays]
        out = fn(*leaves)
        upstream = np.random.default_rng(9).standard_normal(out.shape).astype(dtype)
        (out * tl.tensor(upstream)).sum().backward()
        assert out.dtype == dtype and all(t.grad.dtype == dtype for t in leaves)
        results.append((out, [t.grad for t in leaves]))
    tl.get_backend().kernels = kernels
    (fused, fused_grads), (plain, plain_grads) = results
    assert rel_error(fused, plain) < tolerance
    for i, (a, b) in enumerate(zip(fused_grads, plain_grads)):
        assert rel_error(a, b) < tolerance, f"gradient of input {i}"
    assert set(expected_calls) <= set(kernels.calls), kernels.calls


def f32(rng, *shape, scale=1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def test_rms_norm_goes_through_the_kernels(kernels):
    rng = np.random.default_rng(0)
    assert_hooks_agree(kernels, lambda x, w: rms_norm(x, w, 1e-5), [f32(rng, 2, 5, 8), f32(rng, 8)],
                       ["rms_norm_forward", "rms_norm_backward"])


def test_swiglu_goes_through_the_kernels(kernels):
    rng = np.random.default_rng(1)
    assert_hooks_agree(kernels, swiglu, [f32(rng, 2, 5, 8, scale=3.0), f32(rng, 2, 5, 8)],
                       ["swiglu_forward", "swiglu_backward"])


def test_rope_goes_through_the_kernels(kernels):
    rng = np.random.default_rng(2)
    angles = np.outer(np.arange(5), [1.0, 0.3, 0.1]).astype(np.float32)
    cos, sin = np.cos(angles), np.sin(angles)
    assert_hooks_agree(kernels, lambda x: apply_rope(x, cos, sin), [f32(rng, 2, 3, 5, 6)], ["rope", "rope_backward"])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_goes_through_the_kernels(kernels, reduction):
    rng = np.random.default_rng(3)
    targets = rng.integers(0, 11, (3, 4))
    targets[0, 0] = -100
    t = tl.tensor(targets)
    assert_hooks_agree(kernels, lambda x: cross_entropy(x, t, reduction=reduction), [f32(rng, 3, 4, 11, scale=3.0)],
                       ["shifted_logsumexp_rows", "cross_entropy_backward"])


@pytest.mark.parametrize("shape", [(2, 4, 2, 3, 3), (1, 4, 1, 2, 5), (1, 2, 2, 1, 4)])  # (B, H, Hkv, T, S)
@pytest.mark.parametrize("causal", [True, False])
def test_attention_goes_through_the_kernels(kernels, shape, causal):
    B, H, Hkv, T, S = shape
    rng = np.random.default_rng(4)
    arrays = [f32(rng, B, H, T, 4), f32(rng, B, Hkv, S, 4), f32(rng, B, Hkv, S, 4)]
    assert_hooks_agree(kernels, lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=causal), arrays,
                       ["causal_softmax_", "row_dot", "softmax_backward"])


def test_adamw_goes_through_the_kernel(kernels):
    rng = np.random.default_rng(5)
    start = [f32(rng, 6, 4), f32(rng, 4)]
    grads = [[f32(rng, *p.shape) for p in start] for _ in range(3)]
    finals = []
    for use in (kernels, None):
        tl.get_backend().kernels = use
        params = [tl.nn.Parameter(tl.tensor(p.copy())) for p in start]
        optimizer = AdamW([{"params": [params[0]], "weight_decay": 0.1}, {"params": [params[1]], "weight_decay": 0.0}],
                          lr=1e-2, betas=(0.9, 0.95))
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.copy()
            optimizer.step()
        finals.append((params, optimizer.state))
    tl.get_backend().kernels = kernels
    for a, b in zip(finals[0][0], finals[1][0]):
        assert rel_error(a, b) < 1e-6
    for a, b in zip(finals[0][1], finals[1][1]):
        assert rel_error(a["exp_avg_sq"], b["exp_avg_sq"]) < 1e-6 and rel_error(a["exp_avg"], b["exp_avg"]) < 1e-6
    assert kernels.calls == ["adamw_update_many"] * 3  # one launch per step for both parameters


def test_adamw_hands_the_kernel_only_parameters_with_gradients_and_keeps_their_steps(kernels):
    rng = np.random.default_rng(7)
    start = [f32(rng, 5, 3), f32(rng, 3), f32(rng, 2, 2)]
    finals = []
    for use in (kernels, None):
        tl.get_backend().kernels = use
        params = [tl.nn.Parameter(tl.tensor(p.copy())) for p in start]
        optimizer = AdamW(params, lr=1e-2, weight_decay=0.1)
        for step in range(4):
            for i, p in enumerate(params):  # the last one gets a gradient every other step, the first always
                p.grad = f32(np.random.default_rng(step * 10 + i), *p.shape) if i != 2 or step % 2 else None
            optimizer.step()
            if use is kernels:
                assert [id(a) for a in kernels.updated] == [id(p.data) for p in params if p.grad is not None]
        finals.append(params)
        assert optimizer.param_steps == [4, 4, 2]
    tl.get_backend().kernels = kernels
    for a, b in zip(*finals):
        assert rel_error(a, b) < 1e-6


def test_float64_never_goes_to_the_float32_kernels(kernels):
    x = tl.tensor(np.ones((2, 4)), requires_grad=True)  # float64, as in the gradient checks
    rms_norm(x, tl.tensor(np.ones(4)), 1e-5).sum().backward()
    assert kernels.calls == []


def test_a_kernel_gets_only_float32_arrays_even_when_the_inputs_mix_precisions(kernels):
    """Mixed precision can leave a float32 gradient meeting a 16-bit weight (a bfloat16 run on a GPU failed so:
    RMSNorm's backward checked the gradient and xhat but handed the kernel a bfloat16 weight)."""
    rng = np.random.default_rng(3)
    x = tl.tensor(f32(rng, 2, 3, 8), requires_grad=True)
    weight = tl.tensor(f32(rng, 8).astype(np.float16), requires_grad=True)
    rms_norm(x, weight).sum().backward()
    assert x.grad is not None and weight.grad.dtype == np.float16
    a, b = tl.tensor(f32(rng, 2, 8), requires_grad=True), tl.tensor(f32(rng, 2, 8).astype(np.float16), requires_grad=True)
    swiglu(a, b).sum().backward()
    assert a.grad is not None and b.grad is not None


def test_the_embedding_gradient_goes_through_the_kernel(kernels):
    rng = np.random.default_rng(4)
    ids = np.array([[3, 1, 3], [0, 3, 1]])  # repeated ids: their rows add up
    assert_hooks_agree(kernels, lambda w: tl.nn.functional.embedding(ids, w), [f32(rng, 5, 4)], ["scatter_add_rows"])


def test_a_16_bit_embedding_gradient_is_summed_in_float32_by_the_kernel(kernels):
    """A float16 (or, on CuPy, bfloat16) table: the rows go to the kernel as float32, the sum is rounded once."""
    ids = np.zeros(4096, dtype=np.int64)  # one id 4096 times: a float16 running sum would stall at 2048 + ...
    weight = tl.tensor(np.zeros((3, 2), np.float16), requires_grad=True)
    tl.nn.functional.embedding(ids, weight).sum().backward()
    assert kernels.calls == ["scatter_add_rows"]
    assert weight.grad.dtype == np.float16 and tl.get_backend().to_host(weight.grad)[0].tolist() == [4096.0, 4096.0]


@pytest.mark.parametrize("op", ["rms_norm", "swiglu"])
def test_float16_rms_norm_and_swiglu_go_through_their_kernels(kernels, op):
    """The two kernels written with a type T take float16 too (float arithmetic inside, float16 out):
    within float16 rounding of the plain 16-bit code, which also computes in float32 where it matters."""
    rng = np.random.default_rng(8)
    if op == "rms_norm":
        arrays, fn = [f32(rng, 2, 5, 16), 1 + f32(rng, 16, scale=0.1)], rms_norm
    else:
        arrays, fn = [f32(rng, 2, 5, 16, scale=3.0), f32(rng, 2, 5, 16)], swiglu
    calls = [f"{op}_forward", f"{op}_backward"]
    assert_hooks_agree(kernels, fn, [a.astype(np.float16) for a in arrays], calls, tolerance=4e-3)  # 11 bits kept
    assert kernels.calls == calls


@pytest.mark.parametrize("causal", [True, False])
def test_float16_rope_and_attention_go_through_their_kernels(kernels, causal):
    """RoPE and the attention softmax take float16 too (float arithmetic inside, float16 out)."""
    rng = np.random.default_rng(9)
    angles = np.outer(np.arange(5), [1.0, 0.3, 0.1])
    cos, sin = np.cos(angles).astype(np.float16), np.sin(angles).astype(np.float16)  # a 16-bit shadow's tables
    assert_hooks_agree(kernels, lambda x: apply_rope(x, cos, sin), [f32(rng, 2, 3, 5, 6).astype(np.float16)],
                       ["rope", "rope_backward"], tolerance=4e-3)
    arrays = [f32(rng, 2, 4, 5, 8), f32(rng, 2, 2, 7, 8), f32(rng, 2, 2, 7, 8)]  # GQA, a cache: S > T
    assert_hooks_agree(kernels, lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=causal),
                       [a.astype(np.float16) for a in arrays], ["causal_softmax_", "row_dot", "softmax_backward"],
                       tolerance=4e-3)


def test_rope_hands_the_kernel_float32_tables_with_float16_activations(kernels):
    """A float16 x with the float32 tables of a float32 model: no cast of the tables, the kernel rotates in float."""
    rng = np.random.default_rng(10)
    angles = np.outer(np.arange(4), [1.0, 0.2]).astype(np.float32)
    x = tl.tensor(f32(rng, 1, 2, 4, 4).astype(np.float16), requires_grad=True)
    y = apply_rope(x, np.cos(angles), np.sin(angles))
    y.sum().backward()
    assert kernels.calls == ["rope", "rope_backward"] and y.dtype == x.grad.dtype == np.float16


def mixed_precision_steps(use, overflow_at: int | None = None):
    """Three float16 training steps of a small model (two micro-batches each) with the given kernels: the
    masters' weights after each step and whether it was taken. ``overflow_at``: that step's gradient gets an inf."""
    from tinyllm.amp import GradScaler, MixedPrecision
    from tinyllm.models import ModelConfig, Transformer
    from tinyllm.optim import AdamW

    tl.get_backend().kernels = use
    tl.get_backend().seed(0)
    model = Transformer(ModelConfig(vocab_size=32, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, max_seq_len=8))
    amp = MixedPrecision(model, "float16", GradScaler(init_scale=2.0**10))
    optimizer = AdamW(model.parameters(), lr=1e-2)
    ids = np.random.default_rng(3).integers(0, 32, (4, 9))
    history = []
    for step in range(3):
        for micro in (ids[:2], ids[2:]):
            _, loss = amp.forward_model()(micro[:, :-1], micro[:, 1:])
            (loss * amp.loss_scale).backward()
            amp.accumulate_grads(0.5)
        if step == overflow_at:
            model.parameters()[0].grad[0, 0] = np.inf
        taken = amp.unscale_grads()
        if taken:
            optimizer.step()
            amp.step_done()
        optimizer.zero_grad()
        history.append((taken, amp.loss_scale, [p.data.copy() for p in model.parameters()],
                        [s.data.copy() for _, s in amp.pairs]))
    return history


class WithoutMixedPrecisionKernels(NumpyKernels):
    """The stand-in, but MixedPrecision finds no 16-bit shadow to fuse for: its per-parameter loops run, while
    every other Function still goes through the same kernels (so the activations round alike on both sides)."""

    def is_16bit(self, *arrays) -> bool:
        return False


@pytest.mark.parametrize("overflow_at", [None, 1])
def test_mixed_precision_bookkeeping_goes_through_the_kernels_with_the_same_bits(kernels, overflow_at):
    """accumulate_grads, unscale_grads and step_done: one multi-tensor call each per step, and the masters,
    the shadow and the skipping decisions bit for bit those of the per-parameter array code."""
    fused = mixed_precision_steps(kernels, overflow_at)
    calls = list(kernels.calls)
    loops = WithoutMixedPrecisionKernels()
    plain = mixed_precision_steps(loops, overflow_at)
    tl.get_backend().kernels = kernels
    assert "accumulate_grads_many" not in loops.calls and "rms_norm_forward" in loops.calls
    for (taken_a, scale_a, masters_a, shadow_a), (taken_b, scale_b, masters_b, shadow_b) in zip(fused, plain):
        assert (taken_a, scale_a) == (taken_b, scale_b)
        assert all(np.array_equal(a, b) for a, b in zip(masters_a, masters_b))
        assert all(np.array_equal(a, b) for a, b in zip(shadow_a, shadow_b))
        assert all(a.dtype == np.float16 for a in shadow_a)
    assert [taken for taken, *_ in fused] == [step != overflow_at for step in range(3)]
    taken_steps = sum(step != overflow_at for step in range(3))
    assert calls.count("accumulate_grads_many") == 6 and calls.count("unscale_grads_many") == 3
    assert calls.count("cast_many") == taken_steps and calls.count("adamw_update_many") == taken_steps


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])  # clipped, and not
def test_gradient_clipping_goes_through_the_kernels(kernels, max_norm):
    from tinyllm.optim import clip_grad_norm_

    rng = np.random.default_rng(11)
    start = [f32(rng, 6, 4), f32(rng, 4), f32(rng, 3, 2, 5)]
    results = []
    for use in (kernels, None):
        tl.get_backend().kernels = use
        params = [tl.nn.Parameter(tl.tensor(np.zeros_like(g))) for g in start]
        for p, g in zip(params, start):
            p.grad = g.copy()
        results.append((clip_grad_norm_(params, max_norm), [p.grad for p in params]))
    tl.get_backend().kernels = kernels
    (norm_a, grads_a), (norm_b, grads_b) = results
    assert norm_a == norm_b == np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in start))
    assert all(np.array_equal(a, b) for a, b in zip(grads_a, grads_b))
    assert kernels.calls == ["sum_of_squares_many", "clip_many"]  # the kernel decides whether to scale


@pytest.mark.parametrize("shape", [(2, 4, 2, 3, 3), (1, 4, 1, 2, 5), (1, 2, 2, 1, 4)])  # (B, H, Hkv, T, S)
@pytest.mark.parametrize("causal", [True, False])
def test_attention_goes_through_the_tiled_kernels_when_asked(kernels, shape, causal):
    """backend.flash_attention (TINYLLM_FLASH_ATTENTION=1 on CuPy): the forward saves lse instead of the
    probabilities and the backward recomputes them; the same outputs and gradients as the array code."""
    B, H, Hkv, T, S = shape
    rng = np.random.default_rng(4)
    arrays = [f32(rng, B, H, T, 4), f32(rng, B, Hkv, S, 4), f32(rng, B, Hkv, S, 4)]
    backend = tl.get_backend()
    backend.flash_attention = True
    try:
        assert_hooks_agree(kernels, lambda q, k, v: scaled_dot_product_attention(q, k, v, is_causal=causal), arrays,
                           ["flash_attention_forward", "flash_attention_backward"])
        assert "causal_softmax_" not in kernels.calls
        kernels.calls.clear()
        x = [tl.tensor(a, requires_grad=True) for a in arrays]  # dropout, or a mask: the matrix path, as before
        scaled_dot_product_attention(*x, is_causal=causal, dropout_p=0.5).sum().backward()
        assert "flash_attention_forward" not in kernels.calls
    finally:
        backend.flash_attention = False
