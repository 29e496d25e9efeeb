"""Suspected label errors after a run: confident learning on its out-of-sample predictions.

Kept apart from :mod:`nextclass.data.audit` (which looks at the images themselves); the result is
merged into the same ``<run>/audit.json`` so the report shows both together.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from nextclass.utils import atomic_write_json, log

__all__ = ["label_suspects", "attach_label_suspects"]


def _read_predictions(run_dir: Path) -> list[dict]:
    rows = []
    for name in ("predictions_val.csv", "predictions.csv"):
        f = run_dir / name
        if f.exists():
            with open(f, newline="", encoding="utf-8") as fh:
                rows += list(csv.DictReader(fh))
    if not rows:
        raise FileNotFoundError(f"{run_dir}: no predictions_val.csv or predictions.csv (has the run finished?)")
    return rows


def label_suspects(run_dir: str | os.PathLike, *, max_items: int = 100, write: bool = True) -> list[dict]:
    """Suspected label errors among a run's out-of-sample predictions (val and test), merged into
    ``<run>/audit.json`` under ``label_suspects``.

    Method: confident learning (Northcutt, Jiang & Chuang, JAIR 2021; cleanlab's default). Each class
    ``c`` gets a threshold ``t_c``, the mean probability the model gives ``c`` on images labelled ``c``.
    An image labelled ``y`` is suspect when the model predicts another class ``k`` with
    ``p_k >= t_k``: it is as sure of ``k`` as it typically is of true ``k`` images. Suspects are ranked by
    self-confidence ``p_y`` (lowest first). Only val/test images are judged: the model never trained
    on them; training images would need cross-validation.

    Returns:
        Up to ``max_items`` dicts: path, split, label, predicted, label_probability,
        predicted_probability, threshold.

    Example:
        >>> label_suspects("runs/resnet18-photos")[:1]  # doctest: +SKIP
        [{'path': '.../cat_017.jpg', 'split': 'val', 'label': 'cat', 'predicted': 'dog', ...}]
    """
    run_dir = Path(run_dir)
    rows = _read_predictions(run_dir)
    by_class: dict[str, list[float]] = {}
    for r in rows:
        by_class.setdefault(r["true"], []).append(float(r["true_probability"]))
    thr = {c: float(np.mean(v)) for c, v in by_class.items()}
    out = []
    for r in rows:
        y, k, pk = r["true"], r["predicted"], float(r["probability"])
        if k != y and k in thr and pk >= thr[k]:
            out.append({"path": r["path"], "split": r["split"], "label": y, "predicted": k,
                        "label_probability": round(float(r["true_probability"]), 5),
                        "predicted_probability": round(pk, 5), "threshold": round(thr[k], 5)})
    out.sort(key=lambda d: (d["label_probability"], -d["predicted_probability"]))
    if write:
        f = run_dir / "audit.json"
        rep = json.loads(f.read_text()) if f.exists() else {"version": 1}
        rep["label_suspects"] = {"method": "confident learning (per-class thresholds = mean self-confidence), "
                                           "ranked by self-confidence", "checked": len(rows), "n": len(out),
                                 "thresholds": {c: round(t, 5) for c, t in thr.items()}, "items": out[:max_items]}
        atomic_write_json(f, rep)
    return out[:max_items]


def attach_label_suspects(run_dir: str | os.PathLike) -> list[dict]:
    """:func:`label_suspects` for the end of a run: logs one line, never raises."""
    try:
        found = label_suspects(run_dir)
        if found:
            log(f"label suspects: {len(found)} val/test image(s) look mislabelled (see {Path(run_dir) / 'audit.json'})")
        return found
    except Exception as e:  # informative only: never fail a finished run
        log(f"[yellow]label-suspect check skipped[/]: {type(e).__name__}: {e}")
        return []
