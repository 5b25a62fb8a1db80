"""Token ids -> text a client can be sent, with stop strings matched across token boundaries.

Two things can be split between tokens:

- a UTF-8 character: "é" may be the last byte of one token and the first of the next, so bytes
  go through an incremental decoder that holds back an unfinished character;
- a stop string: with stop "\\n\\nUser:", one token may end in "\\n\\nUs" and the next begin with
  "er:". So text that could still be the start of a stop string is held back until the next
  token shows whether it is one. On a match everything from the stop string on is dropped.

    stream = TextStream(tokenizer, stops=["END"])
    stream.push(id_of("The E"))  -> ("The ", False)     "E" might begin "END": held back
    stream.push(id_of("ND."))    -> ("", True)          matched: the text ends at "The "
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import Any


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many characters at the end of ``text`` could be the beginning of a stop string.

    >>> held_back("Hello\\n\\nUs", ["\\n\\nUser:"])
    4
    >>> held_back("Hello", ["\\n\\nUser:"])
    0
    """
    longest = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), longest, -1):  # longest candidate first
            if text.endswith(stop[:k]):
                longest = k
                break
    return longest


class TextStream:
    """Feed token ids with ``push``; get back the text that is safe to send and whether a stop string matched."""

    def __init__(self, tokenizer: Any, stops: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stops = [s for s in stops if s]
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""  # decoded text not yet sent (it might start a stop string)
        self.stopped = False

    def push(self, token: int) -> tuple[str, bool]:
        """(text to send now, True if a stop string has matched: send this text, then end)."""
        if self.stopped:
            return "", True
        self.pending += self.decoder.decode(self.tokenizer.decode_bytes([token]))
        hits = [i for i in (self.pending.find(stop) for stop in self.stops) if i >= 0]
        if hits:
            text, self.pending, self.stopped = self.pending[: min(hits)], "", True
            return text, True
        keep = held_back(self.pending, self.stops)
        text = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep :]
        return text, False

    def flush(self) -> str:
        """The rest, once generation has ended without a stop string (a held-back prefix was not one)."""
        if self.stopped:
            return ""
        text = self.pending + self.decoder.decode(b"", final=True)
        self.pending = ""
        return text
