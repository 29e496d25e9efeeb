"""What ``report.html`` shows for a multi-label run (issue 26), read from the run's files.

A multi-label block (``task: multi-label``, :func:`nextclass.metrics.multilabel.multilabel_metrics`) has no top-1,
confusion matrix, abstain threshold, prediction sets, neighbour vote or robustness; the page shows instead the
headline mAP / macro F1 / micro F1 / exact match per split, one row per label (its threshold and how it was chosen,
precision, recall, F1, AP, its temperature and ECE before and after), the labels' AP and F1 as bars, their
precision-recall curves, reliability before and after the per-label calibration (the raw probabilities are recovered
from the calibrated ones in ``predictions*.csv`` and the bundle's offsets and temperatures), the labels' co-occurrence
in the data (``split.csv``), and images whose predicted label set is right or wrong (given against predicted).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from nextclass.report import label_plots, plots
from nextclass.rundir import RunDir
from nextclass.utils import log

__all__ = ["is_multilabel", "label_arrays", "label_table", "cooccurrence_of", "multilabel_plots", "headline_blocks",
           "SECTIONS"]

#: Section ids of a multi-label run's page, in order (single-label-only sections are left out).
SECTIONS = ("summary", "dataset", "audit", "config", "training", "metrics", "calibration", "predictions", "gradcam",
            "model")


def is_multilabel(block: dict | None, meta: dict | None = None) -> bool:
    """True for a multi-label run: its metrics block or its bundle says so."""
    return (block or {}).get("task") == "multi-label" or (meta or {}).get("task") == "multi-label"


def headline_blocks(metrics: dict) -> dict:
    """The multi-label blocks of ``metrics.json`` by name (val, test, and any other evaluated data)."""
    return {k: v for k, v in metrics.items() if isinstance(v, dict) and v.get("task") == "multi-label"}


def _names(cell: str | None) -> list[str]:
    return [x for x in (cell or "").split(";") if x]


def label_arrays(rows: list[dict], labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities ``(N, L)`` (the ``p:<label>`` columns) and the given labels as a 0/1 matrix (``true``)
    of ``predictions*.csv`` rows.

    Example:
        >>> p, y = label_arrays([{"true": "b", "p:a": "0.2", "p:b": "0.9"}], ["a", "b"])
        >>> p.tolist(), y.tolist()
        ([[0.2, 0.9]], [[0, 1]])
    """
    index = {c: j for j, c in enumerate(labels)}
    p = np.array([[float(r.get(f"p:{c}") or "nan") for c in labels] for r in rows], np.float64).reshape(-1, len(labels))
    y = np.zeros(p.shape, np.int64)
    for i, r in enumerate(rows):
        y[i, [index[n] for n in _names(r.get("true")) if n in index]] = 1
    return p, y


def _raw(probs: np.ndarray, meta: dict | None) -> np.ndarray | None:
    """The model's raw ``sigmoid(z)`` from the calibrated ``sigmoid((z - offset) / T)`` and the bundle's entries."""
    t, off = (meta or {}).get("temperatures"), (meta or {}).get("offsets")
    if not t or len(t) != probs.shape[1]:
        return None
    p = np.clip(probs, 1e-7, 1 - 1e-7)
    z = np.log(p / (1 - p)) * np.asarray(t, np.float64) + np.asarray(off if off else 0.0, np.float64)
    return 1.0 / (1.0 + np.exp(-z))


def label_table(block: dict) -> list[dict]:
    """One row per label: the block's numbers at the threshold, AP, and its calibration (temperature, offset, ECE and
    NLL before/after, why it kept T = 1) and the threshold's val numbers and rule."""
    cal = (block.get("calibration") or {}).get("per_label") or {}
    choice = (block.get("threshold_choice") or {}).get("per_label") or {}
    return [{"label": c, **r, "cal": cal.get(c) or {}, "choice": choice.get(c) or {}}
            for c, r in (block.get("per_label") or {}).items()]


def cooccurrence_of(run_dir: Path, labels: list[str]) -> tuple[np.ndarray | None, dict]:
    """The labels' co-occurrence over every image of the run's ``split.csv`` (None without one), and the images per
    split that carry no label."""
    path = RunDir(run_dir).split
    if not path.exists() or not labels:
        return None, {}
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    _, y = label_arrays([{"true": r.get("class")} for r in rows], labels)
    none: dict[str, int] = {}
    for r, row in zip(rows, y):
        if not row.any():
            none[r.get("split") or "-"] = none.get(r.get("split") or "-", 0) + 1
    return y.T @ y, none


def _caption(r: dict) -> str:
    return f"given: {r.get('true') or '(none)'}\npred: {r.get('predicted') or '(none)'}"


