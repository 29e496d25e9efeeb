"""``history.csv``: one row per epoch, rewritten atomically after every epoch (so a kill loses nothing)."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from nextclass.engine.loop import EpochResult
from nextclass.utils import atomic_write_text

__all__ = ["HISTORY_COLUMNS", "read_history", "write_history", "epoch_row"]

HISTORY_COLUMNS = ["epoch", "phase", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                   "epoch_seconds", "images_per_second", "elapsed_seconds", "finished_at"]


def read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_history(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def epoch_row(epoch: int, phase: str, res: EpochResult, val: tuple[float, float], lr: float, elapsed: float) -> dict:
    """The history row of a finished epoch (``val`` is (loss, accuracy); NaN without a val split)."""
    return {"epoch": epoch, "phase": phase, "train_loss": f"{res.loss:.5f}", "train_acc": f"{res.acc:.5f}",
            "val_loss": f"{val[0]:.5f}", "val_acc": f"{val[1]:.5f}", "lr": f"{lr:.3e}",
            "epoch_seconds": f"{res.seconds:.3f}", "images_per_second": f"{res.images / max(res.seconds, 1e-9):.1f}",
            "elapsed_seconds": f"{elapsed:.1f}", "finished_at": f"{time.time():.2f}"}
