"""Two file helpers that checkpoints and the data cache share: hashing and crash-safe writes.

A plain ``open(path, "wb").write(data)`` that is interrupted (Ctrl-C, a full disk, a power
cut) leaves a truncated file where the good one used to be. ``atomic_write`` never does:

    1. write the bytes to a temporary file in the same directory;
    2. flush Python's buffer and ``fsync`` (ask the OS to put the bytes on disk);
    3. ``os.replace`` the temporary file onto the target: a rename, which the OS performs
       atomically, so a reader sees either the old file or the new one, never half of each;
    4. ``fsync`` the directory, so the rename itself survives a power cut (POSIX only).

    >>> atomic_write("notes.txt", b"hello")
    >>> sha256_file("notes.txt")[:12]
    '2cf24dba5fb0'
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``: ``sha256_bytes(b"hello")[:12] -> '2cf24dba5fb0'``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (so large files need little memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """``with atomic_open(path) as f: f.write(...)``: ``path`` gets all that was written, or keeps its old content.

    The steps 1-4 above around the body of the ``with``: if it raises (or is interrupted), the
    temporary file is removed and ``path`` is untouched. For files written piece by piece.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private (0600); give it the usual permissions
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of ``data``."""
    with atomic_open(path) as f:
        f.write(data)


def _umask() -> int:
    """The process's file-creation mask (reading it means setting it, so set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make renames inside ``directory`` durable (POSIX; Windows cannot open a directory, and needs no such call)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_versioned_json(
    path: str | os.PathLike, format_name: str, version: int, what: str, error: type[Exception] = ValueError, fix: str = ""
) -> dict:
    """Read a JSON object tagged ``{"format": format_name, "version": version, ...}``.

    Raises ``error`` naming the file and the problem: not JSON, another format, another version.
    ``what`` names the kind of file in messages ("tokenizer file"); ``fix`` is appended to the
    damaged-file message (what the user can do).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as problem:
        message = f"{path} is damaged, not a readable {what} (invalid JSON: {problem})."
        raise error(f"{message} {fix}".strip()) from None
    if not isinstance(data, dict) or data.get("format") != format_name:
        raise error(f'{path}: not a tinyllm {what} (no "format": "{format_name}")')
    if data.get("version") != version:
        found = data.get("version")
        raise error(f"{path}: {what} version {found!r} is not supported (this tinyllm reads version {version})")
    return data
