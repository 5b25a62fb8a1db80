"""Exporting tinyllm models: Hugging Face directories for transformers, GGUF files for llama.cpp.

    >>> import tinyllm as tl
    >>> from tinyllm.export import save_gguf, save_pretrained
    >>> model, tokenizer = tl.load_pretrained("out/shakespeare/best")        # doctest: +SKIP
    >>> save_pretrained(model, tokenizer, "shakespeare-hf", dtype="float16")  # doctest: +SKIP
    >>> save_gguf(model, tokenizer, "shakespeare-q8_0.gguf", dtype="q8_0")    # doctest: +SKIP

Whatever was written loads back with ``tl.load_pretrained(path)``; ``examples/export.py`` is the
command line. Files, one concept each:

- weights.py          which models can be exported, and their weights by name (float or quantized)
- output.py           refusing an existing path; writing under a temporary name, then renaming
- hf.py               ``save_pretrained``: config.json, model.safetensors, generation_config.json
- safetensors_file.py writing safetensors one tensor at a time (float32, float16, bfloat16)
- hf_tokenizer.py     tokenizer.json and tokenizer_config.json
- gguf.py             ``save_gguf``: metadata under llama.cpp's keys, tensors in llama.cpp's order
- gguf_blocks.py      a weight as F32 / F16 / Q8_0 / Q4_0 bytes (held blocks kept as they are)
- gguf_tokenizer.py   tokenizer.ggml.* metadata, and the choice of llama.cpp pre-tokenizer
- vocab_text.py       tokens and merges as text (GPT-2's byte-to-unicode map)
"""

from .gguf import save_gguf
from .hf import save_pretrained
from .weights import ExportError

__all__ = ["ExportError", "save_gguf", "save_pretrained"]
