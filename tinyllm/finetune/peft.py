"""LoRA adapters in Hugging Face PEFT's format: ``save_lora`` / ``load_lora``.

What ``PeftModel.save_pretrained`` writes, and what we write and read::

    adapter_config.json           {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
                                   "target_modules": ["q_proj", "v_proj", ...], "task_type": "CAUSAL_LM", ...}
    adapter_model.safetensors     one A and one B per adapted layer:
        base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight    (r, in_features)
        base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight    (out_features, r)

The names are the Hugging Face module names (tinyllm's ``layers.3.attention.wq`` is
``model.layers.3.self_attn.q_proj``, see ``tinyllm.pretrained.mapping``) under PEFT's prefix
``base_model.model.``. PEFT's ``nn.Linear`` stores its weight (out, in) as tinyllm does, so A and
B are saved as they are.

Row order of Q and K. GGUF files hold the rows of q_proj and k_proj permuted for llama.cpp's
RoPE (``tinyllm.pretrained.gguf``); tinyllm's loaders undo that permutation, so a tinyllm model
always has Hugging Face's row order, and the output rows of a LoRA B on wq or wk are already
in the order PEFT expects: an adapter trained on the GGUF SmolLM2 loads into transformers'
SmolLM2 as it is. (Were the rows kept in llama.cpp's order, B's rows would need
``interleaved_to_half_split`` before saving, and A would not: A's rows are the rank, not heads.)
``scripts/make_peft_fixtures.py --smollm2`` checks exactly this.

    >>> import tempfile, numpy as np, tinyllm as tl
    >>> from tinyllm.models import ModelConfig, Transformer
    >>> from tinyllm.finetune import apply_lora
    >>> model = apply_lora(Transformer(ModelConfig(vocab_size=32, dim=16, n_layers=1, n_heads=2)), r=2)
    >>> folder = tempfile.mkdtemp()
    >>> _ = save_lora(model, folder)
    >>> sorted(load_adapter_tensors(folder))[0]
    'base_model.model.model.layers.0.mlp.down_proj.lora_A.weight'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..backends import get_backend
from ..fileio import atomic_write
from ..nn.module import Module
from .lora import HF_NAMES, TINYLLM_NAMES, _is_linear, apply_lora, lora_layers

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."


def hf_module_name(name: str) -> str:
    """tinyllm module name -> Hugging Face module name.

    >>> hf_module_name("layers.3.attention.wq"), hf_module_name("layers.0.feed_forward.w_down"), hf_module_name("lm_head")
    ('model.layers.3.self_attn.q_proj', 'model.layers.0.mlp.down_proj', 'lm_head')
    """
    if name == "lm_head":
        return name
    parts = name.split(".")
    if len(parts) != 4 or parts[0] != "layers" or parts[3] not in HF_NAMES:
        raise ValueError(f"no Hugging Face name for the module {name!r} (expected layers.N.attention.wq and the like)")
    block = {"attention": "self_attn", "feed_forward": "mlp"}[parts[2]]
    return f"model.layers.{parts[1]}.{block}.{HF_NAMES[parts[3]]}"


def tinyllm_module_name(hf_name: str) -> str:
    """The inverse of ``hf_module_name``: "model.layers.3.self_attn.q_proj" -> "layers.3.attention.wq"."""
    if hf_name == "lm_head":
        return hf_name
    parts = hf_name.split(".")
    if len(parts) != 5 or parts[:2] != ["model", "layers"] or parts[3] not in ("self_attn", "mlp") \
            or parts[4] not in TINYLLM_NAMES:
        raise ValueError(f"{hf_name!r} is not a LLaMA projection (model.layers.N.self_attn.q_proj and the like)")
    block = {"self_attn": "attention", "mlp": "feed_forward"}[parts[3]]
    return f"layers.{parts[2]}.{block}.{TINYLLM_NAMES[parts[4]]}"


def save_lora(model: Module, directory: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Write the model's adapters as PEFT's ``adapter_config.json`` + ``adapter_model.safetensors``; returns the folder.

    Files are written atomically (a crash leaves the old file or the new one, never half of one).
    """
    import safetensors.numpy

    layers = lora_layers(model)
    config = getattr(model, "lora_config", None)
    if not layers or config is None:
        raise ValueError("save_lora: the model has no LoRA adapters (apply_lora or load_lora first)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    backend = get_backend()
    tensors = {}
    for name, layer in layers.items():
        key = PREFIX + hf_module_name(name)
        tensors[f"{key}.lora_A.weight"] = np.ascontiguousarray(backend.to_host(layer.lora_A.data))  # (r, in)
        tensors[f"{key}.lora_B.weight"] = np.ascontiguousarray(backend.to_host(layer.lora_B.data))  # (out, r)
    peft_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model_name_or_path,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": sorted(HF_NAMES[name] for name in config.target_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_rslora": False,
        "use_dora": False,
        "revision": None,
    }
    atomic_write(directory / WEIGHTS_FILE, safetensors.numpy.save(tensors, metadata={"format": "pt"}))
    atomic_write(directory / CONFIG_FILE, (json.dumps(peft_config, indent=2) + "\n").encode())
    return directory


