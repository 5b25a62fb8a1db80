r"""Our byte-level BPE tokenizer as GGUF ``tokenizer.ggml.*`` metadata that llama.cpp tokenizes with.

    tokenizer.ggml.model        "gpt2"             byte-level BPE (GPT-2's byte-to-unicode map)
    tokenizer.ggml.pre          "dbrx", "smollm"   which of llama.cpp's built-in pre-tokenizers to use
    tokenizer.ggml.tokens       ["\u0000", ..., "Ġthe", ..., "<|endoftext|>"]   (vocab_text.py)
    tokenizer.ggml.token_type   1 (normal) per token, 3 (control) for special tokens
    tokenizer.ggml.merges       ["Ġ t", "h e", ...]   rank order, the two tokens' texts joined by a space
    tokenizer.ggml.bos_token_id / eos_token_id / unknown_token_id
    tokenizer.ggml.add_bos_token = false   (tinyllm's encode adds nothing)
    tokenizer.chat_template     when the tokenizer has one

**The pre-tokenizer.** llama.cpp cannot read a regular expression from the file: it knows a fixed
list of pre-tokenizers by name, each one or more regexes (``llama-vocab.cpp``). So the export
looks our patterns up in ``PRE_TOKENIZER_NAMES`` and refuses a tokenizer whose patterns are in
none (its text would be split differently by llama.cpp, giving other ids).

tinyllm's trainer splits with the GPT-4 (cl100k) pattern. llama.cpp has no "gpt-4" entry, but its
Llama 3 regex splits every text the same way. The two differ only in spelling:

    GPT-4    '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|...
    Llama 3  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|...

- the same seven contractions, case-insensitive;
- the possessive ``?+`` and ``++`` never give anything back, but backtracking could not help
  there anyway (what follows, ``\p{L}`` or ``[\r\n]*``, cannot start with what was taken);
- ``\s*[\r\n]`` and ``\s*[\r\n]+``: a greedy ``\s*`` backs off to the last newline of the
  whitespace run, so the ``+`` never finds a second one.

The names llama.cpp gives that regex are ``llama-bpe`` (also ``llama3``), which also turns on
``ignore_merges`` (a chunk that is a whole token is emitted without BPE), and ``dbrx``, which
does not. A trained BPE can hold a token its own merges do not produce from the token's bytes,
so ``ignore_merges`` could change ids: the export writes ``dbrx`` (the same regex, BPE as we do
it). tests/test_export.py checks the ids on varied text, and scripts/check_export.py checks them
against llama.cpp itself.
"""

from __future__ import annotations

from typing import Any

from ..tokenizer.patterns import (
    GPT2_SPLIT_PATTERN,
    GPT4_SPLIT_PATTERN,
    LLAMA3_SPLIT_PATTERN,
    QWEN2_SPLIT_PATTERN,
    SMOLLM_PRE_TOKENIZER,
)
from .vocab_text import end_of_text_ids, written_merges, written_tokens
from .weights import ExportError

TOKEN_TYPE_NORMAL, TOKEN_TYPE_CONTROL = 1, 3  # llama.cpp's llama_token_type

# (patterns, ignore_merges) -> the tokenizer.ggml.pre name llama.cpp splits text with in the same way
PRE_TOKENIZER_NAMES: dict[tuple[tuple[str, ...], bool], str] = {
    ((GPT4_SPLIT_PATTERN,), False): "dbrx",  # tinyllm's trainer: see the module docstring
    ((LLAMA3_SPLIT_PATTERN,), False): "dbrx",
    ((GPT4_SPLIT_PATTERN,), True): "llama-bpe",
    ((LLAMA3_SPLIT_PATTERN,), True): "llama-bpe",
    ((GPT2_SPLIT_PATTERN,), False): "gpt-2",
    (SMOLLM_PRE_TOKENIZER, False): "smollm",
    ((QWEN2_SPLIT_PATTERN,), False): "qwen2",
}


def pre_tokenizer_name(tokenizer: Any) -> str:
    """The ``tokenizer.ggml.pre`` for our tokenizer's patterns, or ``ExportError`` if llama.cpp knows none.

    >>> from tinyllm.tokenizer import BPETokenizer
    >>> pre_tokenizer_name(BPETokenizer.train("to be or not to be", vocab_size=260))
    'dbrx'
    """
    key = (tuple(tokenizer.patterns), bool(tokenizer.ignore_merges))
    if key not in PRE_TOKENIZER_NAMES:
        raise ExportError(
            f"the tokenizer's pre-tokenizer patterns {list(tokenizer.patterns)} (ignore_merges={tokenizer.ignore_merges}) "
            f"match none of llama.cpp's built-in pre-tokenizers, so llama.cpp would split text differently and give "
            f"other token ids. Train the tokenizer with one of the patterns in tinyllm.tokenizer.patterns "
            f"(GPT4_SPLIT_PATTERN, the default, GPT2_SPLIT_PATTERN, LLAMA3_SPLIT_PATTERN, QWEN2_SPLIT_PATTERN, "
            f"SMOLLM_PRE_TOKENIZER), or export to a Hugging Face directory, whose tokenizer.json holds any regex."
        )
    return PRE_TOKENIZER_NAMES[key]


def add_tokenizer_metadata(writer: Any, tokenizer: Any) -> None:
    """Add the ``tokenizer.ggml.*`` keys (and the chat template) to a ``gguf.GGUFWriter``."""
    pre = pre_tokenizer_name(tokenizer)
    special = set(tokenizer.special_tokens.values())
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(written_tokens(tokenizer))
    writer.add_token_types([TOKEN_TYPE_CONTROL if i in special else TOKEN_TYPE_NORMAL
                            for i in range(tokenizer.vocab_size)])
    writer.add_token_merges([f"{a} {b}" for a, b in written_merges(tokenizer)])
    ids = end_of_text_ids(tokenizer)
    if ids["bos"] is not None:
        writer.add_bos_token_id(ids["bos"])
    if ids["eos"] is not None:
        writer.add_eos_token_id(ids["eos"])
    if ids["unk"] is not None:
        writer.add_unk_token_id(ids["unk"])
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    if tokenizer.chat_template is not None:
        writer.add_chat_template(tokenizer.chat_template)
