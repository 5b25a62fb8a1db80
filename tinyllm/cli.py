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
from collections.abc import Callable, Sequence
from pathlib import Path

from .backends import BackendUnavailableError

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
        return 2 if isinstance(error, UsageError) else 1


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

