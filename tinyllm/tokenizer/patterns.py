"""Pre-tokenization: cut text into chunks before BPE sees it.

A byte-level BPE tokenizer never merges across chunk boundaries. The chunks come from
a regular expression (the `regex` package, which knows Unicode classes like `\\p{L}`,
letters, and `\\p{N}`, numbers). For example, with the GPT-2 pattern:

    split_text("Hello world's 2024!!", (GPT2_SPLIT_PATTERN,))
    -> ['Hello', ' world', "'s", ' 2024', '!!']

so " world" and "'s" can never end up in one token.

Some models cut in several passes: each pattern splits the pieces left by the one
before, and text a pattern does not match stays as a piece of its own (this is how
llama.cpp and Hugging Face `Sequence` pre-tokenizers work). SmolLM2 first isolates
every digit, then applies the GPT-2 pattern to what is left:

    split_text(" 12 apples", SMOLLM_PRE_TOKENIZER)
    -> [' ', '1', '2', ' apples']

Sources: GPT-2 (openai/gpt-2 encoder.py), GPT-4 cl100k (tiktoken, as in minbpe),
Llama 3 and Qwen2 (their tokenizer.json), SmolLM (llama.cpp's llama-vocab.cpp, `smollm`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import regex

GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""GPT-2: contractions, optional space + letters, optional space + digits, optional space +
other symbols, then whitespace (a run of spaces gives its last space to the next word)."""

GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|"""
    r"""\s+(?!\S)|\s+"""
)
"""GPT-4 (tiktoken cl100k_base): case-insensitive contractions, numbers in groups of at most
three digits, newlines kept apart from other whitespace."""

LLAMA3_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""Llama 3 (`llama-bpe` in GGUF files): the GPT-4 pattern without possessive quantifiers."""

QWEN2_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
    r"""\s*[\r\n]+|\s+(?!\S)|\s+"""
)
"""Qwen2 / Qwen3 (`qwen2` in GGUF files): the Llama 3 pattern with single digits."""

DIGITS_PATTERN = r"\p{N}"
"""Every digit alone: a first pass used by SmolLM and StarCoder."""

SMOLLM_PRE_TOKENIZER = (DIGITS_PATTERN, GPT2_SPLIT_PATTERN)
"""SmolLM / StarCoder: split off each digit, then the GPT-2 pattern on the rest."""

# GGUF `tokenizer.ggml.pre` name -> (patterns, ignore_merges). `ignore_merges` means a chunk that
# is already a whole token in the vocabulary is emitted as that token without running BPE
# (llama.cpp does this for the Llama 3 family, as Hugging Face's `"ignore_merges": true` does).
GGUF_PRE_TOKENIZERS: dict[str, tuple[tuple[str, ...], bool]] = {
    "gpt2": ((GPT2_SPLIT_PATTERN,), False),
    "gpt-2": ((GPT2_SPLIT_PATTERN,), False),  # llama.cpp's own name for the GPT-2 pattern
    "dbrx": ((LLAMA3_SPLIT_PATTERN,), False),  # the Llama 3 pattern without ignore_merges (tinyllm.export)
    "llama-bpe": ((LLAMA3_SPLIT_PATTERN,), True),
    "llama3": ((LLAMA3_SPLIT_PATTERN,), True),
    "qwen2": ((QWEN2_SPLIT_PATTERN,), False),
    "smollm": (SMOLLM_PRE_TOKENIZER, False),
    "starcoder": (SMOLLM_PRE_TOKENIZER, False),
}


def compile_patterns(patterns: Sequence[str]) -> tuple[regex.Pattern, ...]:
    """Compile each pre-tokenizer pattern, with a clear error for a bad one."""
    compiled = []
    for p in patterns:
        try:
            compiled.append(regex.compile(p))
        except regex.error as e:
            raise ValueError(f"invalid pre-tokenizer pattern {p!r}: {e}") from e
    return tuple(compiled)


def _split_one(text: str, pattern: regex.Pattern) -> Iterator[str]:
    """Matches of `pattern` in `text`, with the unmatched text between them kept as pieces.

    _split_one("ab12", regex.compile(r"\\p{N}")) -> 'ab', '1', '2'
    """
    start = 0
    for m in pattern.finditer(text):
        if m.start() > start:
            yield text[start : m.start()]
        if m.end() > m.start():  # a pattern that can match "" must not produce empty chunks
            yield m.group()
        start = m.end()
    if start < len(text):
        yield text[start:]


def split_text(text: str, patterns: Sequence[regex.Pattern | str]) -> list[str]:
    """Cut `text` into chunks with one or more patterns applied in turn.

    The chunks always join back to `text` exactly:

    split_text("I'll go", (GPT2_SPLIT_PATTERN,)) -> ['I', "'ll", ' go']
    """
    pieces = [text] if text else []
    for p in patterns:
        pattern = regex.compile(p) if isinstance(p, str) else p
        out: list[str] = []
        for piece in pieces:
            # Fast path: `findall` is much quicker than a Python loop over `finditer`, and is
            # enough when the matches cover the whole piece (true of all the patterns above).
            chunks = pattern.findall(piece) if pattern.groups == 0 else None
            if chunks is None or sum(map(len, chunks)) != len(piece):
                chunks = list(_split_one(piece, pattern))
            out.extend(chunks)
        pieces = out
    return pieces
