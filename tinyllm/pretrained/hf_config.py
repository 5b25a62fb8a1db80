"""Hugging Face ``config.json`` (LlamaForCausalLM, Qwen3ForCausalLM) -> ``ModelConfig``."""

from __future__ import annotations

from typing import Any

from ..models.config import ModelConfig

SUPPORTED_ARCHITECTURES = {"LlamaForCausalLM": False, "Qwen3ForCausalLM": True}  # name -> uses QK-norm


def rope_theta_of(hf: dict[str, Any]) -> float:
    """RoPE base: recent transformers write ``rope_parameters.rope_theta``, older ones ``rope_theta``."""
    params = hf.get("rope_parameters") or {}
    if isinstance(params, dict) and "rope_theta" in params:
        rope_type = params.get("rope_type", "default")
        if rope_type not in ("default", None):
            raise NotImplementedError(f"RoPE scaling type {rope_type!r} is not supported (only 'default')")
        return float(params["rope_theta"])
    scaling = hf.get("rope_scaling")
    if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) not in ("default", None):
        raise NotImplementedError(f"RoPE scaling {scaling} is not supported (only the default RoPE)")
    return float(hf.get("rope_theta", 10000.0))


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """Translate a Hugging Face config dict; unsupported architectures raise with what was found."""
    architectures = hf.get("architectures") or [hf.get("model_type", "unknown")]
    architecture = architectures[0]
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise NotImplementedError(
            f"Unsupported architecture {architecture!r}; tinyllm loads {sorted(SUPPORTED_ARCHITECTURES)}"
        )
    if hf.get("hidden_act", "silu") != "silu":
        raise NotImplementedError(f"Unsupported hidden_act {hf['hidden_act']!r} (LLaMA-style models use 'silu')")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise NotImplementedError("Projection biases (attention_bias / mlp_bias) are not supported for LLaMA-style models")
    n_heads = int(hf["num_attention_heads"])
    return ModelConfig(
        vocab_size=int(hf["vocab_size"]),
        dim=int(hf["hidden_size"]),
        n_layers=int(hf["num_hidden_layers"]),
        n_heads=n_heads,
        n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
        head_dim=int(hf.get("head_dim") or hf["hidden_size"] // n_heads),
        ffn_hidden_dim=int(hf["intermediate_size"]),
        max_seq_len=int(hf.get("max_position_embeddings", 2048)),
        rope_theta=rope_theta_of(hf),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qk_norm=SUPPORTED_ARCHITECTURES[architecture],
        extra={"architecture": architecture},
    )
