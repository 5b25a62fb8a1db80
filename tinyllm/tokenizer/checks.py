"""Clear errors for input of the wrong type: what was passed, and what to pass instead.

BPETokenizer's encode and decode call these before (or, for decode, only after) failing, so a
user who passes bytes, a float id or a batch reads what to do rather than a bare TypeError from
inside Python:

    check_text(b"hi", "encode")
    -> TypeError: encode takes a str, got bytes b'hi'; decode the bytes first: encode(data.decode('utf-8'))
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any


def check_text(text: Any, caller: str) -> None:
    """Raise a TypeError that says what to pass when ``text`` is not a str.

    check_text(b"hi", "encode") -> TypeError: encode takes a str, got bytes; decode the bytes first ...
    """
    if isinstance(text, str):
        return
    hints = {
        bytes: "decode the bytes first: encode(data.decode('utf-8'))",
        bytearray: "decode the bytes first: encode(data.decode('utf-8'))",
        list: "for several texts use encode_batch(texts)",
        tuple: "for several texts use encode_batch(texts)",
        type(None): "pass the text to encode (an empty text is \"\")",
    }
    hint = hints.get(type(text), "convert it with str() if it is meant as text")
    raise TypeError(f"{caller} takes a str, got {_describe(text)}; {hint}")


def check_ids_container(ids: Any) -> None:
    """Raise a TypeError that says what to pass when ``ids`` is not a sequence of ids at all."""
    if isinstance(ids, str | bytes | bytearray):
        raise TypeError(
            f"decode takes a sequence of integer token ids, got {_describe(ids)}; to turn text into ids use encode(text)"
        )
    if getattr(ids, "ndim", 1) == 0 or not isinstance(ids, Iterable):
        hint = "wrap a single id in a list: decode([id])" if bad_id(ids, 0) is None else "pass a list of ints"
        raise TypeError(f"decode takes a sequence of integer token ids, got {_describe(ids)}; {hint}")
    if getattr(ids, "ndim", 1) > 1:
        raise TypeError(
            f"decode takes one sequence of ids, got an array of shape {tuple(ids.shape)}; "
            "decode a batch row by row: [tok.decode(row) for row in ids]"
        )


def bad_id(i: Any, position: int) -> str | None:
    """What is wrong with ``i`` as a token id (None if it is an integer)."""
    if isinstance(i, list | tuple) or getattr(i, "ndim", 0) > 0:
        return (
            f"decode takes one sequence of ids, but the item at position {position} is itself a sequence; "
            "decode a batch row by row: [tok.decode(row) for row in ids]"
        )
    try:
        operator.index(i)  # int, NumPy integers, bool
    except TypeError:
        return (
            f"token ids must be integers, but the id at position {position} is {_describe(i)}; "
            "convert them with [int(i) for i in ids] (or ids.astype(int) for an array)"
        )
    return None


def _describe(value: Any) -> str:
    """The type and repr of ``value`` (cut to 40 characters): _describe(1.5) -> "float 1.5"; None -> "None"."""
    if value is None:
        return "None"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
