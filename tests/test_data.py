"""The data pipeline: token files cached by content, dtype choice, split, batches and their errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import to_numpy

import tinyllm as tl
from tinyllm import data as data_module
from tinyllm.data import TokenDataset, prepare_tokens, token_dtype, train_tokenizer_cached
from tinyllm.tokenizer import BPETokenizer, load_tokenizer

SAMPLE = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n"
) * 40


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(SAMPLE, encoding="utf-8")
    return path


@pytest.fixture
def tokenizer_file(text_file, tmp_path):
    return train_tokenizer_cached(text_file, vocab_size=300, cache_dir=tmp_path / "cache")


def count_builds(monkeypatch) -> list[int]:
    """Count calls of the function that (re)writes the token files."""
    calls = []
    build = data_module._build_token_files

    def counting(*args, **kwargs):
        calls.append(1)
        return build(*args, **kwargs)

    monkeypatch.setattr(data_module, "_build_token_files", counting)
    return calls


def test_token_dtype_is_the_smallest_that_fits():
    assert token_dtype(512) == np.uint16
    assert token_dtype(65536) == np.uint16  # ids 0..65535
    assert token_dtype(65537) == np.uint32


def test_split_is_90_10_by_characters_and_decodes_back(text_file, tokenizer_file, tmp_path):
    data = prepare_tokens(text_file, tokenizer_file, tmp_path / "cache")
    tokenizer = load_tokenizer(tokenizer_file)
    cut = int(len(SAMPLE) * 0.9)
    assert tokenizer.decode(data.train.tolist()) == SAMPLE[:cut]
    assert tokenizer.decode(data.val.tolist()) == SAMPLE[cut:]
    assert data.chars_per_token == pytest.approx((len(SAMPLE) - cut) / len(data.val))
    assert isinstance(data.train, np.memmap) and data.train.dtype == np.uint16
    assert data.vocab_size == 300 and data.tokenizer_path == tokenizer_file


def test_cache_is_reused_while_text_and_tokenizer_are_unchanged(text_file, tokenizer_file, tmp_path, monkeypatch):
    builds = count_builds(monkeypatch)
    first = prepare_tokens(text_file, tokenizer_file, tmp_path / "cache")
    second = prepare_tokens(text_file, tokenizer_file, tmp_path / "cache")
    assert len(builds) == 1
    np.testing.assert_array_equal(first.train, second.train)
    # The tokenizer is cached too: the same text and size give the same file, not a new training run.
    assert train_tokenizer_cached(text_file, 300, tmp_path / "cache") == tokenizer_file


def test_cache_is_rebuilt_when_the_text_changes_even_with_the_same_mtime(text_file, tokenizer_file, tmp_path, monkeypatch):
    builds = count_builds(monkeypatch)
    before = prepare_tokens(text_file, tokenizer_file, tmp_path / "cache")
    stat = text_file.stat()
    changed = SAMPLE.replace("Speak", "Spake")  # same length
    text_file.write_text(changed, encoding="utf-8")
    os.utime(text_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # hide the edit from an mtime check
    after = prepare_tokens(text_file, tokenizer_file, tmp_path / "cache")
    assert len(builds) == 2
    assert load_tokenizer(tokenizer_file).decode(after.train.tolist()) == changed[: int(len(changed) * 0.9)]
    assert not np.array_equal(np.asarray(before.train), np.asarray(after.train))


def test_cache_is_rebuilt_when_the_tokenizer_changes(text_file, tokenizer_file, tmp_path, monkeypatch):
    builds = count_builds(monkeypatch)
    small = prepare_tokens(text_file, tokenizer_file, tmp_path / "cache")
    bigger_tokenizer = train_tokenizer_cached(text_file, vocab_size=320, cache_dir=tmp_path / "cache")
    bigger = prepare_tokens(text_file, bigger_tokenizer, tmp_path / "cache")
    assert len(builds) == 2
    assert bigger.vocab_size == 320 and len(bigger.train) < len(small.train)  # more merges, fewer tokens


def test_cache_is_rebuilt_when_a_token_file_is_damaged(text_file, tokenizer_file, tmp_path, monkeypatch):
    builds = count_builds(monkeypatch)
    prepare_tokens(text_file, tokenizer_file, tmp_path / "cache")
    train_bin = tmp_path / "cache" / "corpus.train.bin"
    train_bin.write_bytes(train_bin.read_bytes()[:10])  # truncated
    data = prepare_tokens(text_file, tokenizer_file, tmp_path / "cache")
    assert len(builds) == 2 and len(data.train) * 2 == train_bin.stat().st_size


def test_a_vocabulary_above_65536_uses_uint32(tmp_path):
    # 256 bytes + 65,300 three-byte tokens: no merges are needed to check the storage type.
    vocab = [bytes([b]) for b in range(256)] + [i.to_bytes(3, "big") for i in range(256, 65556)]
    tokenizer_path = tmp_path / "big.json"
    BPETokenizer(vocab, merges=[]).save(tokenizer_path)
    text_path = tmp_path / "t.txt"
    text_path.write_text("hello world " * 20)
    data = prepare_tokens(text_path, tokenizer_path, tmp_path / "cache")
    assert data.vocab_size == 65556 and data.train.dtype == np.uint32
    assert bytes(data.train[:5].astype(np.uint8)) == b"hello"


def counting_dataset(n_train: int = 1000, n_val: int = 100) -> TokenDataset:
    """Token i at position i: a batch row then shows its offset plainly."""
    return TokenDataset(
        train=np.arange(n_train, dtype=np.uint16),
        val=np.arange(n_val, dtype=np.uint16),
        vocab_size=n_train,
        chars_per_token=1.0,
        tokenizer_path=None,
    )


def test_batches_have_shape_b_t_and_y_is_x_shifted_by_one():
    x, y = counting_dataset().get_batch("train", batch_size=4, block_size=8)
    x, y = to_numpy(x), to_numpy(y)
    assert x.shape == y.shape == (4, 8) and x.dtype == np.int64
    for row_x, row_y in zip(x, y):
        start = row_x[0]
        np.testing.assert_array_equal(row_x, np.arange(start, start + 8))  # a contiguous slice
        np.testing.assert_array_equal(row_y, row_x + 1)  # the next token at every position
    assert x.min() >= 0 and y.max() <= 999  # never reads past the end


def test_batches_come_from_the_backend_rng_so_a_seed_reproduces_them():
    data = counting_dataset()
    tl.set_backend("numpy", seed=7)
    first = to_numpy(data.get_batch("train", 4, 8)[0])
    tl.set_backend("numpy", seed=7)
    again = to_numpy(data.get_batch("train", 4, 8)[0])
    np.testing.assert_array_equal(first, again)
    explicit = to_numpy(data.get_batch("val", 4, 8, rng=np.random.default_rng(0))[0])
    assert explicit.max() < 100  # the val split


def test_a_split_shorter_than_the_context_is_a_clear_error():
    data = counting_dataset(n_train=1000, n_val=16)
    with pytest.raises(ValueError, match=r"the val split has 16 tokens, but one batch row needs block_size \+ 1 = 17"):
        data.get_batch("val", batch_size=2, block_size=16)
    data.get_batch("val", batch_size=2, block_size=15)  # 16 tokens are exactly enough for T = 15

