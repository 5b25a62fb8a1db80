"""Tensor names: Hugging Face LLaMA/Qwen3 checkpoints -> tinyllm's ``Transformer``.

    >>> from tinyllm.models import ModelConfig
    >>> mapping = get_llama_key_mapping(ModelConfig(vocab_size=10, dim=8, n_layers=1, n_heads=2))
    >>> mapping["model.layers.0.self_attn.q_proj.weight"]
    'layers.0.attention.wq.weight'

Both sides store a Linear weight as (out_features, in_features) and use the
half-split RoPE pairing, so the tensors themselves need no change.
"""

from __future__ import annotations

from ..models.config import ModelConfig

_LAYER_NAMES = {
    "input_layernorm.weight": "attention_norm.weight",
    "self_attn.q_proj.weight": "attention.wq.weight",
    "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "self_attn.q_norm.weight": "attention.q_norm.weight",
    "self_attn.k_norm.weight": "attention.k_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "feed_forward.w_gate.weight",
    "mlp.up_proj.weight": "feed_forward.w_up.weight",
    "mlp.down_proj.weight": "feed_forward.w_down.weight",
}


def get_llama_key_mapping(config: ModelConfig) -> dict[str, str]:
    """Hugging Face tensor name -> tinyllm parameter name, for every tensor the model has."""
    mapping = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight"}
    if not config.tie_embeddings:
        mapping["lm_head.weight"] = "lm_head.weight"
    for i in range(config.n_layers):
        for hf_name, name in _LAYER_NAMES.items():
            if "_norm." in hf_name and "layernorm" not in hf_name and not config.qk_norm:
                continue
            mapping[f"model.layers.{i}.{hf_name}"] = f"layers.{i}.{name}"
    return mapping
