"""Streaming encoding: token ids of a text of any size, in memory bounded by a chunk.

``tok.encode_iterable(lines)`` gives exactly ``tok.encode("".join(lines))``, but it never holds
the whole text: it reads about ``chunk_chars`` characters at a time, encodes them, and yields
their ids. (``encode_iterable(open("big.txt"))`` streams a file line by line.)

The difficulty is the cut between two chunks. Pre-tokenization (patterns.py) must see the text
as one: cut "Hello world" after "wor" and " wor" + "ld" come out as two pre-tokens instead of
" world". So a cut is never trusted; it is repaired. Two facts about the pre-tokenizer regexes
(true of every pattern in patterns.py, which have no look-behind) make that cheap and exact:

1. Cutting the text after the end keeps every pre-token but the last one: in
   split("the cat sat") = ["the", " cat", " sat"], "the" and " cat" stay whatever follows, and
   " sat" may grow (" saturday"). The start of the last pre-token is a true boundary.
2. Two scans of the same text that share one boundary agree from there on (the regex only looks
   forward from where it stands).

Each chunk is pre-tokenized and encoded on its own (so that separate worker processes can do it).
Joining chunk k to the text before it (the "tail": the last pre-token of chunk k-1, from its
true start) the stitcher re-scans tail + the first characters of chunk k until a boundary of
that scan is also a boundary of chunk k's own scan; from there on chunk k's ids are right
(fact 2), and the few pre-tokens before it are encoded again from the re-scan. Chunk k's last
pre-token becomes the next tail (fact 1). Usually the scans meet after one or two pre-tokens.

Special tokens are found before all that, in the main process: text is held back
(the longest special token's length - 1 characters) until no special token can be cut in two.
A special token ends a segment of ordinary text, as in ``BPETokenizer.encode``.

Memory: about ``chunk_chars`` characters and their ids (times the chunks in flight with
workers). One single pre-token is never cut, so a pathological text that is one pre-token
(a gigabyte of spaces) is held whole.

Workers: ``workers=2`` encodes chunks in 2 processes; the order of the ids is kept, and at most
``2 * workers`` chunks are in flight, so memory stays bounded however fast the input comes.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

from tinyllm.tokenizer.patterns import split_text

if TYPE_CHECKING:
    from tinyllm.tokenizer.bpe import BPETokenizer

DEFAULT_CHUNK_CHARS = 1 << 20  # characters read and encoded at a time (about 1 MB of English)
RESYNC_WINDOW = 64  # characters of the next chunk re-scanned first when joining two chunks (doubled as needed)


# ---------------------------------------------------------------- stage 1: ordinary text and special tokens


def _segments(
    tok: BPETokenizer, texts: Iterable[str], allowed_special: str | Iterable[str], chunk_chars: int
) -> Iterator[tuple[str, Any]]:
    """Cut the stream into ("text", str) pieces of ordinary text, ("special", id) and ("end", None).

    ("end", None) closes a segment of ordinary text: one comes before every special token and at
    the end of the input. Pieces are cut anywhere (the stitcher repairs the cuts); special tokens
    are matched only where they are complete, as ``encode`` matches them on the whole text.
    """
    allowed, disallowed = tok._allowed_specials(allowed_special)
    allowed_re = tok._special_pattern(allowed) if allowed else None
    disallowed_re = tok._special_pattern(disallowed) if disallowed else None
    hold = max((len(s) for s in allowed | disallowed), default=1) - 1  # a special token may start in the last `hold`
    offset = 0  # characters of the input before `buffer`, for error messages

    def pieces(buffer: str, start: int, stop: int) -> list[tuple[str, Any]]:
        """``buffer[start:stop]`` as ("text", piece) items of at most ``chunk_chars`` characters."""
        return [("text", buffer[i : min(i + chunk_chars, stop)]) for i in range(start, stop, chunk_chars)]

    def settle(buffer: str, limit: int) -> tuple[list[tuple[str, Any]], int]:
        """The items that ``buffer[:limit]`` settles (special tokens starting before ``limit`` are
        complete), and where the unsettled text starts (``limit``, or the end of a special token
        that reaches past it)."""
        if disallowed_re is not None:
            found = disallowed_re.search(buffer)
            if found and found.start() < limit:
                raise ValueError(
                    f"the text contains the special token {found.group()!r} at character {offset + found.start()}. "
                    "Pass allowed_special='all' (or a set holding it) to encode it as a special token, "
                    "or allowed_special='none' to encode it as ordinary text."
                )
        items: list[tuple[str, Any]] = []
        pos = 0
        if allowed_re is not None:
            for m in allowed_re.finditer(buffer):
                if m.start() >= limit:
                    break
                items += pieces(buffer, pos, m.start())
                items += [("end", None), ("special", tok._special_tokens[m.group()])]
                pos = m.end()
        items += pieces(buffer, pos, limit)
        return items, max(pos, limit)

    parts: list[str] = []
    size = 0
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(
                f"encode_iterable takes an iterable of str (lines or chunks of text), but one item is a "
                f"{type(text).__name__}; open files in text mode (open(path, encoding='utf-8'))"
            )
        parts.append(text)
        size += len(text)
        if size < chunk_chars + hold:
            continue
        buffer = "".join(parts)
        items, rest = settle(buffer, len(buffer) - hold)
        yield from items
        parts, offset = [buffer[rest:]], offset + rest
        size = len(parts[0])
    items, _ = settle("".join(parts), size)
    yield from items
    yield "end", None


# ---------------------------------------------------------------- stage 2: one piece, pre-tokenized and encoded


Piece = tuple[np.ndarray, np.ndarray, np.ndarray]  # (starts, ids, bounds), see _encode_piece


def _encode_piece(tok: BPETokenizer, text: str) -> Piece:
    """Pre-tokenize and encode ``text`` on its own: (starts, ids, bounds), int64 arrays.

    starts[j] is where pre-token j starts in ``text`` (plus ``len(text)`` at the end), and its ids
    are ids[bounds[j] : bounds[j + 1]]. (Arrays, not lists: a worker sends them back in a few MB.)

    _encode_piece(tok, "to be") -> starts [0, 2, 5], ids [ids of "to"..., ids of " be"...], bounds [0, n1, n1 + n2]
    """
    chunks = split_text(text, tok._compiled)
    encoded = list(map(tok._encode_chunk, chunks))  # a tuple of ids per pre-token (loops in C: map, chain)
    n = len(chunks)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, chunks), dtype=np.int64, count=n), out=starts[1:])
    bounds = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=n), out=bounds[1:])
    return starts, np.fromiter(chain.from_iterable(encoded), dtype=np.int64, count=int(bounds[-1])), bounds


_WORKER_TOKENIZER: BPETokenizer | None = None


def _worker_init(tok: BPETokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tok


def _worker_encode(text: str) -> Piece:
    assert _WORKER_TOKENIZER is not None
    return _encode_piece(_WORKER_TOKENIZER, text)


# ---------------------------------------------------------------- stage 3: joining the pieces


class _Stitcher:
    """Join the separately encoded pieces of one segment into the ids of the whole segment."""

    def __init__(self, tok: BPETokenizer) -> None:
        self.tok = tok
        self.tail = ""  # text from the last true pre-token boundary that is not yet emitted

    def _encode_chunks(self, chunks: list[str]) -> np.ndarray:
        ids = [i for chunk in chunks for i in self.tok._encode_chunk(chunk)]
        return np.array(ids, dtype=np.int64)

    def add(self, text: str, piece: Piece) -> np.ndarray:
        """The ids that ``text`` (the next piece, encoded alone as ``piece``) settles."""
        starts, ids, bounds = piece
        m = len(starts) - 1  # pre-tokens in the piece
        if m == 0:
            return ids
        head = ids[:0]  # ids of the re-scanned pre-tokens before the scans meet
        first = 0  # index of the first pre-token of the piece whose ids are right
        if self.tail:
            first = -1
            window = RESYNC_WINDOW
            while first < 0:
                probe = self.tail + text[:window]
                chunks = split_text(probe, self.tok._compiled)
                position = -len(self.tail)  # in piece coordinates
                for k, chunk in enumerate(chunks):
                    if position >= 0:
                        j = int(np.searchsorted(starts, position))
                        if j < m and starts[j] == position:  # the scans meet: fact 2
                            head = self._encode_chunks(chunks[:k])
                            first = j
                            break
                    position += len(chunk)
                else:
                    if window >= len(text):  # no meeting inside this piece: keep all but the last (fact 1)
                        self.tail = chunks[-1] if chunks else ""
                        return self._encode_chunks(chunks[:-1])
                    window *= 2
        self.tail = text[starts[m - 1] :]  # the last pre-token may grow: it waits for the next piece
        if first < m - 1:
            return np.concatenate([head, ids[bounds[first] : bounds[m - 1]]])
        return head  # the scans met only at the piece's last pre-token

    def end(self) -> np.ndarray:
        """The segment ends here: the tail's pre-tokens are all final."""
        ids = self._encode_chunks(split_text(self.tail, self.tok._compiled)) if self.tail else np.zeros(0, np.int64)
        self.tail = ""
        return ids


