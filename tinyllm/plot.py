"""The loss curve of a training run: train and val loss against step, drawn from ``log.jsonl`` into a PNG.

The training loop redraws ``out_dir/loss.png`` after every evaluation (``TrainingLogger.plot``).
Any finished or interrupted run can be drawn again from its log, from the command line::

    python -m tinyllm.plot out/shakespeare/log.jsonl            # writes out/shakespeare/loss.png
    python -m tinyllm.plot out/shakespeare -o curve.png         # a run directory works too

or from Python: ``plot_log("out/shakespeare/log.jsonl")``. Drawing needs matplotlib
(``pip install "tinyllm[plot]"``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .fileio import atomic_write

INSTALL_HINT = 'pip install "tinyllm[plot]" (or pip install matplotlib)'


def can_plot() -> bool:
    """True when matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl``, one dict per line (a line cut short by a crash is skipped)."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "step" in record:
                records.append(record)
    return records


def draw_loss_plot(records: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """Draw train loss (``kind == "train"``, key ``loss``) and val loss (``"eval"``, ``val_loss``) into a PNG."""
    # The object-oriented API (Figure + savefig) draws off-screen without pyplot's global state,
    # so it works on a machine without a display and does not change the user's backend.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4), dpi=100)
    axes = figure.add_subplot()
    for kind, key, label in (("train", "loss", "train loss"), ("eval", "val_loss", "val loss")):
        points = [(r["step"], r[key]) for r in records if r.get("kind") == kind and r.get(key) is not None]
        if points:
            steps, values = zip(*points)
            axes.plot(steps, values, label=label, marker="o" if kind == "eval" else None, markersize=3)
    axes.set_xlabel("step")
    axes.set_ylabel("cross-entropy (nats per token)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    atomic_write(path, buffer.getvalue())
    return Path(path)


def plot_log(log_path: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    """Draw a run's ``log.jsonl`` (or the run directory holding it); return the PNG's path.

    ``output`` defaults to ``loss.png`` beside the log. Raises ``FileNotFoundError`` for a missing
    log and ``ImportError`` (with the install command) without matplotlib.
    """
    log_path = Path(log_path)
    if log_path.is_dir():
        log_path = log_path / "log.jsonl"
    if not log_path.is_file():
        raise FileNotFoundError(f"{log_path} does not exist: pass a run's log.jsonl (or the --out-dir of a run)")
    if not can_plot():
        raise ImportError(f"drawing the loss curve needs matplotlib: {INSTALL_HINT}")
    output = Path(output) if output is not None else log_path.with_name("loss.png")
    return draw_loss_plot(read_log(log_path), output, title=log_path.parent.name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyllm.plot", description="Draw a training run's loss curve.")
    parser.add_argument("log", type=Path, help="a run's log.jsonl, or the run directory (--out-dir) that holds it")
    parser.add_argument("-o", "--output", type=Path, default=None, help="the PNG to write (default: loss.png beside it)")
    args = parser.parse_args(argv)
    try:
        path = plot_log(args.log, args.output)
    except (OSError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
