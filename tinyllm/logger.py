"""``TrainingLogger``: one JSON line per logged step and per evaluation, and a loss-curve PNG.

    logger = TrainingLogger("out/shakespeare")
    logger.log("train", step=10, loss=5.91, lr=3e-4, tokens_per_second=7100.0)
    logger.log("eval", step=100, val_loss=4.20, val_bpc=2.98)
    logger.plot()        # out/shakespeare/loss.png, when matplotlib is installed

``log.jsonl`` holds one JSON object a line, easy to read back with a few lines of Python
(``[json.loads(line) for line in open(path)]``) or ``pandas.read_json(path, lines=True)``::

    {"kind": "train", "step": 10, "time": 3.2, "loss": 5.91, "lr": 0.0003, "tokens_per_second": 7100.0}
    {"kind": "eval", "step": 100, "time": 31.0, "val_loss": 4.2, "val_bpc": 2.98}

``step`` counts optimizer steps done; ``time`` is seconds since the logger was created.
The plot needs matplotlib (``pip install "tinyllm[plot]"``); without it, ``plot`` returns None
and everything else works. ``python -m tinyllm.plot out/shakespeare/log.jsonl`` draws any run's log afterwards.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from .fileio import atomic_write


class TrainingLogger:
    """Append metrics to ``out_dir/log.jsonl`` and draw ``out_dir/loss.png``.

    ``resume_step``: continuing a run from a checkpoint at this step. The records up to it are
    kept (so the plot shows the whole run) and later ones, written after that checkpoint by
    the run that stopped, are dropped: the resumed run will log those steps again. Without
    ``resume_step`` an existing log is replaced.

    ``enabled=False``: keep the records in memory but touch no file (the ranks other than 0 of
    a distributed run, where rank 0 alone writes).
    """

    def __init__(self, out_dir: str | os.PathLike, resume_step: int | None = None, enabled: bool = True) -> None:
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / "log.jsonl"
        self.plot_path = self.out_dir / "loss.png"
        self.records: list[dict[str, Any]] = []
        self._start = time.perf_counter()
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                self.records = [r for r in map(json.loads, f) if r["step"] <= resume_step]
        lines = "".join(json.dumps(r) + "\n" for r in self.records)
        atomic_write(self.path, lines.encode())
        self._start = time.perf_counter() - (self.records[-1]["time"] if self.records else 0.0)

    def log(self, kind: str, step: int, **metrics: float) -> dict[str, Any]:
        """Record ``metrics`` of ``kind`` ("train" or "eval") at ``step``; return the record."""
        record = {"kind": kind, "step": int(step), "time": round(time.perf_counter() - self._start, 3)}
        record.update({k: _json_number(v) for k, v in metrics.items()})
        self.records.append(record)
        if not self.enabled:
            return record
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return record

    @staticmethod
    def can_plot() -> bool:
        """True when matplotlib can be imported."""
        from .plot import can_plot  # imported when used: `python -m tinyllm.plot` must not find it loaded already

        return can_plot()

    def plot(self) -> Path | None:
        """Draw train loss and val loss against step into ``loss.png``; None when matplotlib is missing.

        A finished run's log can be drawn again at any time: ``python -m tinyllm.plot out_dir/log.jsonl``.
        """
        from .plot import draw_loss_plot

        if not self.enabled or not self.can_plot():
            return None
        return draw_loss_plot(self.records, self.plot_path, title=self.out_dir.name)


def _json_number(value: Any) -> Any:
    """Plain Python numbers for JSON; NaN and infinity become None (JSON has neither)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
