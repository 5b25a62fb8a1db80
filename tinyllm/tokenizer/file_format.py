"""tinyllm's tokenizer file: versioned JSON that a person can read, one token or merge a line.

    {
      "format": "tinyllm-bpe-tokenizer",
      "version": 1,
      "patterns": ["'(?i:[sdmt]|ll|ve|re)|..."],      pre-tokenizer regexes, applied in turn
      "ignore_merges": false,
      "unk_id": null,
      "special_tokens": {"<|endoftext|>": 4095},
      "bos_id": null,
      "eos_id": null,
      "chat_template": null,
      "vocab": [                                      index = token id
        "\u0000",
        ...
        [226],                                        bytes that are not UTF-8: byte values
        ...
        " the",
        ...
      ],
      "merges": [                                     rank order, as the two tokens' bytes
        [" ", "t"],
        ["h", "e"],
        ...
      ]
    }

A token is written as text when its bytes are valid UTF-8 (b" the" -> " the"), else as the
list of its byte values (b"\\xe2\\x82" -> [226, 130]). Reading checks the format name and
version and says clearly what is wrong with a file that does not pass.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from ..fileio import read_versioned_json

if TYPE_CHECKING:
    from tinyllm.tokenizer.bpe import BPETokenizer

FORMAT_NAME = "tinyllm-bpe-tokenizer"
FORMAT_VERSION = 1


def token_to_json(token: bytes) -> str | list[int]:
    """b"hi" -> "hi"; bytes that are not valid UTF-8 -> list of byte values: b"\\xe2" -> [226]."""
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        return list(token)


def token_from_json(value: str | list[int]) -> bytes:
    """Inverse of token_to_json: "hi" -> b"hi", [226] -> b"\\xe2"."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    raise ValueError(f"a token must be a string or a list of byte values, got {value!r}")


def write_tokenizer_file(tok: BPETokenizer, path: str | os.PathLike) -> None:
    """Write `tok` in the format above."""
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "patterns": list(tok.patterns),
        "ignore_merges": tok.ignore_merges,
        "unk_id": tok.unk_id,
        "special_tokens": tok.special_tokens,
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "chat_template": tok.chat_template,
    }
    vocab = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    lines = ["{"]
    for key, value in header.items():
        lines.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)},")
    tokens = [json.dumps(token_to_json(t), ensure_ascii=False) for t in vocab]
    merges = [
        json.dumps([token_to_json(vocab[a]), token_to_json(vocab[b])], ensure_ascii=False)
        for a, b in tok.merges
    ]
    lines.append('  "vocab": [\n    ' + ",\n    ".join(tokens) + "\n  ],")
    lines.append('  "merges": [\n    ' + ",\n    ".join(merges) + "\n  ]")
    lines.append("}\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def read_tokenizer_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file in the format above into the keyword arguments of BPETokenizer(...).

    Raises ValueError for a file that is not JSON, not this format, of another version, or
    with missing or malformed entries.
    """
    data = read_versioned_json(path, FORMAT_NAME, FORMAT_VERSION, "tokenizer file")
    try:
        vocab = [token_from_json(t) for t in data["vocab"]]
        specials = {str(k): int(v) for k, v in data["special_tokens"].items()}
        # bytes -> id for the merges; an ordinary token wins over a special one with the same bytes
        special_ids = set(specials.values())
        token_ids = {t: i for i, t in enumerate(vocab) if i in special_ids}
        token_ids.update({t: i for i, t in enumerate(vocab) if i not in special_ids})
        merges = [(token_ids[token_from_json(a)], token_ids[token_from_json(b)]) for a, b in data["merges"]]
        return {
            "vocab": vocab,
            "merges": merges,
            "pattern": data["patterns"],
            "special_tokens": specials,
            "ignore_merges": bool(data["ignore_merges"]),
            "unk_id": data["unk_id"],
            "bos_id": data["bos_id"],
            "eos_id": data["eos_id"],
            "chat_template": data["chat_template"],
        }
    except (KeyError, TypeError, ValueError) as e:
        what = f"missing or unknown entry {e}" if isinstance(e, KeyError) else str(e)
        raise ValueError(f"{path}: damaged tokenizer file: {what}") from e
