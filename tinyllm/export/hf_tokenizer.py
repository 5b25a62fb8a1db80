"""Our byte-level BPE tokenizer as Hugging Face ``tokenizer.json`` + ``tokenizer_config.json``.

``tokenizer.json`` is read by the Rust ``tokenizers`` library, which runs a pipeline; ours is::

    pre_tokenizer   Sequence[ Split(pattern_1, "Isolated"), ..., Split(pattern_n, "Isolated"),
                              ByteLevel(add_prefix_space=false, use_regex=false) ]
    model           BPE { vocab: byte-mapped text -> id, merges: [["Ġ", "t"], ...], ignore_merges }
    decoder         ByteLevel
    added_tokens    the special tokens, matched whole before anything else

Each ``Split(..., "Isolated")`` cuts every piece left by the one before at the pattern's
matches, keeping unmatched text as pieces of its own: exactly tinyllm's ``split_text`` (and
llama.cpp's), so one pattern or SmolLM2's two (digits, then GPT-2) are written the same way.
``ByteLevel`` then only maps bytes to characters (``use_regex=false``: no GPT-2 split of its own).

``tokenizer_config.json`` names the special tokens (bos, eos, unk), the chat template, and
``"add_bos_token": false``: tinyllm's ``encode`` adds nothing to the text.
"""

from __future__ import annotations

from typing import Any

from .vocab_text import check_unique, end_of_text_ids, written_merges, written_tokens


def tokenizer_json(tokenizer: Any) -> dict[str, Any]:
    """The ``tokenizer.json`` object of a ``BPETokenizer`` (a ValueError-style ``ExportError`` if inexpressible)."""
    tokens = written_tokens(tokenizer)
    check_unique(tokens)
    special = tokenizer.special_tokens
    unk = tokenizer.unk_id
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
             "special": True}
            for text, i in sorted(special.items(), key=lambda item: item[1])
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                *({"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": False}
                  for p in tokenizer.patterns),
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": tokens[unk] if unk is not None else None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": bool(tokenizer.ignore_merges),
            "vocab": {text: i for i, text in enumerate(tokens)},
            "merges": [list(pair) for pair in written_merges(tokenizer)],
        },
    }


def tokenizer_config_json(tokenizer: Any, model_max_length: int) -> dict[str, Any]:
    """The ``tokenizer_config.json`` object: special tokens, chat template, no bos added."""
    tokens = written_tokens(tokenizer)
    ids = end_of_text_ids(tokenizer)
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(model_max_length),
        "added_tokens_decoder": {
            str(i): {"content": text, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                     "special": True}
            for text, i in sorted(tokenizer.special_tokens.items(), key=lambda item: item[1])
        },
    }
    special_ids = set(tokenizer.special_tokens.values())
    for name in ("bos", "eos", "unk"):
        if ids[name] in special_ids:  # (an unk that is an ordinary token is named by the model's unk_token)
            config[f"{name}_token"] = tokens[ids[name]]
    if tokenizer.chat_template is not None:
        config["chat_template"] = tokenizer.chat_template
    return config
