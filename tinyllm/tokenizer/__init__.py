"""Byte-level BPE tokenizers: train your own, or load a real model's (GGUF, tokenizer.json).

    from tinyllm.tokenizer import BPETokenizer, load_tokenizer
    tok = BPETokenizer.train(open("tinyshakespeare.txt").read(), vocab_size=1024)
    ids = tok.encode("To be, or not to be")
    tok.decode(ids) -> "To be, or not to be"
    smol = load_tokenizer("SmolLM2-135M-Instruct.Q4_1.gguf")

Files: patterns.py (pre-tokenizer regexes), train.py (learning merges), bpe.py (the
tokenizer: encode, decode, save, load), stream.py (encoding a text of any size in bounded
memory: ``encode_iterable``), checks.py (clear errors for wrong input types), file_format.py
(its JSON file), bytes_unicode.py (GPT-2's byte-to-unicode map), pretrained.py (GGUF and
tokenizer.json), chat.py (chat templates).
"""

from tinyllm.tokenizer.bpe import BPETokenizer
from tinyllm.tokenizer.patterns import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN
from tinyllm.tokenizer.pretrained import load_tokenizer

__all__ = ["BPETokenizer", "GPT2_SPLIT_PATTERN", "GPT4_SPLIT_PATTERN", "load_tokenizer"]
