"""Writing a split's numbers: ``predictions*.csv`` rows and a summary line (the run directory's files are placed
by :class:`nextclass.rundir.RunDir`)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from nextclass.utils import atomic_write_text

__all__ = ["write_predictions", "summary_line"]


def write_predictions(path: Path, paths: list[str], split: str, labels: np.ndarray, probs: np.ndarray,
                      classes: list[str], k: int = 5) -> None:
    """One row per image: path, split, true, predicted, probability, correct, true-class probability, top-k."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "split", "true", "predicted", "probability", "correct", "true_probability", "topk"])
    k = min(k, len(classes))
    for p, y, pr in zip(paths, labels, probs):
        order = np.argsort(-pr)[:k]
        top = ";".join(f"{classes[j]}:{pr[j]:.4f}" for j in order)
        w.writerow([p, split, classes[y], classes[order[0]], f"{pr[order[0]]:.5f}", int(order[0] == y), f"{pr[y]:.5f}", top])
    atomic_write_text(path, buf.getvalue())


def summary_line(m: dict) -> str:
    """One line per split: top-1 with its 95 % Wilson interval (when the block has one), top-5, macro F1."""
    ci = m.get("accuracy_ci")
    ci_text = f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else ""
    return (f"{m['split']} ({m['n']} images): top-1 {m['accuracy']:.4f}{ci_text}, top-5 {m['top5']:.4f}, "
            f"macro F1 {m['macro']['f1']:.4f}")
