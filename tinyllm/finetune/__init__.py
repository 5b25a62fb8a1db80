"""``tinyllm.finetune``: adapting a pretrained model to your own data.

    import tinyllm as tl
    from tinyllm.finetune import apply_lora, merge_lora, save_lora, load_lora
    model, tokenizer = tl.load_pretrained(path)
    apply_lora(model, r=8, alpha=16)            # freezes the model, adds rank-8 adapters
    ...train the parameters that require grad...
    save_lora(model, "out/adapter")             # Hugging Face PEFT's format

Files, one concept each:

- lora.py   ``apply_lora``, ``LoRALinear``, ``merge_lora``: the low-rank update, on float or quantized bases
- peft.py   ``save_lora`` / ``load_lora``: adapters in PEFT's files, so transformers + PEFT can load them
- data.py   chat SFT data (loss on assistant tokens only, right-padded batches) and plain text
- loop.py   ``finetune``: a small training loop over those batches (adapter-only checkpoints)
"""

from .data import ChatDataset, encode_chat, load_chat_jsonl, load_text
from .loop import finetune, load_adapter_checkpoint, make_optimizer, save_adapter_checkpoint
from .lora import (
    LoraConfig,
    LoRALinear,
    apply_lora,
    count_trainable,
    lora_layers,
    lora_parameters,
    merge_lora,
)
from .peft import load_lora, save_lora

__all__ = [
    "ChatDataset",
    "LoRALinear",
    "LoraConfig",
    "apply_lora",
    "count_trainable",
    "encode_chat",
    "finetune",
    "load_adapter_checkpoint",
    "load_chat_jsonl",
    "load_text",
    "lora_layers",
    "load_lora",
    "lora_parameters",
    "make_optimizer",
    "merge_lora",
    "save_adapter_checkpoint",
    "save_lora",
]
