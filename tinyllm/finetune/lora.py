"""LoRA (Hu et al. 2021, "Low-Rank Adaptation of Large Language Models"): train a small update, freeze the rest.

A frozen linear layer y = x W^T (W: out x in) gets a trainable low-rank update:

    y = x W^T + (alpha / r) * dropout(x) A^T B^T          A: (r, in), B: (out, r), r << min(in, out)

The update W' = W + (alpha / r) B A has rank at most r. At the start B = 0, so the model is
exactly the pretrained one; A is random (PEFT's default: Kaiming-uniform with a = sqrt(5), i.e.
uniform in +-1/sqrt(in)), so the gradient of B, dL/dB = (alpha/r) dy^T (x A^T), is not zero and
training can move away from W. (With both zero nothing would ever change.)

Gradients, with h = dropout(x) A^T (N, r) and s = alpha / r:

    dB = s dy^T h            (out, r)
    dA = s (dy B)^T dropout(x)   (r, in)
    dx = dy W + s (dy B) A   (the base's dx plus the adapter's; through the dropout mask)

They are two ordinary linear ops, so the fused linear's backward does it all, and the frozen W
costs only its dx (``Function.needs_input_grad`` skips dW).

Parameters: r (in + out) per adapted layer instead of in * out. For SmolLM2-135M (dim 576,
ffn 1536, 9 query and 3 key/value heads of 64, 30 layers), r = 8 on all seven projections:
per layer q and o 8(576+576) = 9,216 each, k and v 8(576+192) = 6,144 each, gate, up and down
8(576+1536) = 16,896 each: 81,408, times 30 layers = 2,442,240 trainable parameters, 1.8% of
the 134.5M (tests/test_lora.py checks this count).

``alpha / r`` keeps the update's size steady when r changes (a larger r is not a larger learning
rate); PEFT's default alpha is 8, tinyllm's 16 (as the issue's and many recipes' r = 8, alpha = 16).

``merge_lora`` folds the update into the base weight, W <- W + s B A, and puts the plain layer
back: the merged model runs exactly as fast as the original, with the same outputs (up to float
rounding). A quantized base (``QuantizedLinear``) is dequantized to float32 first, so merging never
adds rounding error; ``tinyllm.quantize`` the merged model again if you want it small.

    >>> import numpy as np, tinyllm as tl
    >>> from tinyllm.models import ModelConfig, Transformer
    >>> model = Transformer(ModelConfig(vocab_size=32, dim=16, n_layers=1, n_heads=2))
    >>> _ = apply_lora(model, r=4, alpha=8, target_modules=("wq", "wv"))
    >>> [name for name, p in model.named_parameters() if p.requires_grad]
    ['layers.0.attention.wq.lora_A', 'layers.0.attention.wq.lora_B', 'layers.0.attention.wv.lora_A', \
'layers.0.attention.wv.lora_B']
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..autograd.ops.dropout import dropout as dropout_op
from ..backends import get_backend
from ..nn.fused.linear import linear
from ..nn.linear import Linear
from ..nn.module import Module, Parameter

# tinyllm module names and the Hugging Face / PEFT names of the same projections (either may be targeted)
HF_NAMES = {
    "wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "o_proj",
    "w_gate": "gate_proj", "w_up": "up_proj", "w_down": "down_proj", "lm_head": "lm_head",
}
TINYLLM_NAMES = {hf: ours for ours, hf in HF_NAMES.items()}
ATTENTION = ("wq", "wk", "wv", "wo")
MLP = ("w_gate", "w_up", "w_down")
DEFAULT_TARGETS = ATTENTION + MLP


@dataclass
class LoraConfig:
    """What ``apply_lora`` was called with (saved with an adapter). ``target_modules`` in tinyllm names."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


def _is_linear(module: Module) -> bool:
    from ..quant.linear import QuantizedLinear

    return isinstance(module, Linear | QuantizedLinear)


