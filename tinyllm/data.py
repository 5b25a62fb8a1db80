"""The data pipeline: text file -> tokenizer -> token files on disk -> random (x, y) batches.

    tokenizer_path = train_tokenizer_cached("tinyshakespeare.txt", vocab_size=512, cache_dir="out/cache")
    data = prepare_tokens("tinyshakespeare.txt", tokenizer_path, cache_dir="out/cache")
    x, y = data.get_batch("train", batch_size=16, block_size=128)   # (16, 128) each, y is x shifted by one

What is on disk, in ``cache_dir`` (as nanoGPT's ``prepare.py`` writes train.bin / val.bin)::

    tokenizer-512-<text hash>.json     the trained tokenizer (BPE training is deterministic)
    <name>.train.bin, <name>.val.bin   token ids, raw uint16 (uint32 when the vocabulary has more than 65,536)
    <name>.meta.json                   what they were built from: the SHA-256 of the text and of the
                                       tokenizer file, the dtype, counts and the val split's characters per token

The text is read, encoded and written a chunk at a time (``BPETokenizer.encode_iterable``), so a
text of any size tokenizes in bounded memory. The token files are built once and reused while the
text and the tokenizer are unchanged (their hashes match ``meta.json``); change either and they are
rebuilt. Batches are read from a ``numpy.memmap``, so the whole token file never has to be in memory.

The split is by characters, as nanoGPT: the first 90% of the text is for training and the
rest for validation, each encoded on its own. Encoding the val text alone gives its exact
character count per token, which turns a loss in nats per token into bits per character::

    bits per character = loss / (ln 2 * characters per token)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .backends import get_backend
from .fileio import atomic_open, atomic_write, sha256_file
from .tokenizer import BPETokenizer, load_tokenizer
from .tokenizer.stream import DEFAULT_CHUNK_CHARS as STREAM_CHUNK_CHARS
from .tokenizer.stream import iter_id_blocks

CACHE_VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype holding every id: ``token_dtype(512) -> uint16``, ``token_dtype(100_000) -> uint32``."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def train_tokenizer_cached(text_path: str | os.PathLike, vocab_size: int, cache_dir: str | os.PathLike) -> Path:
    """Train a byte-level BPE tokenizer on a text file, or reuse the one trained before; return its path.

    The file name carries the vocabulary size and the text's hash, so a changed text or size
    trains a new tokenizer: ``cache_dir/tokenizer-512-3f9c0a1b2d4e.json``.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / f"tokenizer-{vocab_size}-{sha256_file(text_path)[:12]}.json"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tokenizer = BPETokenizer.train(Path(text_path).read_text(encoding="utf-8"), vocab_size)
        tmp = path.with_name(f".{path.name}.tmp")
        tokenizer.save(tmp)
        os.replace(tmp, path)  # never leave a half-written tokenizer under the final name
    return path


@dataclass
class TokenDataset:
    """The train and val token ids of one text, with the numbers the training loop needs.

    Attributes:
        train, val: 1-D arrays of token ids (memory maps of the ``.bin`` files).
        vocab_size: the tokenizer's vocabulary size.
        chars_per_token: characters per token on the val split (for bits per character).
        tokenizer_path: the tokenizer file the ids come from (saved with every checkpoint).
    """

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    chars_per_token: float
    tokenizer_path: Path
    text_sha256: str = ""

    def split(self, name: str) -> np.ndarray:
        if name not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {name!r}")
        return self.train if name == "train" else self.val

    def check_block_size(self, block_size: int) -> None:
        """Raise a clear ``ValueError`` if a split is too short to cut one (x, y) pair of ``block_size`` tokens."""
        for name in ("train", "val"):
            n = len(self.split(name))
            if n < block_size + 1:
                raise ValueError(
                    f"the {name} split has {n} tokens, but one batch row needs block_size + 1 = {block_size + 1} "
                    f"(block_size inputs and the next token of each); use a smaller block size (--block-size) "
                    f"or a longer text"
                )

    def get_batch(self, split: str, batch_size: int, block_size: int, rng: Any = None) -> tuple[Any, Any]:
        """A random batch: ``x`` (B, T) token ids and ``y`` (B, T), ``y`` being ``x`` shifted one to the left.

        Row b starts at a random offset i: x[b] = tokens[i : i+T], y[b] = tokens[i+1 : i+T+1],
        so y[b, t] is the token that follows x[b, :t+1]. With tokens = [5, 6, 7, 8, 9] and
        T = 3, an offset of 1 gives x = [6, 7, 8] and y = [7, 8, 9].

        ``rng`` picks the offsets: training passes a host ``numpy.random.Generator`` (whose state a
        checkpoint saves); by default the backend's generator, so ``set_backend(..., seed=s)``
        reproduces the batches. Returns backend arrays of int64 (on the GPU for CuPy): the rows are
        read from the memory map on the host and copied to the device once, in one piece.
        """
        tokens = self.split(split)
        self.check_block_size(block_size)
        backend = get_backend()
        rng = backend.rng if rng is None else rng
        starts = backend.to_host(rng.integers(0, len(tokens) - block_size, size=batch_size))  # (B,)
        positions = starts[:, None] + np.arange(block_size + 1)  # (B, T+1)
        rows = backend.asarray(np.asarray(tokens[positions], dtype=np.int64))  # (B, T+1): one host-to-device copy
        return rows[:, :-1], rows[:, 1:]  # (B, T), (B, T): views of the same rows


