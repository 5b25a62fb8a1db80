"""Writing an export so that nothing half-written is ever left under the name asked for.

An export takes seconds to minutes (SmolLM2 is 540 MB in float32) and can fail part way: a full
disk, Ctrl-C, a tokenizer that turns out not to be expressible. So every export

    1. refuses an output path that already exists, unless ``force=True`` (an overwrite must be meant);
    2. writes into a temporary name next to the target (``.model.gguf.tmp-k2j4``, a hidden
       directory ``.smol-hf.tmp-8x1q/`` for a Hugging Face directory), on the same file system;
    3. renames the finished file or directory onto the target: a rename is atomic, so the target
       is either absent (or the old one) or complete;
    4. on any error removes the temporary file or directory.

With ``force=True`` and an existing directory, the old directory is first renamed aside and
deleted only after the new one is in place.

    >>> from pathlib import Path
    >>> with atomic_output("notes-dir", is_dir=True, force=False) as tmp:
    ...     _ = (tmp / "a.txt").write_text("hello")
    >>> sorted(p.name for p in Path("notes-dir").iterdir())
    ['a.txt']
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..fileio import fsync_directory
from .weights import ExportError


def check_output_path(path: str | os.PathLike, force: bool) -> Path:
    """``path`` as a Path, after refusing one that exists (unless ``force``) or whose parent does not."""
    path = Path(path)
    if path.exists() and not force:
        raise ExportError(f"{path} already exists; choose another output path, or pass force=True (--force) "
                          f"to replace it")
    if not path.parent.exists():
        raise ExportError(f"cannot write {path}: the directory {path.parent} does not exist; create it first")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, is_dir: bool, force: bool) -> Iterator[Path]:
    """Yield a temporary file or directory path; on success rename it onto ``path``, on error remove it."""
    path = check_output_path(path, force)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    else:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if is_dir:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes the directory private (0700)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        _replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    fsync_directory(path.parent)


def _replace(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` onto ``path``; an existing directory (or a file where a directory goes) is moved aside first."""
    if path.exists() and (path.is_dir() or tmp.is_dir()):
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
        aside = old / path.name
        os.replace(path, aside)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(aside, path)  # put the old one back
            shutil.rmtree(old, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