class LoRALinear(Module):
    """A frozen linear layer (``Linear`` or ``QuantizedLinear``) plus a trainable rank-r update (module docstring)."""

    def __init__(self, base: Module, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if not _is_linear(base):
            raise TypeError(f"LoRA wraps a Linear or QuantizedLinear, not {type(base).__name__}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.dropout = int(r), float(alpha), float(dropout)
        self.scaling = self.alpha / self.r
        self.base_layer = base.requires_grad_(False)
        dtype = base.weight.dtype
        bound = 1.0 / math.sqrt(self.in_features)  # kaiming_uniform_(a=sqrt(5)), as PEFT and nn.Linear
        a = get_backend().rng.random((self.r, self.in_features)) * (2 * bound) - bound  # uniform in [-bound, bound)
        self.lora_A = Parameter(get_backend().asarray(a, dtype=dtype))  # (r, in)
        self.lora_B = Parameter(get_backend().xp.zeros((self.out_features, self.r), dtype=dtype))  # (out, r)

    def forward(self, x: Any) -> Tensor:
        y = self.base_layer(x)  # (..., out), frozen
        h = dropout_op(x, self.dropout, self.training) if self.dropout > 0 else x
        h = linear(h, self.lora_A) * self.scaling  # (..., r): scaling the narrow h is the cheap place
        return y + linear(h, self.lora_B)  # (..., out)

    def delta_weight(self) -> Any:
        """The update as a dense matrix, s B A: (out, in)."""
        return (self.lora_B.data @ self.lora_A.data) * self.scaling

    def merged(self) -> Linear:
        """A plain ``Linear`` with weight W + s B A (a quantized W is dequantized to float32 first)."""
        from ..nn.init import no_init

        base = self.base_layer
        weight = base.weight.data if isinstance(base, Linear) else base.weight.dequantize(np.float32)
        with no_init():
            layer = Linear(self.in_features, self.out_features, bias=base.bias is not None)
        layer.weight = Parameter(weight + self.delta_weight().astype(weight.dtype))
        if base.bias is not None:
            layer.bias = Parameter(base.bias.data.copy())
        return layer

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, r={self.r}, alpha={self.alpha:g}"


def lora_layers(model: Module) -> dict[str, LoRALinear]:
    """Dotted module name -> ``LoRALinear`` for every adapted layer, in definition order."""
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


def _target_names(model: Module) -> list[str]:
    """The names of every linear layer of the model that LoRA can adapt (last component: "wq", "w_up", ...)."""
    names: list[str] = []
    for _, parent in model.named_modules():
        for name, child in parent._modules.items():
            if _is_linear(child) and name not in names:
                names.append(name)
    return names


def apply_lora(
    model: Module,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: Iterable[str] = DEFAULT_TARGETS,
) -> Module:
    """Freeze ``model`` and wrap its target linear layers as ``LoRALinear``; in place, returns the model.

    ``target_modules``: last names of linear layers, tinyllm's ("wq", "wk", "wv", "wo", "w_gate",
    "w_up", "w_down", "lm_head") or Hugging Face's ("q_proj", ..., "down_proj"). Every other parameter
    (embeddings, norms, the base weights) gets ``requires_grad=False``; the trainable ones are
    ``model.parameters()`` with ``requires_grad`` (or ``lora_parameters(model)``).
    """
    if isinstance(target_modules, str):
        target_modules = (target_modules,)
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f"LoRA rank r must be a positive integer, got {r!r} (typical: 4, 8, 16)")
    if not alpha > 0:
        raise ValueError(f"LoRA alpha must be positive, got {alpha!r} (the update is scaled by alpha / r)")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
    if lora_layers(model):
        raise ValueError("this model already has LoRA adapters; merge_lora(model) first, or load a fresh model")
    available = _target_names(model)
    wanted = [TINYLLM_NAMES.get(name, name) for name in target_modules]
    unknown = [given for given, name in zip(target_modules, wanted) if name not in available]
    if unknown or not wanted:
        valid = ", ".join(f"{n} ({HF_NAMES[n]})" if n in HF_NAMES and n != HF_NAMES[n] else n for n in available)
        raise ValueError(f"LoRA target module(s) {unknown or 'none given'} not found in the model; valid: {valid}")
    model.requires_grad_(False)
    replacements = [
        (parent, name, child)
        for _, parent in model.named_modules()
        for name, child in parent._modules.items()
        if name in wanted and _is_linear(child)
    ]
    from ..quant.convert import replace_module

    for parent, name, child in replacements:
        replace_module(parent, name, LoRALinear(child, r, alpha, dropout))
    object.__setattr__(model, "lora_config", LoraConfig(r, float(alpha), float(dropout), list(dict.fromkeys(wanted))))
    return model


def lora_parameters(model: Module) -> list[Parameter]:
    """The adapters' parameters (A and B of every ``LoRALinear``), in definition order."""
    return [p for layer in lora_layers(model).values() for p in (layer.lora_A, layer.lora_B)]


def merge_lora(model: Module) -> Module:
    """Fold every adapter into its base weight (W <- W + (alpha/r) B A) and remove the adapters; in place.

    The merged model has the same outputs as the adapted one and the plain ``Linear`` layers of
    the original (quantized bases come back as float32 ``Linear``). Its parameters are left frozen
    as LoRA left them; call ``model.requires_grad_(True)`` to train all of it.
    """
    from ..quant.convert import replace_module

    layers = lora_layers(model)
    if not layers:
        raise ValueError("merge_lora: the model has no LoRA adapters (apply_lora or load_lora first)")
    for _, parent in list(model.named_modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, LoRALinear):
                replace_module(parent, name, child.merged().requires_grad_(False))
    if "lora_config" in model.__dict__:
        del model.__dict__["lora_config"]
    return model


def count_trainable(model: Module) -> tuple[int, int]:
    """(trainable parameters, all parameters), counting quantized weights by their number of values.

    >>> from tinyllm.nn import Linear
    >>> count_trainable(Linear(4, 3).requires_grad_(False))
    (0, 12)
    """
    from ..quant.weight import QuantizedWeight

    trainable = sum(p.size for p in model.parameters() if p.requires_grad)
    total = sum(p.size for p in model.parameters())
    seen: set[int] = set()
    for _, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, QuantizedWeight) and id(weight) not in seen:
            seen.add(id(weight))
            total += weight.shape[0] * weight.shape[1]
    return trainable, total
