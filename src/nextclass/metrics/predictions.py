"""Writing a split's numbers: ``predictions*.csv`` rows and a summary line (the run directory's files are placed
by :class:`nextclass.rundir.RunDir`)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from nextclass.utils import atomic_write_text

__all__ = ["write_predictions", "write_multilabel_predictions", "summary_line"]


def write_predictions(path: Path, paths: list[str], split: str, labels: np.ndarray, probs: np.ndarray,
                      classes: list[str], k: int = 5, thresholds=None) -> None:
    """One row per image: path, split, true, predicted, probability, correct, true-class probability, top-k.

    Multi-label (``labels`` a 0/1 matrix; ``thresholds`` given): :func:`write_multilabel_predictions`.
    """
    if np.ndim(labels) == 2:
        return write_multilabel_predictions(path, paths, split, labels, probs, classes, thresholds)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "split", "true", "predicted", "probability", "correct", "true_probability", "topk"])
    k = min(k, len(classes))
    for p, y, pr in zip(paths, labels, probs):
        order = np.argsort(-pr)[:k]
        top = ";".join(f"{classes[j]}:{pr[j]:.4f}" for j in order)
        w.writerow([p, split, classes[y], classes[order[0]], f"{pr[order[0]]:.5f}", int(order[0] == y), f"{pr[y]:.5f}", top])
    atomic_write_text(path, buf.getvalue())


def write_multilabel_predictions(path: Path, paths: list[str], split: str, labels: np.ndarray, probs: np.ndarray,
                                 classes: list[str], thresholds=None) -> None:
    """One row per image: path, split, the true and the predicted labels (``;``-joined, predicted: probability at
    or above the label's threshold), exact (every label right), then one probability column per label."""
    thr = np.broadcast_to(np.asarray(0.5 if thresholds is None else thresholds, np.float64), (len(classes),))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "split", "true", "predicted", "exact"] + [f"p:{c}" for c in classes])
    for p, y, pr in zip(paths, np.asarray(labels), np.asarray(probs)):
        pred = pr >= thr
        w.writerow([p, split, ";".join(c for c, t in zip(classes, y) if t), ";".join(c for c, t in zip(classes, pred) if t),
                    int((pred == (y > 0)).all())] + [f"{v:.5f}" for v in pr])
    atomic_write_text(path, buf.getvalue())


def summary_line(m: dict) -> str:
    """One line per split: top-1 with its 95 % Wilson interval (when the block has one), top-5, macro F1
    (multi-label: mAP, macro and micro F1 at the thresholds, exact match)."""
    if m.get("task") == "multi-label":
        f = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        return (f"{m['split']} ({m['n']} images, {len(m['labels'])} labels): mAP {f(m['map'])}, macro F1 "
                f"{f(m['macro']['f1'])}, micro F1 {f(m['micro']['f1'])}, exact match {f(m['exact_match'])}")
    ci = m.get("accuracy_ci")
    ci_text = f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else ""
    return (f"{m['split']} ({m['n']} images): top-1 {m['accuracy']:.4f}{ci_text}, top-5 {m['top5']:.4f}, "
            f"macro F1 {m['macro']['f1']:.4f}")