def load_adapter_tensors(directory: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of ``adapter_model.safetensors``, by PEFT key (".default" adapter names removed)."""
    import safetensors.numpy

    path = Path(directory) / WEIGHTS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory} has no {WEIGHTS_FILE}: not a PEFT adapter folder")
    return {key.replace(".default.", "."): value for key, value in safetensors.numpy.load_file(path).items()}


def read_adapter_config(directory: str | os.PathLike) -> dict[str, Any]:
    """``adapter_config.json``, checked for what tinyllm supports (plain LoRA on the LLaMA projections)."""
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{directory} has no {CONFIG_FILE}: not a PEFT adapter folder")
    config = json.loads(path.read_text())
    if config.get("peft_type") != "LORA":
        raise ValueError(f"{path}: peft_type {config.get('peft_type')!r} is not supported, only LORA")
    unsupported = {
        "use_dora": bool(config.get("use_dora")),
        "fan_in_fan_out": bool(config.get("fan_in_fan_out")),
        "bias (other than 'none')": config.get("bias", "none") != "none",
        "modules_to_save": bool(config.get("modules_to_save")),
        "layers_to_transform": config.get("layers_to_transform") is not None,
        "rank_pattern / alpha_pattern": bool(config.get("rank_pattern")) or bool(config.get("alpha_pattern")),
        "target_modules as a regular expression": not isinstance(config.get("target_modules"), list),
        "lora_bias": bool(config.get("lora_bias")),
        "exclude_modules": bool(config.get("exclude_modules")),
        "layer_replication": bool(config.get("layer_replication")),
        "trainable_token_indices": bool(config.get("trainable_token_indices")),
        "target_parameters": bool(config.get("target_parameters")),
    }
    used = [name for name, present in unsupported.items() if present]
    if used:
        raise ValueError(f"{path} uses PEFT options tinyllm does not support: {', '.join(used)}")
    return config


def load_lora(model: Module, directory: str | os.PathLike) -> Module:
    """Add the adapters saved in ``directory`` (by ``save_lora`` or by PEFT) to ``model``; in place, returns it.

    Every tensor's name and shape is checked against the model before anything changes: an
    adapter made for another base model (other sizes, more layers) is an error that names each
    mismatch, and the model is left as it was.
    """
    if lora_layers(model):
        raise ValueError("this model already has LoRA adapters; load the adapter into a fresh base model")
    config = read_adapter_config(directory)
    tensors = load_adapter_tensors(directory)
    targets = [TINYLLM_NAMES.get(name, name) for name in config["target_modules"]]
    modules = dict(model.named_modules())
    problems, plan = [], {}
    for key, array in tensors.items():
        if not (key.startswith(PREFIX) and (key.endswith(".lora_A.weight") or key.endswith(".lora_B.weight"))):
            problems.append(f"{key}: not a LoRA A or B weight under {PREFIX!r}")
            continue
        hf_name, which = key[len(PREFIX):-len(".lora_A.weight")], key[-len("A.weight")]
        try:
            name = tinyllm_module_name(hf_name)
        except ValueError as error:
            problems.append(str(error))
            continue
        layer = modules.get(name)
        if layer is None or not _is_linear(layer):
            problems.append(f"{key}: the model has no linear layer {name}")
            continue
        r = int(config["r"])
        expected = (r, layer.in_features) if which == "A" else (layer.out_features, r)
        if tuple(array.shape) != expected:
            problems.append(f"{key}: adapter {tuple(array.shape)} vs {expected} for this model's {name} "
                            f"({layer.out_features} x {layer.in_features})")
            continue
        plan[(name, which)] = array
    layer_names = sorted({name for name, _ in plan})
    incomplete = [f"{name} has lora_{w} but not lora_{'B' if w == 'A' else 'A'}" for name, w in plan
                  if (name, "B" if w == "A" else "A") not in plan]
    problems += incomplete
    if problems:
        raise ValueError(f"cannot load the adapter in {directory} into this model (was it made for another base "
                         f"model?): " + "; ".join(problems))
    untargeted = [n for n in layer_names if n.rsplit(".", 1)[-1] not in targets]
    if untargeted:
        raise ValueError(f"{directory}: tensors for {untargeted[0]} but its target_modules are {config['target_modules']}")
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    if config.get("use_rslora"):
        alpha *= r**0.5  # rsLoRA scales by alpha / sqrt(r), which is (alpha sqrt(r)) / r
    apply_lora(model, r=r, alpha=alpha, dropout=float(config.get("lora_dropout") or 0.0), target_modules=targets)
    adapted = lora_layers(model)
    backend = get_backend()
    for (name, which), array in plan.items():
        param = adapted[name].lora_A if which == "A" else adapted[name].lora_B
        param.data[...] = backend.asarray(array, dtype=param.dtype)
    # A target layer the file has no tensors for keeps B = 0: no change (PEFT itself saves every one).
    return model