def _set_grids(images, rows: list[dict], split: str, seed: int) -> dict:
    """Images whose predicted label set is exactly the given one, and the most confidently wrong ones."""
    if images is None or not rows:
        return {"exact": None, "wrong_sets": None}
    rng = np.random.default_rng(seed)
    labels = [k[2:] for k in rows[0] if k.startswith("p:")]
    p, y = label_arrays(rows, labels)
    right = [r for r in rows if r.get("exact") == "1"]
    wrong = [i for i, r in enumerate(rows) if r.get("exact") == "0"]
    wrong.sort(key=lambda i: -float(np.nanmax(np.abs(y[i] - p[i]))))  # the most confident mistake first
    picked = [right[i] for i in sorted(rng.choice(len(right), min(8, len(right)), replace=False))] if right else []

    def grid(chosen: list[dict], cols: int, title: str, ok: bool):
        items = [(images.get(r["path"]), _caption(r), ok) for r in chosen]
        items = [it for it in items if it[0] is not None]
        return plots.image_grid(items, cols=cols, title=title) if items else None

    return {"exact": grid(picked, 8, f"8 with the exact label set ({len(right)} of {len(rows)} {split} images)", True),
            "wrong_sets": grid([rows[i] for i in wrong[:12]], 6, f"wrong label set: {len(wrong)} of {len(rows)} "
                               f"{split} images, most confident mistakes first", False)}


def cam_plot(model, images, rows: list[dict], labels: list[str], pp, seed: int, n: int) -> tuple:
    """Grad-CAM of each image's most probable label for n/2 images with the exact label set and n/2 without."""
    if model is None or images is None or not rows:
        return None, "Grad-CAM needs the model and the images" if model is None or images is None else "no predictions"
    from nextclass.report.cam import CamError, cam_overlays

    rng = np.random.default_rng(seed + 1)
    wrong = [r for r in rows if r.get("exact") == "0"]
    right = [r for r in rows if r.get("exact") == "1"]
    wrong = [wrong[i] for i in sorted(rng.choice(len(wrong), min(n // 2, len(wrong)), replace=False))] if wrong else []
    right = [right[i] for i in sorted(rng.choice(len(right), min(n - len(wrong), len(right)), replace=False))] \
        if right else []
    chosen = [(r, images.pil(r["path"])) for r in right + wrong]
    chosen = [(r, im) for r, im in chosen if im is not None]
    if not chosen:
        return None, "none of the images could be read"
    p, _ = label_arrays([r for r, _ in chosen], labels)
    top = np.nan_to_num(p, nan=-1.0).argmax(axis=1)
    try:
        overlays, _ = cam_overlays(model, [im for _, im in chosen], pp, top.tolist(), size=160)
    except CamError as e:
        return None, str(e)
    items = [(np.asarray(o), f"{labels[j]} (p {p[k, j]:.2f})\n{_caption(r)}", r.get("exact") == "1")
             for k, ((r, _), o, j) in enumerate(zip(chosen, overlays, top))]
    return plots.image_grid(items, cols=4, title="Grad-CAM for each image's most probable label (green: exact set)",
                            cell=160), None


def multilabel_plots(run_dir: Path, images, rows: list[dict], block: dict, split: str | None, meta: dict | None,
                     seed: int = 0) -> dict:
    """PNG bytes of a multi-label run's page: ``ap`` (AP and F1 per label), ``pr`` (precision-recall curves),
    ``reliability`` (before/after the per-label calibration), ``cooccurrence`` (from ``split.csv``), ``exact`` and
    ``wrong_sets`` (image grids of the main split)."""
    labels = list(block.get("labels") or (meta or {}).get("classes") or [])
    title = f"{split}: {block.get('n', 0)} images"
    png: dict = {"ap": label_plots.label_bars(block["per_label"], title) if block.get("per_label") else None}
    p, y = label_arrays(rows, labels) if rows else (np.zeros((0, len(labels))), np.zeros((0, len(labels)), np.int64))
    ok = len(p) > 0 and not np.isnan(p).any()
    png["pr"] = label_plots.pr_curves(p, y, labels, block.get("thresholds"), title) if ok else None
    raw = _raw(p, meta) if ok else None
    cal = block.get("calibration") or {}
    png["reliability"] = label_plots.label_reliability(raw, p, y, labels, (cal.get("mean_ece_before"),
                                                                           cal.get("mean_ece_after")), title=title) \
        if raw is not None else None
    co, _ = cooccurrence_of(run_dir, labels)
    png["cooccurrence"] = label_plots.cooccurrence_matrix(co, labels) if co is not None and co.any() else None
    png.update(_set_grids(images, rows, split or "", seed))
    if not ok and rows:
        log("[yellow]NOTE[/]: report: the predictions file has no p:<label> column for every label; curves not drawn")
    return png