# ---------------------------------------------------------------- the driver


def iter_id_blocks(
    tok: BPETokenizer,
    texts: Iterable[str],
    allowed_special: str | Iterable[str] = "none_raise",
    chunk_chars: int = DEFAULT_CHUNK_CHARS,
    workers: int = 1,
) -> Iterator[np.ndarray]:
    """The ids of ``"".join(texts)`` as ``tok.encode`` gives them, in int64 arrays of about a chunk's ids."""
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars must be at least 1, got {chunk_chars}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    stitcher = _Stitcher(tok)
    items = _segments(tok, texts, allowed_special, chunk_chars)
    if workers == 1:
        for kind, value in items:
            if kind == "text":
                yield stitcher.add(value, _encode_piece(tok, value))
            elif kind == "special":
                yield np.array([value], dtype=np.int64)
            else:
                yield stitcher.end()
        return
    pending: deque[tuple[str, Any, Future | None]] = deque()
    with ProcessPoolExecutor(workers, initializer=_worker_init, initargs=(tok,)) as pool:

        def settle() -> np.ndarray:
            kind, value, future = pending.popleft()
            if kind == "text":
                assert future is not None
                return stitcher.add(value, future.result())
            return np.array([value], dtype=np.int64) if kind == "special" else stitcher.end()

        for kind, value in items:
            pending.append((kind, value, pool.submit(_worker_encode, value) if kind == "text" else None))
            while len(pending) > 2 * workers:
                yield settle()
        while pending:
            yield settle()


def default_workers() -> int:
    """The processes worth using: the CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
