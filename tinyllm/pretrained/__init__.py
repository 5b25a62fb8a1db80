"""Running real pretrained models: GGUF files and Hugging Face directories -> ``(model, tokenizer)``.

    >>> import tinyllm as tl
    >>> model, tokenizer = tl.load_pretrained("SmolLM2-135M-Instruct.Q4_1.gguf")   # doctest: +SKIP

Files, one concept each:

- load.py       ``load_pretrained``, ``load_pretrained_weights`` (streamed, every mismatch named), ``find_smollm2``
- gguf.py       GGUF metadata -> ``ModelConfig``; dequantizing; undoing llama.cpp's Q/K row permutation
- hf.py         Hugging Face directories: config.json, single or sharded safetensors
- hf_config.py  ``config.json`` -> ``ModelConfig`` (LlamaForCausalLM, Qwen3ForCausalLM)
- mapping.py    Hugging Face tensor names -> tinyllm names
- tensors.py    ``LazyTensor`` (a tensor read only when needed) and a NumPy safetensors reader
"""

from .load import WeightMismatchError, find_smollm2, load_pretrained, load_pretrained_weights
from .mapping import get_llama_key_mapping

__all__ = ["WeightMismatchError", "find_smollm2", "get_llama_key_mapping", "load_pretrained", "load_pretrained_weights"]
