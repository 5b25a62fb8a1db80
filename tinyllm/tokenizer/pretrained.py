"""Loading the byte-level BPE tokenizers of real models: GGUF files and Hugging Face tokenizer.json.

Both store the same things in different containers:
- the vocabulary, each token written as text with GPT-2's byte-to-unicode map ("Ġthe" is
  b" the", see bytes_unicode.py), with its id;
- the merges in rank order, each as the two tokens' text ("Ġ t" in GGUF);
- the pre-tokenizer (a name in GGUF, a description in tokenizer.json);
- the special tokens ("<|im_start|>"), written as plain text, not through the byte map.

SmolLM2-135M-Instruct, for example (GGUF):
    tokenizer.ggml.model = "gpt2", tokenizer.ggml.pre = "smollm",
    tokens[0:3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] (token_type 3, control),
    merges[0] = "Ġ t", bos_token_id = 1, eos_token_id = 2.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tinyllm.tokenizer.bpe import BPETokenizer
from tinyllm.tokenizer.bytes_unicode import unicode_to_bytes
from tinyllm.tokenizer.file_format import FORMAT_NAME
from tinyllm.tokenizer.patterns import GGUF_PRE_TOKENIZERS, GPT2_SPLIT_PATTERN

# GGUF token types (llama.cpp's llama_token_type).
TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED = 1, 2, 3, 4
# Tokens of these types are written as plain text and matched whole (llama.cpp does the same).
SPECIAL_TOKEN_TYPES = (TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)


def _build(
    tokens: list[str],
    special: set[int],
    merges: list[tuple[str, str]],
    patterns: tuple[str, ...],
    **kwargs: Any,
) -> BPETokenizer:
    """Turn text tokens (byte-mapped, except the special ones) and text merges into a BPETokenizer."""
    vocab = [t.encode("utf-8") if i in special else unicode_to_bytes(t) for i, t in enumerate(tokens)]
    ids = {t: i for i, t in enumerate(tokens) if i not in special}
    try:
        merge_ids = [(ids[a], ids[b]) for a, b in merges]
    except KeyError as e:
        raise ValueError(f"a merge names the token {e.args[0]!r}, which is not in the vocabulary") from None
    special_tokens = {tokens[i]: i for i in sorted(special)}
    return BPETokenizer(vocab, merge_ids, patterns, special_tokens, **kwargs)


# ---------------------------------------------------------------- GGUF


def _field(reader, key: str, required: bool = True) -> Any:
    """A GGUF metadata value as Python: str, int, float, bool, or a list of them."""
    from gguf import GGUFValueType

    field = reader.fields.get(key)
    if field is None:
        if required:
            raise ValueError(f"the GGUF file has no {key!r}: it holds no tokenizer, or not one tinyllm reads")
        return None

    def value(part_index: int, vtype) -> Any:
        part = field.parts[part_index]
        if vtype == GGUFValueType.STRING:
            return bytes(part).decode("utf-8")
        return part[0].item()

    if field.types[0] == GGUFValueType.ARRAY:
        return [value(i, field.types[-1]) for i in field.data]
    return value(field.data[0], field.types[0])


def from_gguf(path_or_reader) -> BPETokenizer:
    """Load the tokenizer stored in a GGUF file's metadata (`path` or a gguf.GGUFReader).

    Supports `tokenizer.ggml.model == "gpt2"` (byte-level BPE) with the pre-tokenizers
    named in patterns.GGUF_PRE_TOKENIZERS. Control, user-defined and unknown tokens become
    special tokens.
    """
    from gguf import GGUFReader

    reader = path_or_reader if isinstance(path_or_reader, GGUFReader) else GGUFReader(path_or_reader, "r")
    model = _field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise NotImplementedError(
            f"GGUF tokenizer model {model!r} is not supported: tinyllm reads byte-level BPE ('gpt2') only"
        )
    pre = _field(reader, "tokenizer.ggml.pre", required=False)
    if pre not in GGUF_PRE_TOKENIZERS:
        raise NotImplementedError(
            f"GGUF pre-tokenizer {pre!r} is not supported; supported: {sorted(GGUF_PRE_TOKENIZERS)}"
        )
    patterns, ignore_merges = GGUF_PRE_TOKENIZERS[pre]
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type", required=False) or [TOKEN_TYPE_NORMAL] * len(tokens)
    special = {i for i, t in enumerate(types) if t in SPECIAL_TOKEN_TYPES}
    merges = []
    for m in _field(reader, "tokenizer.ggml.merges"):
        a, sep, b = m.partition(" ")  # byte-mapped tokens never hold a space (it is "Ġ")
        if not sep:
            raise ValueError(f"GGUF merge {m!r} is not two tokens separated by a space")
        merges.append((a, b))
    return _build(
        tokens,
        special,
        merges,
        patterns,
        ignore_merges=ignore_merges,
        unk_id=_field(reader, "tokenizer.ggml.unknown_token_id", required=False),
        bos_id=_field(reader, "tokenizer.ggml.bos_token_id", required=False),
        eos_id=_field(reader, "tokenizer.ggml.eos_token_id", required=False),
        chat_template=_field(reader, "tokenizer.chat_template", required=False),
    )


# ---------------------------------------------------------------- tokenizer.json


def _hf_patterns(pre: dict | None) -> tuple[list[str], bool]:
    """Patterns of a Hugging Face pre-tokenizer, and whether it holds a ByteLevel step.

    Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)] (SmolLM2)
    -> ([r"\\p{N}", GPT2_SPLIT_PATTERN], True)
    """
    if pre is None:
        return [], False
    kind = pre.get("type")
    if kind == "Sequence":
        patterns, byte_level = [], False
        for step in pre["pretokenizers"]:
            p, b = _hf_patterns(step)
            patterns += p
            byte_level = byte_level or b
        return patterns, byte_level
    if kind == "ByteLevel":
        if pre.get("add_prefix_space", False):
            raise NotImplementedError("ByteLevel pre-tokenizer with add_prefix_space=true is not supported")
        return ([GPT2_SPLIT_PATTERN] if pre.get("use_regex", True) else []), True
    if kind == "Digits":
        return [r"\p{N}" if pre.get("individual_digits", False) else r"\p{N}+"], False
    if kind == "Split":
        import regex

        if pre.get("behavior") != "Isolated" or pre.get("invert", False):
            raise NotImplementedError(
                f"Split pre-tokenizer with behavior={pre.get('behavior')!r}, invert={pre.get('invert')!r} "
                "is not supported (only Isolated, not inverted)"
            )
        pattern = pre["pattern"]
        return [pattern["Regex"] if "Regex" in pattern else regex.escape(pattern["String"])], False
    raise NotImplementedError(f"pre-tokenizer {kind!r} is not supported")


def from_tokenizer_json(path: str | os.PathLike) -> BPETokenizer:
    """Load a Hugging Face `tokenizer.json` of the byte-level BPE kind (GPT-2, SmolLM2, Llama 3).

    bos/eos tokens and the chat template are read from a `tokenizer_config.json` beside it,
    when there is one. Added tokens become special tokens. Normalizers, byte fallback and
    BPE dropout are not supported and raise NotImplementedError.
    """
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise NotImplementedError(
            f"{path}: tokenizer model {model.get('type')!r} is not supported (only BPE)"
        )
    if data.get("normalizer") is not None:
        raise NotImplementedError(
            f"{path}: normalizers are not supported ({data['normalizer'].get('type')!r})"
        )
    if model.get("byte_fallback") or model.get("dropout") or model.get("continuing_subword_prefix"):
        raise NotImplementedError(f"{path}: byte_fallback, dropout and subword prefixes are not supported")
    patterns, byte_level = _hf_patterns(data.get("pre_tokenizer"))
    if not byte_level or (data.get("decoder") or {}).get("type") != "ByteLevel":
        raise NotImplementedError(
            f"{path}: not a byte-level BPE tokenizer (no ByteLevel pre-tokenizer and decoder)"
        )

    added = {int(t["id"]): t["content"] for t in data.get("added_tokens", [])}
    n = max([*model["vocab"].values(), *added.keys()]) + 1
    tokens: list[str | None] = [None] * n
    for text, i in model["vocab"].items():
        tokens[i] = text
    for i, text in added.items():
        tokens[i] = text
    holes = [i for i, t in enumerate(tokens) if t is None]
    if holes:
        raise ValueError(f"{path}: token ids {holes[:5]} have no token")
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]

    config: dict[str, Any] = {}
    config_path = path.with_name("tokenizer_config.json")
    if config_path.exists():
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)

    def config_token_id(key: str) -> int | None:
        token = config.get(key)
        if isinstance(token, dict):
            token = token.get("content")
        if token is None:
            return None
        if token not in added.values():
            raise ValueError(f"{config_path}: {key} {token!r} is not an added token of {path}")
        return next(i for i, t in added.items() if t == token)

    unk_token = model.get("unk_token")
    unk_id = None
    if unk_token is not None:
        unk_id = next((i for i, t in enumerate(tokens) if t == unk_token), None)
        if unk_id is None:
            raise ValueError(f"{path}: the unk_token {unk_token!r} is not in the vocabulary")
    chat_template = config.get("chat_template")
    if isinstance(chat_template, list):  # several named templates: take the default one
        chat_template = next((t["template"] for t in chat_template if t.get("name") == "default"), None)
    return _build(
        tokens,
        set(added),
        merges,
        tuple(patterns),
        ignore_merges=bool(model.get("ignore_merges", False)),
        unk_id=unk_id,
        bos_id=config_token_id("bos_token"),
        eos_id=config_token_id("eos_token"),
        chat_template=chat_template,
    )


# ---------------------------------------------------------------- any file


def load_tokenizer(path: str | os.PathLike) -> BPETokenizer:
    """Load a tokenizer from a .gguf file, a tokenizer.json, a directory holding tokenizer.json,
    or a file written by BPETokenizer.save."""
    path = Path(path)
    if path.is_dir():
        if not (path / "tokenizer.json").exists():
            raise FileNotFoundError(f"{path} is a directory without a tokenizer.json")
        return from_tokenizer_json(path / "tokenizer.json")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return from_gguf(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: neither a GGUF file nor a JSON tokenizer ({e})") from e
    if isinstance(data, dict) and "format" in data:
        if data["format"] != FORMAT_NAME:
            raise ValueError(f"{path}: unknown tokenizer format {data['format']!r}")
        return BPETokenizer.load(path)
    if isinstance(data, dict) and "model" in data:
        return from_tokenizer_json(path)
    raise ValueError(
        f"{path}: a JSON file that is neither a tinyllm tokenizer nor a Hugging Face tokenizer.json"
    )