def prepare_tokens(
    text_path: str | os.PathLike,
    tokenizer_path: str | os.PathLike,
    cache_dir: str | os.PathLike,
    val_fraction: float = 0.1,
    workers: int = 1,
) -> TokenDataset:
    """Tokenize ``text_path`` with the tokenizer file into ``cache_dir`` (or reuse what is there) and map it.

    Rebuilds the token files when the text's or the tokenizer file's SHA-256 differs from the
    recorded one (editing either, even keeping its modification time, triggers a rebuild).
    The text is streamed, so a file of any size tokenizes in bounded memory (about a chunk of
    text and its ids per process); ``workers`` > 1 encodes chunks in that many processes.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    text_path, tokenizer_path, cache_dir = Path(text_path), Path(tokenizer_path), Path(cache_dir)
    stem = text_path.stem
    meta_path = cache_dir / f"{stem}.meta.json"
    bin_paths = {split: cache_dir / f"{stem}.{split}.bin" for split in ("train", "val")}
    wanted = {
        "version": CACHE_VERSION,
        "text_sha256": sha256_file(text_path),
        "tokenizer_sha256": sha256_file(tokenizer_path),
        "val_fraction": val_fraction,
    }
    meta = _read_meta(meta_path)
    if not _cache_is_valid(meta, wanted, bin_paths):
        meta = _build_token_files(text_path, tokenizer_path, cache_dir, meta_path, bin_paths, wanted, workers)
    dtype = np.dtype(meta["dtype"])
    return TokenDataset(
        train=_map_tokens(bin_paths["train"], dtype, meta["n_train"]),
        val=_map_tokens(bin_paths["val"], dtype, meta["n_val"]),
        vocab_size=meta["vocab_size"],
        chars_per_token=meta["val_chars_per_token"],
        tokenizer_path=tokenizer_path,
        text_sha256=meta["text_sha256"],
    )


def _build_token_files(
    text_path: Path,
    tokenizer_path: Path,
    cache_dir: Path,
    meta_path: Path,
    bin_paths: dict[str, Path],
    wanted: dict,
    workers: int = 1,
    chunk_chars: int = STREAM_CHUNK_CHARS,
) -> dict:
    """Encode the two splits and write them; ``meta.json`` is written last, so it only ever describes complete files.

    The text is streamed (``BPETokenizer.encode_iterable``): a pass counts its characters to place the
    split, then each split is read, encoded and written ``chunk_chars`` characters at a time, so a text
    of any size needs memory for a chunk, not for the text or its ids. The ids are those of encoding
    each split whole.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # from here until the new meta exists, the cache counts as absent
    tokenizer = load_tokenizer(tokenizer_path)
    n_chars = sum(len(block) for block in _read_blocks(text_path, chunk_chars))
    cut = int(n_chars * (1.0 - wanted["val_fraction"]))
    dtype = token_dtype(tokenizer.vocab_size)
    counts = {}
    with open(text_path, encoding="utf-8") as f:  # text mode as read_text: "\r\n" reads as "\n"
        for split, n_split in (("train", cut), ("val", n_chars - cut)):
            blocks = iter_id_blocks(
                tokenizer, _take(f, n_split, chunk_chars), "none", chunk_chars=chunk_chars, workers=workers
            )
            counts[split] = (n_split, _write_ids(bin_paths[split], blocks, dtype))
    val_chars, n_val = counts["val"]
    meta = {
        **wanted,
        "text_path": str(text_path),
        "tokenizer_path": str(tokenizer_path),
        "vocab_size": tokenizer.vocab_size,
        "dtype": dtype.name,
        "n_train": counts["train"][1],
        "n_val": n_val,
        "val_chars_per_token": val_chars / max(n_val, 1),
    }
    atomic_write(meta_path, (json.dumps(meta, indent=2) + "\n").encode())
    return meta


def _read_blocks(path: Path, chunk_chars: int) -> Iterator[str]:
    """The text of a file, ``chunk_chars`` characters at a time (UTF-8, newlines as ``read_text`` gives them)."""
    with open(path, encoding="utf-8") as f:
        while block := f.read(chunk_chars):
            yield block


def _take(f: TextIO, n_chars: int, chunk_chars: int) -> Iterator[str]:
    """The next ``n_chars`` characters of an open text file, in blocks of at most ``chunk_chars``."""
    while n_chars > 0:
        block = f.read(min(n_chars, chunk_chars))
        if not block:
            raise ValueError(f"{f.name} ended early: was it changed while being tokenized?")
        n_chars -= len(block)
        yield block


def _write_ids(path: Path, blocks: Iterable[list[int]], dtype: np.dtype) -> int:
    """Write blocks of ids to ``path`` as raw ``dtype``, crash-safe (``fileio.atomic_open``); return how many."""
    count = 0
    with atomic_open(path) as f:
        for block in blocks:
            f.write(np.asarray(block, dtype=dtype).tobytes())
            count += len(block)
    return count


def _cache_is_valid(meta: dict | None, wanted: dict, bin_paths: dict[str, Path]) -> bool:
    """True when ``meta`` was built from the wanted text and tokenizer and both token files have the recorded size."""
    if meta is None or any(meta.get(key) != value for key, value in wanted.items()):
        return False
    itemsize = np.dtype(meta["dtype"]).itemsize
    return all(
        path.exists() and path.stat().st_size == meta[f"n_{split}"] * itemsize for split, path in bin_paths.items()
    )


def _read_meta(path: Path) -> dict | None:
    """The cache's meta.json, or None when it is missing or unreadable (the cache is then rebuilt)."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _map_tokens(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    """A read-only memory map of ``count`` token ids (NumPy cannot map an empty file: use an empty array)."""
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))
