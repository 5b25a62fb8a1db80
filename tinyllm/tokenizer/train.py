"""Training byte-level BPE: learn which pairs of tokens to merge, most frequent first.

Start from the 256 byte values. Count every adjacent pair of tokens in the training text,
merge the most frequent pair into a new token, repeat until the vocabulary is big enough.
On the Wikipedia example "aaabdaaabac" (https://en.wikipedia.org/wiki/Byte_pair_encoding):

    merge 1: (a, a)   -> 256 "aa"     text: aa a b d aa a b a c  ->  256 a b d 256 a b a c
    merge 2: (a, b)   -> 257 "ab"     (tied with (256, a) at 2; see the tie rule below)
    merge 3: (256, 257) -> 258 "aaab"

Pairs never cross chunk boundaries: the text is first cut by the pre-tokenizer pattern
(see patterns.py), and special tokens are cut out before that, so they are never merged.

Tie rule: among pairs with the same count, one must win, and which one changes the merges.
Both rules compare (bytes of left token, bytes of right token) as a tuple:

    tie_break="smallest" (the default): the smallest pair wins. In merge 2 above,
        (b"a", b"b") < (b"aa", b"a") because b"a" < b"aa", so (a, b) is merged.
    tie_break="greatest": the greatest pair wins, as GPT-2-style reference trainers do
        (for example the one Stanford CS336 tests against: "prefer the lexicographically
        greater pair"). Merge 2 above is then (aa, a) -> 257 "aaa", and merge 3 (aaa, b) -> "aaab":

            smallest: (a, a), (a, b), (aa, ab)        greatest: (a, a), (aa, a), (aaa, b)

Either way the rule depends only on the text, so training gives the same merges on every run
and every machine. (Hugging Face `tokenizers` breaks ties by token id instead, and minbpe by
which pair it met first, so neither matches these exactly.)

Why this is fast (the naive loop recounts every pair of the whole text for each merge):
1. Each distinct chunk is stored once with its frequency ("the" appears thousands of
   times in English but is counted as one word with weight thousands).
2. Pair counts are kept up to date incrementally: a merge only touches the words that
   contain the merged pair, found through an index pair -> words.
3. The best pair comes from a heap; entries whose count went stale are skipped lazily.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import regex

from tinyllm.tokenizer.patterns import split_text

Pair = tuple[int, int]


def count_chunks(
    texts: Iterable[str], patterns: tuple[str, ...], special_tokens: Iterable[str] = ()
) -> Counter[bytes]:
    """Count each distinct pre-tokenized chunk (as UTF-8 bytes) over all texts.

    Special tokens are cut out first so they never become part of a chunk:

    count_chunks(["hi hi<|eot|>hi"], (GPT2_SPLIT_PATTERN,), ["<|eot|>"])
    -> Counter({b'hi': 2, b' hi': 1})
    """
    compiled = [regex.compile(p) for p in patterns]
    specials = sorted(special_tokens, key=len, reverse=True)
    special_re = regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None
    counts: Counter[str] = Counter()
    for text in texts:
        parts = special_re.split(text) if special_re is not None else [text]
        for part in parts:
            counts.update(split_text(part, compiled))
    return Counter({chunk.encode("utf-8"): n for chunk, n in counts.items()})


def merge_word(word: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `word`, left to right, by `new_id`.

    merge_word([1, 2, 3, 1, 2], (1, 2), 4) -> [4, 3, 4]
    merge_word([7, 7, 7], (7, 7), 8) -> [8, 7]      (non-overlapping, leftmost first)
    """
    a, b = pair
    out = []
    i, n = 0, len(word)
    while i < n:
        if word[i] == a and i + 1 < n and word[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


class _Descending:
    """Bytes that sort backwards, so that Python's min-heap pops the greatest first:
    _Descending(b"b") < _Descending(b"a") is True."""

    __slots__ = ("value",)

    def __init__(self, value: bytes) -> None:
        self.value = value

    def __lt__(self, other: _Descending) -> bool:
        return self.value > other.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and self.value == other.value

    __hash__ = None  # type: ignore[assignment]  # compared, never hashed


TIE_BREAKS = ("smallest", "greatest")


def learn_merges(
    chunk_counts: dict[bytes, int], n_tokens: int, verbose: bool = False, tie_break: str = "smallest"
) -> tuple[list[bytes], list[Pair]]:
    """Learn merges from chunk frequencies until the vocabulary holds `n_tokens` tokens.

    Returns (vocab, merges): merges are the merged pairs of token ids in the order they were
    learned (their rank), and vocab[i] is the byte string of token i: the 256 bytes, then
    merge k makes token 256 + k. Stops early when no pair is left (every chunk is one token).

    learn_merges({b"aaabdaaabac": 1}, 259)
    -> ([b"\\x00", ..., b"aa", b"ab", b"aaab"], [(97, 97), (97, 98), (256, 257)])
    learn_merges({b"aaabdaaabac": 1}, 259, tie_break="greatest")
    -> ([b"\\x00", ..., b"aa", b"aaa", b"aaab"], [(97, 97), (256, 97), (257, 98)])

    ``tie_break`` picks the winner among equally frequent pairs: "smallest" or "greatest"
    (bytes of left, bytes of right); see the module docstring.

    A merge never makes a byte string that is already a token: a stretch of text whose
    token boundaries line up with its ends is merged exactly as it would be on its own, so
    every copy of the same bytes goes through the same merges and becomes the same token.
    (BPETokenizer checks that its tokens are distinct.)
    """
    if tie_break not in TIE_BREAKS:
        raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
    vocab: list[bytes] = [bytes([i]) for i in range(256)]
    words: list[list[int]] = [list(chunk) for chunk in chunk_counts]
    freqs: list[int] = list(chunk_counts.values())

    # pair -> total count over all words (weighted by word frequency), and pair -> words holding it.
    # The index may keep words that no longer hold the pair: merging them then changes nothing.
    pair_counts: dict[Pair, int] = defaultdict(int)
    pair_words: dict[Pair, set[int]] = defaultdict(set)
    for w, (word, freq) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += freq
            pair_words[pair].add(w)

    # Max-heap by count via negation; ties go to the smallest (left bytes, right bytes), or with
    # "greatest" to the greatest (the bytes wrapped to sort backwards). The bytes name one pair
    # since tokens are distinct. A pair may have several entries: the count in an entry is the
    # pair's count when it was pushed. Every increase pushes a new entry; a decrease does not,
    # so an entry whose count is above the current one is stale and gets refreshed on pop.
    if tie_break == "smallest":

        def entry(pair: Pair) -> tuple[int, Any, Any, Pair]:
            return (-pair_counts[pair], vocab[pair[0]], vocab[pair[1]], pair)

    else:

        def entry(pair: Pair) -> tuple[int, Any, Any, Pair]:
            return (-pair_counts[pair], _Descending(vocab[pair[0]]), _Descending(vocab[pair[1]]), pair)

    heap = [entry(pair) for pair in pair_counts]
    heapq.heapify(heap)

    progress = None
    if verbose:
        from tqdm import tqdm

        progress = tqdm(total=max(n_tokens - len(vocab), 0), desc="BPE training", unit="token")

    merges: list[Pair] = []
    while len(vocab) < n_tokens and heap:
        neg_count, _, _, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count != -neg_count:
            if 0 < count < -neg_count:  # decreased since pushed: re-queue with the true count
                heapq.heappush(heap, entry(pair))
            continue  # (count above the entry's: a fresher entry is already in the heap)

        new_id = len(vocab)
        vocab.append(vocab[pair[0]] + vocab[pair[1]])
        merges.append(pair)
        if progress is not None:
            progress.update(1)
            progress.set_postfix_str(f"{vocab[new_id]!r} x{count}", refresh=False)

        # Update only the words that hold the pair: subtract their old pairs, add their new ones.
        for w in pair_words.pop(pair):
            old = words[w]
            new = merge_word(old, pair, new_id)
            if len(new) == len(old):
                continue  # stale index entry
            words[w] = new
            freq = freqs[w]
            delta: dict[Pair, int] = defaultdict(int)
            for p in zip(old, old[1:]):
                delta[p] -= 1
            for p in zip(new, new[1:]):
                delta[p] += 1
            for p, d in delta.items():
                if d == 0:
                    continue
                pair_counts[p] += d * freq
                if d > 0:
                    pair_words[p].add(w)
                    heapq.heappush(heap, entry(p))
                elif pair_counts[p] == 0:
                    del pair_counts[p]
    if progress is not None:
        progress.close()
    return vocab, merges
