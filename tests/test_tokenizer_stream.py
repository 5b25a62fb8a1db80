"""The streaming encoder (issue 18 item 15): ``encode_iterable`` gives exactly ``encode`` of the joined
text however the text is cut, and ``prepare_tokens`` tokenizes a file a chunk at a time."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import SHAKESPEARE
from hypothesis import given
from hypothesis import strategies as st

import tinyllm.data as data_module
from tinyllm.data import prepare_tokens
from tinyllm.tokenizer import BPETokenizer
from tinyllm.tokenizer.patterns import (
    GPT2_SPLIT_PATTERN,
    GPT4_SPLIT_PATTERN,
    LLAMA3_SPLIT_PATTERN,
    QWEN2_SPLIT_PATTERN,
    SMOLLM_PRE_TOKENIZER,
)
from tinyllm.tokenizer.stream import iter_id_blocks

EOT = "<|endoftext|>"
PATTERNS = {
    "gpt2": GPT2_SPLIT_PATTERN,
    "gpt4": GPT4_SPLIT_PATTERN,
    "llama3": LLAMA3_SPLIT_PATTERN,
    "qwen2": QWEN2_SPLIT_PATTERN,
    "smollm": SMOLLM_PRE_TOKENIZER,
}
# The characters where pre-tokens are decided: spaces before words, runs of whitespace and
# newlines (the look-ahead in \s+(?!\S)), contractions, digit groups, punctuation, non-ASCII.
ALPHABET = "ab  \n\r\t'sd1234.!é你" + EOT[:3]
CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n  All:\r\nSpeak,   speak.\n\n"
    "It's 2024 and we've 12345 reasons; don't we?   Spaces\t\tand tabs.\n\n\n你好 naïve café!!\n"
) * 4


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, BPETokenizer]:
    return {name: BPETokenizer.train(CORPUS, 330, pattern=p, special_tokens=[EOT]) for name, p in PATTERNS.items()}


def cut(text: str, cuts: list[int]) -> list[str]:
    """``text`` cut at the given positions (taken modulo its length): the pieces join back to it."""
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:])]


@given(
    text=st.lists(st.sampled_from([*ALPHABET, "!", "!", " sd", "\n\n", "  "]), max_size=80).map("".join),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
    chunk_chars=st.integers(1, 40),
    name=st.sampled_from(sorted(PATTERNS)),
    with_specials=st.booleans(),
)
def test_streaming_gives_the_ids_of_the_whole_text(tokenizers, text, cuts, chunk_chars, name, with_specials):
    tok = tokenizers[name]
    if with_specials:
        text = text.replace("!", EOT)  # special tokens, which the cuts may split in two
    mode = "all" if with_specials else "none"
    expected = tok.encode(text, allowed_special=mode)
    assert list(tok.encode_iterable(cut(text, cuts), allowed_special=mode, chunk_chars=chunk_chars)) == expected


def test_streaming_a_file_line_by_line_matches_encoding_it_whole(tokenizers, tmp_path):
    tok = tokenizers["gpt4"]
    text = SHAKESPEARE.read_text(encoding="utf-8")[:200_000]
    expected = tok.encode(text)
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    with open(path, encoding="utf-8") as f:
        assert list(tok.encode_iterable(f, chunk_chars=4096)) == expected
    # Chunks joined right where pre-tokens are decided: inside a word, inside a run of newlines.
    cuts = [text.index("Citizen") + 3, text.index("\n\n") + 1, text.index(" ", 500) + 1]
    assert list(tok.encode_iterable(cut(text, cuts), chunk_chars=100)) == expected


def test_worker_processes_give_the_same_ids_in_order(tokenizers):
    tok = tokenizers["gpt2"]
    text = (CORPUS + EOT) * 30
    expected = tok.encode(text, allowed_special="all")
    got = list(tok.encode_iterable(cut(text, list(range(7, len(text), 97))), allowed_special="all", chunk_chars=500,
                                   workers=2))
    assert got == expected


def test_a_disallowed_special_token_split_across_chunks_is_still_refused(tokenizers):
    tok = tokenizers["gpt4"]
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>' at character 6"):
        list(tok.encode_iterable(["hello <|endo", "ftext|> world"], chunk_chars=1))
    assert list(tok.encode_iterable(["hello <|endo", "ftext|>"], allowed_special="none", chunk_chars=1)) == (
        tok.encode("hello <|endoftext|>", allowed_special="none")
    )


def test_streaming_rejects_bad_input_clearly(tokenizers):
    tok = tokenizers["gpt4"]
    with pytest.raises(TypeError, match="for one string use encode"):
        tok.encode_iterable("a whole string")
    with pytest.raises(TypeError, match="one item is a bytes"):
        list(tok.encode_iterable(["ok", b"bytes"]))
    with pytest.raises(ValueError, match="at least 1"):
        tok.encode_iterable(["x"], chunk_chars=0)


def test_memory_is_bounded_by_the_chunk_not_the_text(tokenizers):
    """The peak of Python allocations while encoding in 8K-character chunks is the same for 100K and
    400K characters of text (a chunk's text, pre-tokens and ids), and far below what the whole
    text's pre-tokens and ids take at once."""
    tok = tokenizers["gpt4"]
    lines = CORPUS.splitlines(keepends=True)
    list(tok.encode_iterable(iter(lines * 2)))  # warm the chunk cache, whose size does not grow with the text

    def peak_bytes(n_chars: int) -> tuple[int, int]:
        text_lines = (line for _ in range(n_chars // len(CORPUS)) for line in lines)
        tracemalloc.start()
        try:
            n_ids = sum(len(block) for block in iter_id_blocks(tok, text_lines, chunk_chars=8192))
            return n_ids, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    n_small, small = peak_bytes(100_000)
    n_large, large = peak_bytes(400_000)
    assert n_large > 3.5 * n_small
    assert large < 1.1 * small, f"peak grew with the text: {small} -> {large} bytes"
    assert large < 1_000_000, f"peak {large} bytes"


def test_prepare_tokens_streams_the_file_and_gives_the_ids_of_each_whole_split(tmp_path, monkeypatch):
    text = SHAKESPEARE.read_text(encoding="utf-8")[:100_000].replace("\n", "\r\n", 50)  # some Windows newlines
    path = tmp_path / "text.txt"
    path.write_bytes(text.encode("utf-8"))
    tok = BPETokenizer.train(text, 300)
    tok.save(tmp_path / "tok.json")

    read_text = Path.read_text

    def no_whole_reads(self: Path, *args, **kwargs):
        if self == path:
            raise AssertionError("prepare_tokens must not read the whole text at once")
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", no_whole_reads)
    monkeypatch.setattr(data_module._build_token_files, "__defaults__", (1, 4096))  # workers 1, 4096-char chunks
    data = prepare_tokens(path, tmp_path / "tok.json", tmp_path / "cache")
    whole = text.replace("\r\n", "\n")  # text mode, as read_text gave before
    cut_at = int(len(whole) * 0.9)
    np.testing.assert_array_equal(data.train, tok.encode_ordinary(whole[:cut_at]))
    np.testing.assert_array_equal(data.val, tok.encode_ordinary(whole[cut_at:]))
    assert data.chars_per_token == pytest.approx((len(whole) - cut_at) / len(data.val))
