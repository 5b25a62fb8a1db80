"""GPT-2's byte-to-unicode map: how byte-level BPE vocabularies are written down as text.

A byte-level BPE token is a byte string, and many byte strings are not valid text (a lone
b"\\xe2" is the first third of "€"). GPT-2 therefore stores each token as text by mapping
every byte to one printable character: the printable Latin-1 bytes stand for themselves,
and the rest (control bytes, the space, ...) are shifted to the characters from U+0100 on.
Hugging Face `tokenizer.json` and GGUF files (`tokenizer.ggml.model == "gpt2"`) use it:

    BYTE_TO_UNICODE[ord("a")] -> "a"
    BYTE_TO_UNICODE[ord(" ")] -> "Ġ"        (U+0120: so " the" is stored as "Ġthe")
    BYTE_TO_UNICODE[ord("\\n")] -> "Ċ"
    unicode_to_bytes("Ġthe") -> b" the"
"""

from __future__ import annotations


def bytes_to_unicode() -> dict[int, str]:
    """The byte -> character table of GPT-2 (openai/gpt-2, encoder.py), built from its rule.

    Bytes that are printable and not a space keep their own character; the other 68
    bytes get U+0100, U+0101, ... in increasing byte order.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),  # ASCII punctuation, digits, letters
        *range(ord("¡"), ord("¬") + 1),  # Latin-1 symbols (0xAD, the soft hyphen, is left out)
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


BYTE_TO_UNICODE: dict[int, str] = bytes_to_unicode()
UNICODE_TO_BYTE: dict[str, int] = {c: b for b, c in BYTE_TO_UNICODE.items()}


def unicode_to_bytes(token: str) -> bytes:
    """Turn a token written with the GPT-2 map back into its bytes.

    unicode_to_bytes("ĠHello") -> b" Hello"
    Raises ValueError for a character outside the map (the vocabulary is not byte-level).
    """
    try:
        return bytes(UNICODE_TO_BYTE[c] for c in token)
    except KeyError as e:
        raise ValueError(
            f"token {token!r} has the character {e.args[0]!r}, which is not in GPT-2's byte-to-unicode "
            "map: this is not a byte-level BPE vocabulary"
        ) from None


def bytes_to_unicode_text(token: bytes) -> str:
    """Write a token's bytes with the GPT-2 map: bytes_to_unicode_text(b" Hello") -> "ĠHello"."""
    return "".join(BYTE_TO_UNICODE[b] for b in token)
