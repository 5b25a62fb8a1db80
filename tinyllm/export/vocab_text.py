"""Our tokenizer's vocabulary written as text, the way both tokenizer.json and GGUF store it.

tinyllm keeps each token as bytes. Hugging Face ``tokenizer.json`` and GGUF's
``tokenizer.ggml.tokens`` keep text instead, with GPT-2's byte-to-unicode map for ordinary
tokens (every byte becomes one printable character, b" the" -> "Ġthe") and special tokens as
their own text ("<|endoftext|>"). Merges are the two tokens' texts.

    >>> from tinyllm.tokenizer import BPETokenizer
    >>> tok = BPETokenizer.train("aaabdaaabac", vocab_size=260)
    >>> written_tokens(tok)[256:]
    ['aa', 'ab', 'aaab', '<|endoftext|>']
    >>> written_merges(tok)
    [('a', 'a'), ('a', 'b'), ('aa', 'ab')]

A trained tokenizer has no bos/eos ids of its own, but its ``<|endoftext|>`` is what ends a
text; ``end_of_text_ids`` gives it as bos and eos (as GPT-2's files do), so that llama.cpp does
not fall back to its own default ids (11 for a BPE vocabulary) and stop at an ordinary token.
"""

from __future__ import annotations

from typing import Any

from ..tokenizer.bytes_unicode import bytes_to_unicode_text
from .weights import ExportError

END_OF_TEXT = "<|endoftext|>"


def written_tokens(tokenizer: Any) -> list[str]:
    """Token id -> its text: byte-mapped for ordinary tokens, as is for special ones."""
    special = {i: text for text, i in tokenizer.special_tokens.items()}
    return [special[i] if i in special else bytes_to_unicode_text(tokenizer.id_to_token(i))
            for i in range(tokenizer.vocab_size)]


def written_merges(tokenizer: Any) -> list[tuple[str, str]]:
    """The merges in rank order, as pairs of byte-mapped token texts."""
    texts: dict[int, str] = {}  # each token's text made once (SmolLM2 has 48,900 merges over 49,152 tokens)

    def text(i: int) -> str:
        if i not in texts:
            texts[i] = bytes_to_unicode_text(tokenizer.id_to_token(i))
        return texts[i]

    return [(text(a), text(b)) for a, b in tokenizer.merges]


def check_unique(tokens: list[str]) -> None:
    """A vocabulary of text -> id needs each text once; a special token spelled like an ordinary one cannot be."""
    seen: dict[str, int] = {}
    for i, text in enumerate(tokens):
        if text in seen:
            raise ExportError(
                f"the tokenizer cannot be written as text: tokens {seen[text]} and {i} are both {text!r} (a special "
                f"token spelled exactly like an ordinary one). Rename the special token (retrain the tokenizer with "
                f"another special_tokens name)."
            )
        seen[text] = i


def end_of_text_ids(tokenizer: Any) -> dict[str, int | None]:
    """bos, eos and unk ids to write: the tokenizer's own, else ``<|endoftext|>`` as bos and eos."""
    fallback = tokenizer.special_tokens.get(END_OF_TEXT)
    return {
        "bos": tokenizer.bos_id if tokenizer.bos_id is not None else fallback,
        "eos": tokenizer.eos_id if tokenizer.eos_id is not None else fallback,
        "unk": tokenizer.unk_id,
    }
