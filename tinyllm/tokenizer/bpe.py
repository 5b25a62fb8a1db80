"""The byte-level BPE tokenizer: encode text to token ids and decode them back.

A token is a byte string. The vocabulary holds the 256 single bytes plus the byte strings
made by merges, and a few special tokens (like "<|endoftext|>") that stand for themselves.
Encoding cuts the text into chunks with the pre-tokenizer (patterns.py), turns each chunk
into its UTF-8 bytes, and then applies the merges, always the one learned earliest
(lowest rank) first, until no merge applies:

    merges: (a, a) -> "aa" rank 0, (a, b) -> "ab" rank 1, ("aa", "ab") -> "aaab" rank 2
    "aaabdaaabac" -> a a a b d a a a b a c -> aa a b d aa a b a c -> aa ab d aa ab a c
                  -> aaab d aaab a c

Decoding concatenates the tokens' bytes and reads them as UTF-8. The same class serves
tokenizers trained here (train.py) and those of real models (pretrained.py): a vocabulary
is a list of distinct byte strings, merges are pairs of token ids in rank order.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import regex

from tinyllm.tokenizer.checks import bad_id, check_ids_container, check_text
from tinyllm.tokenizer.file_format import read_tokenizer_file, write_tokenizer_file
from tinyllm.tokenizer.patterns import GPT4_SPLIT_PATTERN, compile_patterns, split_text
from tinyllm.tokenizer.stream import DEFAULT_CHUNK_CHARS, iter_id_blocks
from tinyllm.tokenizer.train import TIE_BREAKS, count_chunks, learn_merges, merge_word

DEFAULT_CACHE_SIZE = 1 << 16  # chunks whose encoding is remembered (most text repeats its words)


class BPETokenizer:
    """Byte-level BPE tokenizer.

    Args:
        vocab: vocab[i] is the byte string of token i. Every token is distinct, and the 256
            single bytes must all be there (so any text can be encoded). The entry of a
            special token is its text in UTF-8.
        merges: pairs (left id, right id) in rank order; merging a pair gives the token whose
            bytes are the two joined, which must be in `vocab`.
        pattern: the pre-tokenizer regex, or several applied in turn (see patterns.py).
        special_tokens: text -> id of the tokens that are matched as a whole, never merged.
        ignore_merges: a chunk that is itself a token is emitted whole, without BPE
            (Llama 3's tokenizer works this way).
        unk_id: the token for bytes that have no token of their own. Real vocabularies can
            lack a few bytes that never occurred in their training data (SmolLM2 lacks 21,
            such as 0x04); Hugging Face encodes each such byte as the unknown token. Without
            an unk_id, encoding text with such a byte raises ValueError.
        bos_id, eos_id, chat_template: carried along for models that define them.

    Example:
        tok = BPETokenizer.train("aaabdaaabac", vocab_size=260)
        tok.encode("aaabdaaabac") -> [258, 100, 258, 97, 99]
        tok.decode([258, 100]) -> "aaabd"
    """

    def __init__(
        self,
        vocab: Sequence[bytes],
        merges: Sequence[tuple[int, int]],
        pattern: str | Sequence[str] = GPT4_SPLIT_PATTERN,
        special_tokens: Mapping[str, int] | None = None,
        *,
        ignore_merges: bool = False,
        unk_id: int | None = None,
        bos_id: int | None = None,
        eos_id: int | None = None,
        chat_template: str | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self._vocab: list[bytes] = [bytes(t) for t in vocab]
        self._special_tokens: dict[str, int] = dict(special_tokens or {})
        self.patterns: tuple[str, ...] = (pattern,) if isinstance(pattern, str) else tuple(pattern)
        self._compiled = compile_patterns(self.patterns)
        self.ignore_merges = ignore_merges
        self.chat_template = chat_template
        n = len(self._vocab)

        for text, i in self._special_tokens.items():
            if not text:
                raise ValueError("a special token cannot be the empty string")
            if not 0 <= i < n:
                raise ValueError(f"special token {text!r} has id {i}, outside the vocabulary of {n} tokens")
            if self._vocab[i] != text.encode("utf-8"):
                raise ValueError(f"vocab[{i}] is {self._vocab[i]!r}, but special token {text!r} has that id")
        special_ids = set(self._special_tokens.values())
        if len(special_ids) != len(self._special_tokens):
            raise ValueError("two special tokens share one id")

        # bytes -> id of the ordinary tokens (the ones BPE can produce).
        self._token_ids: dict[bytes, int] = {}
        for i, token in enumerate(self._vocab):
            if i in special_ids:
                continue
            if token in self._token_ids:
                raise ValueError(
                    f"token {token!r} appears twice in the vocabulary (ids {self._token_ids[token]}, {i})"
                )
            self._token_ids[token] = i
        for name, i in (("unk_id", unk_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            if i is not None and not 0 <= i < n:
                raise ValueError(f"{name} {i} is outside the vocabulary of {n} tokens")
        self.unk_id = unk_id
        self.bos_id = bos_id
        self.eos_id = eos_id
        # byte value -> id of its single-byte token (unk_id, or None, where the vocabulary has none).
        self._byte_ids: list[int | None] = [self._token_ids.get(bytes([b]), unk_id) for b in range(256)]
        self._missing_bytes = None in self._byte_ids

        # (left, right) -> rank, and (left, right) -> id of the merged token.
        self._merges: list[tuple[int, int]] = []
        self._merge_ranks: dict[tuple[int, int], int] = {}
        self._merge_ids: dict[tuple[int, int], int] = {}
        for a, b in merges:
            a, b = int(a), int(b)
            if a in special_ids or b in special_ids or not (0 <= a < n and 0 <= b < n):
                raise ValueError(f"merge ({a}, {b}) names an id that is not an ordinary token")
            merged = self._token_ids.get(self._vocab[a] + self._vocab[b])
            if merged is None:
                raise ValueError(
                    f"merge ({a}, {b}) gives {self._vocab[a] + self._vocab[b]!r}, "
                    "which is not in the vocabulary"
                )
            if (a, b) not in self._merge_ranks:  # a repeated merge keeps its first (best) rank
                self._merge_ranks[a, b] = len(self._merges)
                self._merge_ids[a, b] = merged
                self._merges.append((a, b))

        self._special_re = self._alternation(self._special_tokens)
        self._encode_chunk = functools.lru_cache(maxsize=cache_size)(self._bpe)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the chunk cache (a bound method's cache cannot be pickled; worker
        processes of ``encode_iterable(..., workers=n)`` receive the tokenizer this way)."""
        state = self.__dict__.copy()
        state["_cache_size"] = self._encode_chunk.cache_info().maxsize
        del state["_encode_chunk"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        cache_size = state.pop("_cache_size")
        self.__dict__.update(state)
        self._encode_chunk = functools.lru_cache(maxsize=cache_size)(self._bpe)

    # ---------------------------------------------------------------- training

    @classmethod
    def train(
        cls,
        text: str | Iterable[str],
        vocab_size: int,
        pattern: str | Sequence[str] = GPT4_SPLIT_PATTERN,
        special_tokens: Sequence[str] = ("<|endoftext|>",),
        verbose: bool = False,
        tie_break: str = "smallest",
    ) -> BPETokenizer:
        """Learn a tokenizer of `vocab_size` tokens (256 bytes + merges + special tokens).

        `text` is one string or an iterable of strings (documents). Special tokens take the
        last ids; text equal to a special token is cut out before training, never merged.
        The vocabulary comes out smaller when the text runs out of pairs to merge.
        Ties between equally frequent pairs go to the smallest pair by default, or with
        ``tie_break="greatest"`` to the greatest, as GPT-2-style reference trainers do (comparing
        the pairs' bytes; see train.py). Either way the result is the same on every run.

        BPETokenizer.train("aaabdaaabac", 260).merges -> [(97, 97), (97, 98), (256, 257)]
        (ids 256-258 are "aa", "ab", "aaab"; id 259 is "<|endoftext|>")
        BPETokenizer.train("aaabdaaabac", 260, tie_break="greatest").merges -> [(97, 97), (256, 97), (257, 98)]
        """
        specials = list(special_tokens)
        if len(set(specials)) != len(specials) or not all(isinstance(s, str) and s for s in specials):
            raise ValueError(f"special tokens must be distinct non-empty strings, got {specials!r}")
        if vocab_size < 256 + len(specials):
            raise ValueError(
                f"vocab_size {vocab_size} is too small: it must hold the 256 bytes "
                f"and {len(specials)} special tokens"
            )
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break must be one of {TIE_BREAKS}, got {tie_break!r}")
        patterns = (pattern,) if isinstance(pattern, str) else tuple(pattern)
        compile_patterns(patterns)  # fail early on a bad pattern
        texts = [text] if isinstance(text, str) else text
        chunk_counts = count_chunks(texts, patterns, specials)
        vocab, merges = learn_merges(chunk_counts, vocab_size - len(specials), verbose=verbose, tie_break=tie_break)
        special_ids = {s: len(vocab) + k for k, s in enumerate(specials)}
        vocab = vocab + [s.encode("utf-8") for s in specials]
        return cls(vocab, merges, patterns, special_ids)

    # ---------------------------------------------------------------- real models

    @classmethod
    def from_gguf(cls, path_or_reader: str | os.PathLike | Any) -> BPETokenizer:
        """The tokenizer in a GGUF file's metadata (a path or a gguf.GGUFReader); see pretrained.py."""
        from tinyllm.tokenizer.pretrained import from_gguf

        return from_gguf(path_or_reader)

    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike) -> BPETokenizer:
        """The tokenizer in a Hugging Face tokenizer.json (byte-level BPE); see pretrained.py."""
        from tinyllm.tokenizer.pretrained import from_tokenizer_json

        return from_tokenizer_json(path)

    # ---------------------------------------------------------------- encoding

    def _bpe(self, chunk: str) -> tuple[int, ...]:
        """Encode one pre-tokenized chunk: its bytes, then merges by rank (lowest first).

        The caller goes through `self._encode_chunk`, a bounded cache of this function.
        """
        try:
            data = chunk.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"the text holds {chunk[e.start]!r} (U+{ord(chunk[e.start]):04X}), a lone surrogate, which is not a "
                "character and has no UTF-8 bytes; it comes from decoding bytes with errors='surrogateescape' or "
                "from a broken UTF-16 text: clean the text, e.g. text.encode('utf-8', 'replace').decode('utf-8')"
            ) from None
        if self.ignore_merges:
            whole = self._token_ids.get(data)
            if whole is not None:
                return (whole,)
        byte_ids = self._byte_ids
        ids = [byte_ids[b] for b in data]
        if self._missing_bytes and None in ids:
            b = data[ids.index(None)]
            raise ValueError(
                f"the text holds byte 0x{b:02x} (in {chunk!r}), which has no token in this vocabulary, "
                "and the tokenizer has no unknown token"
            )
        ranks = self._merge_ranks
        never = len(ranks)  # a rank above every real one, for pairs that have no merge
        while len(ids) >= 2:
            # The adjacent pair learned earliest; its every occurrence is merged at once.
            pair = min(zip(ids, ids[1:]), key=lambda p: ranks.get(p, never))
            if pair not in ranks:
                break
            ids = merge_word(ids, pair, self._merge_ids[pair])
        return tuple(ids)

    def clear_cache(self) -> None:
        """Forget the remembered chunk encodings (to time encoding from a cold start)."""
        self._encode_chunk.cache_clear()

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode `text` treating special-token text as ordinary text.

        tok.encode_ordinary("<|endoftext|>") gives the tokens of "<", "|", "endoftext", ...
        """
        check_text(text, "encode_ordinary")
        ids: list[int] = []
        encode_chunk = self._encode_chunk
        for chunk in split_text(text, self._compiled):
            ids.extend(encode_chunk(chunk))
        return ids

    def encode(self, text: str, allowed_special: str | Iterable[str] = "none_raise") -> list[int]:
        """Encode text to token ids.

        allowed_special decides what happens to the text of special tokens, as in tiktoken:
            "none_raise" (default): any special-token text raises ValueError, since text from
                users should not be able to inject control tokens by accident;
            "all": every special token is encoded as its own id;
            "none": special-token text is encoded as ordinary text;
            a set of names: those become their ids; the others raise ValueError.

        tok.encode("hi<|endoftext|>", allowed_special="all") -> [..., id of "<|endoftext|>"]
        """
        check_text(text, "encode")
        allowed, disallowed = self._allowed_specials(allowed_special)
        if disallowed:
            found = self._special_pattern(disallowed).search(text)
            if found:
                raise ValueError(
                    f"the text contains the special token {found.group()!r} at character {found.start()}. "
                    "Pass allowed_special='all' (or a set holding it) to encode it as a special token, "
                    "or allowed_special='none' to encode it as ordinary text."
                )
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for m in self._special_pattern(allowed).finditer(text):
            ids.extend(self.encode_ordinary(text[start : m.start()]))
            ids.append(self._special_tokens[m.group()])
            start = m.end()
        ids.extend(self.encode_ordinary(text[start:]))
        return ids

    def encode_batch(
        self, texts: Iterable[str], allowed_special: str | Iterable[str] = "none_raise"
    ) -> list[list[int]]:
        """Encode each text: encode_batch(["a", "b"]) -> [encode("a"), encode("b")]."""
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of strings, got one str; use encode(text) for a single text")
        texts = list(texts)
        for k, t in enumerate(texts):
            check_text(t, f"encode_batch (item {k})")
        return [self.encode(t, allowed_special=allowed_special) for t in texts]

    def encode_iterable(
        self,
        texts: Iterable[str],
        allowed_special: str | Iterable[str] = "none_raise",
        *,
        chunk_chars: int = DEFAULT_CHUNK_CHARS,
        workers: int = 1,
    ) -> Iterator[int]:
        """Yield the ids of ``"".join(texts)``, exactly as ``encode`` gives them, in bounded memory.

        ``texts`` is any iterable of strings: the lines of an open file, or chunks of a text too
        big to hold. About ``chunk_chars`` characters are held and encoded at a time; a
        pre-token is never cut between two chunks (how: stream.py). ``workers`` > 1 encodes the
        chunks in that many processes (ids still in order).

        with open("big.txt", encoding="utf-8") as f:
            for token_id in tok.encode_iterable(f, allowed_special="none"):
                ...

        list(tok.encode_iterable(["To be, or no", "t to be"])) == tok.encode("To be, or not to be")

        ``tinyllm.tokenizer.stream.iter_id_blocks`` gives the same ids as NumPy arrays, a chunk's
        at a time (what ``prepare_tokens`` writes to its token files).
        """
        if isinstance(texts, str):
            raise TypeError("encode_iterable takes an iterable of strings (lines or chunks); for one string use encode()")
        if chunk_chars < 1 or workers < 1:
            raise ValueError(f"chunk_chars and workers must be at least 1, got {chunk_chars} and {workers}")
        self._allowed_specials(allowed_special)  # a bad value fails now, not at the first id
        blocks = iter_id_blocks(self, texts, allowed_special, chunk_chars=chunk_chars, workers=workers)
        return (i for block in blocks for i in block.tolist())

    def _allowed_specials(self, allowed_special: str | Iterable[str]) -> tuple[set[str], set[str]]:
        """Split the special tokens into (allowed, disallowed) for one call of encode."""
        names = set(self._special_tokens)
        if allowed_special == "all":
            return names, set()
        if allowed_special == "none":
            return set(), set()
        if allowed_special == "none_raise":
            return set(), names
        if isinstance(allowed_special, str):
            raise ValueError(
                f"allowed_special must be 'all', 'none', 'none_raise' or a set of special tokens, "
                f"got {allowed_special!r}"
            )
        allowed = set(allowed_special)
        unknown = allowed - names
        if unknown:
            raise ValueError(f"unknown special tokens in allowed_special: {sorted(unknown)!r}")
        return allowed, names - allowed

    def _special_pattern(self, names: set[str]) -> regex.Pattern:
        """A regex matching any of the special tokens `names` literally (all of them: cached)."""
        if len(names) == len(self._special_tokens):
            return self._special_re
        return self._alternation(names)

    @staticmethod
    def _alternation(texts: Iterable[str]) -> regex.Pattern:
        """A regex matching any of `texts` literally. Longest first, so that a special token
        wins over another one that is its prefix."""
        escaped = [regex.escape(t) for t in sorted(texts, key=len, reverse=True)]
        return regex.compile("|".join(escaped) if escaped else r"(?!)")  # (?!) never matches

    # ---------------------------------------------------------------- decoding

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Join the bytes of the tokens: decode_bytes([104, 105]) -> b"hi".

        ``ids`` is one sequence of integer ids (a list, a tuple, a 1-D NumPy array). Raises
        ValueError naming the first id outside the vocabulary, and TypeError, saying what to
        pass instead, for anything that is not a sequence of integers.
        """
        check_ids_container(ids)
        vocab = self._vocab
        n = len(vocab)
        parts = []
        i = None
        try:
            for i in ids:
                if not 0 <= i < n:
                    raise ValueError(f"token id {i} is out of range: the vocabulary has ids 0 to {n - 1}")
                parts.append(vocab[i])
        except (TypeError, ValueError) as e:
            problem = bad_id(i, len(parts))  # the id at position len(parts) failed
            if problem is None:
                raise
            raise TypeError(problem) from e
        return b"".join(parts)

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text. Byte sequences that are not valid UTF-8 (a token boundary can
        fall inside a character) become U+FFFD "\ufffd" rather than raising:

        decode([0xE2]) -> "\ufffd"   (the first byte of "€" alone)
        """
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ---------------------------------------------------------------- vocabulary

    @property
    def vocab_size(self) -> int:
        """Number of token ids, special tokens included."""
        return len(self._vocab)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token text -> id (a copy)."""
        return dict(self._special_tokens)

    @property
    def merges(self) -> list[tuple[int, int]]:
        """The merges as (left id, right id), in rank order (a copy)."""
        return list(self._merges)

    def id_to_token(self, id: int) -> bytes:
        """The bytes of token `id`: id_to_token(104) -> b"h" for a trained tokenizer."""
        problem = bad_id(id, 0)
        if problem is not None:
            raise TypeError(problem.replace("the id at position 0", "the id"))
        if not 0 <= id < len(self._vocab):
            raise ValueError(
                f"token id {id} is out of range: the vocabulary has ids 0 to {len(self._vocab) - 1}"
            )
        return self._vocab[id]

    def token_to_id(self, token: str | bytes) -> int:
        """The id of a token given as bytes, or as text (UTF-8; special tokens by name).

        token_to_id(b"h") -> 104; token_to_id("<|endoftext|>") -> its id. KeyError if absent.
        (An ordinary token wins over a special token with the same bytes.)
        """
        if isinstance(token, str):
            if token in self._special_tokens:
                return self._special_tokens[token]
            token = token.encode("utf-8")
        token = bytes(token)
        if token in self._token_ids:
            return self._token_ids[token]
        special = self._special_tokens.get(token.decode("utf-8", errors="replace"))
        if special is None:
            raise KeyError(f"{token!r} is not a token of this vocabulary")
        return special

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Render a conversation with the model's chat template (see chat.py).

        For SmolLM2: [{"role": "user", "content": "Hi"}] ->
        "<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by ...<|im_end|>\\n"
        "<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n"
        (the default system message is the template's; bos_token and eos_token are passed to it)
        """
        from tinyllm.tokenizer.chat import render_chat_template

        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template")
        special_text = {"bos_token": self.bos_id, "eos_token": self.eos_id}
        for name, i in special_text.items():
            if i is not None and name not in kwargs:
                kwargs[name] = self._vocab[i].decode("utf-8", errors="replace")
        return render_chat_template(self.chat_template, messages, add_generation_prompt, **kwargs)

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self._merges)}, "
            f"special_tokens={len(self._special_tokens)})"
        )

    # ---------------------------------------------------------------- files

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as versioned, readable JSON (see file_format.py)."""
        write_tokenizer_file(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """Read a file written by `save`. A file that is not one, is damaged, or has another
        format version raises ValueError saying which."""
        kwargs = read_tokenizer_file(path)
        try:
            return cls(**kwargs)
        except ValueError as e:
            raise ValueError(f"{path}: damaged tokenizer file: {e}") from e

