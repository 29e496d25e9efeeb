"""Multi-label numbers (issue 26): per-label temperature, per-label thresholds and the metrics of a split.

A multi-label model has one sigmoid output per label: an image may carry none, one or several labels. Its (N, L)
logits (or probabilities) and (N, L) 0/1 targets give, in the order a run uses them:

1. **Per-label temperature, fitted on val** (:func:`fit_label_temperatures`). Each label is its own binary
   classifier, so each gets its own ``T_l`` (``sigmoid(z / T_l)``); none of the tools that offer multi-label
   (fastai, Keras, Hugging Face, Create ML) calibrates per label. A sigmoid is a two-class softmax over ``[0, z]``,
   so the fit *is* :func:`nextclass.metrics.calibration.fit_temperature` on those two columns: the same bounded
   search over ``log T`` in ``[T_MIN, T_MAX]`` minimising the binary NLL, and the same Laplace cap on the mean
   confidence when val shows (almost) no mistakes on the label. A label with no positive (or no negative) in val
   keeps ``T = 1`` and says why: one class alone says nothing about how confident the model should be.
   :func:`label_calibration_block` reports the binary ECE of each label before and after (:func:`binary_ece`:
   equal-mass bins, because a rare label's probabilities crowd near 0 and equal-width bins would put nearly all
   of them in the first bin).
2. **Per-label threshold, chosen on val** on the *calibrated* probabilities (:func:`choose_thresholds`): the one
   of maximum F1 by default, or the lowest reaching a target precision (most recall at that precision); a label
   whose target is out of reach falls back to max-F1 and says so; a label with no positive in val gets 0.5.
3. **The metrics of a split** with those thresholds (:func:`multilabel_metrics`): mAP, micro/macro F1,
   per-label precision/recall/F1/AP/support, exact-match ratio, Hamming loss, label cardinality.

Everything returned is JSON-ready: plain floats rounded to 6 decimals, ``None`` where a number is undefined
(no image, no positive), label names as keys.

Integration (a later session): the scorer (``evaluation/scorer.py``) calls :func:`fit_label_temperatures` and
:func:`choose_thresholds` on val, then :func:`label_calibration_block` and :func:`multilabel_metrics` per split;
the bundle keeps ``temperatures`` and ``thresholds``; ``predict``/``serve`` call :func:`calibrated_probs` then
:func:`labels_above`.
"""

from __future__ import annotations

import numpy as np

from nextclass.metrics.calibration import fit_temperature
from nextclass.metrics.classification import ECE_BINS

__all__ = ["sigmoid", "logits_from_probs", "calibrated_probs", "binary_nll", "binary_ece", "fit_label_temperatures",
           "label_calibration_block", "choose_thresholds", "multilabel_metrics", "labels_above", "fit_on_val", "DEFAULT_THRESHOLD"]

#: The threshold of a label that val cannot tune (no positive in val), and of an untuned model.
DEFAULT_THRESHOLD = 0.5
_EPS = 1e-7


def _r(x) -> float | None:
    """A JSON-ready float: rounded to 6 decimals, ``None`` for NaN/None."""
    if x is None or not np.isfinite(x):
        return None
    return round(float(x), 6)


def _arrays(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    s, y = np.asarray(scores, np.float64), np.asarray(targets)
    if s.ndim != 2 or s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and targets {y.shape}: expected two (N, L) arrays of the same shape")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("targets: expected 0/1 (multi-hot) values")
    return s, y.astype(np.int64)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-z))`` in float64, without overflow.

    Example:
        >>> sigmoid(np.array([0.0, 1000.0, -1000.0])).tolist()
        [0.5, 1.0, 0.0]
    """
    z = np.asarray(z, np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def logits_from_probs(probs: np.ndarray) -> np.ndarray:
    """The logits of probabilities (clipped to ``[1e-7, 1 - 1e-7]``), for a model that only gives probabilities.

    Example:
        >>> logits_from_probs(np.array([0.5])).tolist()
        [0.0]
    """
    p = np.clip(np.asarray(probs, np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def calibrated_probs(logits: np.ndarray, temperatures, offsets=None) -> np.ndarray:
    """``sigmoid((logits - offset_l) / T_l)`` column by column (``temperatures``, ``offsets``: one per label, or one
    for all; ``offsets`` None: 0). The offset undoes a known shift of the logits: a loss with positive weight ``w_l``
    moves a label's optimal logit by ``log w_l`` (a bundle keeps it as ``offsets``).

    Example:
        >>> calibrated_probs(np.array([[2.0, 2.0]]), [1.0, 2.0]).round(4).tolist()
        [[0.8808, 0.7311]]
        >>> calibrated_probs(np.array([[2.0]]), [1.0], [2.0]).tolist()
        [[0.5]]
    """
    z = np.asarray(logits, np.float64) - (0.0 if offsets is None else np.asarray(offsets, np.float64))
    return sigmoid(z / np.asarray(temperatures, np.float64))


def binary_nll(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits / T)`` against 0/1 targets (one label's column).

    Example:
        >>> round(binary_nll(np.array([0.0]), np.array([1])), 6)
        0.693147
    """
    z = np.asarray(logits, np.float64) / float(temperature)
    y = np.asarray(targets, np.float64)
    if not len(z):
        return float("nan")
    return float((np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))).mean())


def binary_ece(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> float | None:
    """Expected calibration error of one label's probabilities, in equal-mass bins.

    The images are sorted by probability and cut into ``min(bins, n)`` bins of (nearly) equal count; the ECE is the
    count-weighted mean of ``|share of positives - mean probability|`` over the bins (the probability of the label
    itself, not ``max(p, 1 - p)``). ``None`` for no image.

    Example:
        >>> binary_ece(np.array([0.9, 0.9, 0.1, 0.1]), np.array([1, 0, 0, 0]), bins=2)
        0.25
    """
    p, y = np.asarray(probs, np.float64), np.asarray(targets, np.float64)
    if not len(p):
        return None
    order = np.argsort(p, kind="stable")
    gap = sum(len(b) * abs(y[b].mean() - p[b].mean()) for b in np.array_split(order, min(int(bins), len(p))))
    return round(float(gap / len(p)), 6)


def fit_label_temperatures(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, list[str | None]]:
    """One temperature per label fitted on these (validation) logits, with why a label kept ``T = 1``.

    Per label: :func:`~nextclass.metrics.calibration.fit_temperature` on the two-class logits ``[0, z]`` (exactly
    the binary NLL of ``sigmoid(z / T)``; see the module docstring). A label with no positive or no negative among
    the images keeps 1.0 and gets a reason; the reasons list is aligned with the labels (None: fitted; the note when the confidence cap set T).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, (400, 2))
        >>> t, why = fit_label_temperatures(8 * (2 * y - 1) + rng.normal(0, 6, (400, 2)), y)   # over-confident
        >>> bool((t > 1).all()), why[0]
        (True, None)
    """
    z, y = _arrays(logits, targets)
    temps, reasons = np.ones(z.shape[1]), []
    for j in range(z.shape[1]):
        pos = int(y[:, j].sum())
        if pos == 0 or pos == len(y):
            reasons.append(f"no {'positive' if pos == 0 else 'negative'} image in val: T = 1 kept")
            continue
        notes: list[str] = []
        temps[j] = fit_temperature(np.stack([np.zeros(len(z)), z[:, j]], axis=1), y[:, j], quiet=notes)
        reasons.append(notes[0] if notes else None)  # the confidence cap, said per label in the metrics
    return temps, reasons


def label_calibration_block(logits: np.ndarray, targets: np.ndarray, labels: list[str], temperatures,
                            reasons: list[str | None] | None = None, bins: int = ECE_BINS, offsets=None) -> dict:
    """Per-label binary ECE and NLL before (the raw ``sigmoid(z)``) and after calibration (``offsets`` removed, then
    the per-label temperatures), and their means.

    Returns ``{"calibration": {...}}`` to merge into a split's block: ``n``, ``bins``, ``binning`` ("equal-mass"),
    ``fitted_on`` ("val"), ``mean_ece_before``/``mean_ece_after`` (over all labels) and ``per_label``: label ->
    ``temperature``, ``positives``, ``ece_before``, ``ece_after``, ``nll_before``, ``nll_after``, ``reason``.

    Example:
        >>> b = label_calibration_block(np.array([[3.0], [-3.0]]), np.array([[1], [0]]), ["cat"], [0.5])["calibration"]
        >>> b["per_label"]["cat"]["ece_before"] > b["per_label"]["cat"]["ece_after"]
        True
    """
    z, y = _arrays(logits, targets)
    t = np.broadcast_to(np.asarray(temperatures, np.float64), (z.shape[1],))
    off = np.broadcast_to(np.asarray(0.0 if offsets is None else offsets, np.float64), (z.shape[1],))
    per = {}
    for j, name in enumerate(labels):
        per[name] = {"temperature": _r(t[j]), "offset": _r(off[j]), "positives": int(y[:, j].sum()),
                     "ece_before": binary_ece(sigmoid(z[:, j]), y[:, j], bins),
                     "ece_after": binary_ece(sigmoid((z[:, j] - off[j]) / t[j]), y[:, j], bins),
                     "nll_before": _r(binary_nll(z[:, j], y[:, j])),
                     "nll_after": _r(binary_nll(z[:, j] - off[j], y[:, j], t[j])),
                     "reason": reasons[j] if reasons else None}
    mean = {k: _r(np.mean([v[k] for v in per.values()])) if len(y) and per else None
            for k in ("ece_before", "ece_after")}
    return {"calibration": {"fitted_on": "val", "n": int(len(y)), "bins": int(bins), "binning": "equal-mass",
                            "mean_ece_before": mean["ece_before"], "mean_ece_after": mean["ece_after"],
                            "per_label": per}}


def _operating_points(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each distinct score ``v`` (descending) with precision, recall and F1 of predicting ``p >= v``, and the
    threshold placed halfway down to the next lower score (the same predictions on val, a margin beyond)."""
    v = np.unique(p)[::-1]
    order = np.argsort(-p, kind="stable")
    tp_at = np.cumsum(y[order])
    last = np.searchsorted(-p[order], -v, side="right") - 1  # last position of each value in the sorted scores
    tp, pred = tp_at[last].astype(np.float64), (last + 1).astype(np.float64)
    prec, rec = tp / pred, tp / max(int(y.sum()), 1)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(prec), where=(prec + rec) > 0)
    thr = np.append((v[:-1] + v[1:]) / 2, v[-1])
    return thr, prec, rec, f1


def _one_threshold(p: np.ndarray, y: np.ndarray, target_precision: float | None) -> dict:
    """The threshold of one label and its numbers on val (see :func:`choose_thresholds`)."""
    if not y.any():
        return {"threshold": DEFAULT_THRESHOLD, "rule": "default", "precision": None, "recall": None, "f1": None,
                "reason": f"no positive image in val: threshold {DEFAULT_THRESHOLD}"}
    thr, prec, rec, f1 = _operating_points(p, y)
    i = len(f1) - 1 - int(np.argmax(f1[::-1]))  # NOTE: ties in F1 go to the lowest threshold (more recall)
    out = {"rule": "max-f1", "reason": None}
    if target_precision is not None:
        ok = np.flatnonzero(prec >= target_precision - 1e-12)
        out["target_precision_threshold"] = _r(thr[ok[-1]]) if len(ok) else None
        if len(ok):
            i, out["rule"] = int(ok[-1]), "target-precision"
        else:
            out["reason"] = (f"precision {target_precision:g} not reached on val (best {prec.max():.3f}): "
                             "the max-F1 threshold is used")
    return {"threshold": _r(thr[i]), **out, "precision": _r(prec[i]), "recall": _r(rec[i]), "f1": _r(f1[i])}


def choose_thresholds(probs: np.ndarray, targets: np.ndarray, labels: list[str],
                      target_precision: float | None = None) -> dict:
    """Per-label decision thresholds chosen on *validation* (calibrated) probabilities; a label is predicted when
    its probability is ``>= threshold``.

    Args:
        target_precision: None: the threshold of maximum F1 per label. A number in (0, 1]: the lowest threshold
            whose precision on val reaches it (the most recall at that precision); a label that cannot reach it
            gets ``target_precision_threshold: None`` and the max-F1 threshold, with a ``reason``.

    Returns:
        ``thresholds`` (a list aligned with ``labels``, for the bundle), ``rule``, ``target_precision``,
        ``fitted_on`` and ``per_label``: label -> ``threshold``, ``rule`` (max-f1 | target-precision | default),
        ``precision``, ``recall``, ``f1`` on val at that threshold, ``positives`` and ``reason`` (None, or why the
        rule was not followed: a label with no positive in val gets 0.5). A threshold lies halfway between two
        neighbouring val scores (the same val predictions as the score itself, with a margin for new images).

    Example:
        >>> t = choose_thresholds(np.array([[0.9], [0.6], [0.4], [0.2]]), np.array([[1], [0], [1], [0]]), ["a"])
        >>> t["thresholds"], t["per_label"]["a"]["f1"]
        ([0.3], 0.8)
    """
    p, y = _arrays(probs, targets)
    if target_precision is not None and not 0 < float(target_precision) <= 1:
        raise ValueError(f"target precision {target_precision!r}: give a number in (0, 1], e.g. 0.9")
    per = {}
    for j, name in enumerate(labels):
        per[name] = {**_one_threshold(p[:, j], y[:, j], target_precision), "positives": int(y[:, j].sum())}
    return {"rule": "max-f1" if target_precision is None else f"precision>={float(target_precision):g}",
            "target_precision": None if target_precision is None else float(target_precision), "fitted_on": "val",
            "thresholds": [per[n]["threshold"] for n in labels], "per_label": per}


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 from counts, 0 where undefined (scikit-learn's ``zero_division=0``). Counted here
    rather than by ``precision_recall_fscore_support``, which reads a one-label (N, 1) matrix as binary classes."""
    tp, fp, fn = (np.asarray(v, np.float64) for v in (tp, fp, fn))
    div = lambda a, b: np.divide(a, b, out=np.zeros_like(a), where=b > 0)  # noqa: E731
    return div(tp, tp + fp), div(tp, tp + fn), div(2 * tp, 2 * tp + fp + fn)


def _per_label(p: np.ndarray, y: np.ndarray, pred: np.ndarray, labels: list[str], thr: np.ndarray) -> dict:
    from sklearn.metrics import average_precision_score

    tp, fp, fn = (pred & y).sum(0), (pred & (1 - y)).sum(0), ((1 - pred) & y).sum(0)
    prec, rec, f1 = _prf(tp, fp, fn)
    sup = y.sum(0)
    return {name: {"precision": _r(prec[j]), "recall": _r(rec[j]), "f1": _r(f1[j]), "support": int(sup[j]),
                   "predicted": int(pred[:, j].sum()), "threshold": _r(thr[j]),
                   "ap": _r(average_precision_score(y[:, j], p[:, j])) if sup[j] > 0 else None}
            for j, name in enumerate(labels)}


def _averages(y: np.ndarray, pred: np.ndarray, present: list[int]) -> dict:
    """Micro (counts pooled over labels) and macro (mean over the labels present) precision/recall/F1."""
    names = ("precision", "recall", "f1")
    if not len(y) or not y.shape[1]:
        return {k: dict.fromkeys(names) for k in ("micro", "macro")}
    tp, fp, fn = (pred & y).sum(0), (pred & (1 - y)).sum(0), ((1 - pred) & y).sum(0)
    micro = _prf(tp.sum(), fp.sum(), fn.sum())
    macro = [v[present].mean() if present else None for v in _prf(tp, fp, fn)]
    return {"micro": {k: _r(v) for k, v in zip(names, micro)}, "macro": {k: _r(v) for k, v in zip(names, macro)}}


def multilabel_metrics(probs: np.ndarray, targets: np.ndarray, labels: list[str], split: str,
                       thresholds=None) -> dict:
    """The multi-label block of a split: ranking (AP), decisions at the thresholds, and label counts.

    * ``map``: mean of scikit-learn's ``average_precision_score`` over the labels with a positive in the split
      (AP is undefined without one); those without are listed in ``labels_without_positives`` and counted.
    * ``micro`` and ``macro`` precision/recall/F1 at the thresholds (label predicted when ``p >= threshold``);
      macro averages over the labels present in the split, as ``classification_metrics`` does for classes.
    * ``exact_match`` (subset accuracy: every label of the image right), ``hamming_loss`` (share of wrong
      image-label cells), ``cardinality`` (mean labels per image, true and predicted), ``no_label``
      (images with no true / no predicted label), ``per_label`` (precision, recall, F1, AP, support, predicted).

    Args:
        thresholds: one per label or one for all (None: 0.5, an untuned model's).

    Example:
        >>> m = multilabel_metrics(np.array([[0.9, 0.2], [0.3, 0.8]]), np.array([[1, 0], [0, 1]]), ["a", "b"], "test")
        >>> m["map"], m["exact_match"], m["micro"]["f1"]
        (1.0, 1.0, 1.0)
    """
    p, y = _arrays(probs, targets)
    thr = np.broadcast_to(np.asarray(DEFAULT_THRESHOLD if thresholds is None else thresholds, np.float64),
                          (len(labels),))
    pred = (p >= thr).astype(np.int64)
    per = _per_label(p, y, pred, labels, thr)
    present = [j for j, n in enumerate(labels) if per[n]["support"] > 0]
    avg = _averages(y, pred, present)
    n = len(y)
    return {"split": split, "n": int(n), "task": "multi-label", "labels": list(labels),
            "map": _r(np.mean([per[labels[j]]["ap"] for j in present])) if present else None,
            "labels_with_positives": len(present),
            "labels_without_positives": [n_ for n_ in labels if per[n_]["support"] == 0],
            "micro": avg["micro"], "macro": avg["macro"],
            "exact_match": _r((pred == y).all(axis=1).mean()) if n else None,
            "hamming_loss": _r((pred != y).mean()) if n and len(labels) else None,
            "cardinality": {"true": _r(y.sum(1).mean()) if n else None,
                            "predicted": _r(pred.sum(1).mean()) if n else None},
            "no_label": {"true": int((y.sum(1) == 0).sum()), "predicted": int((pred.sum(1) == 0).sum())},
            "thresholds": [_r(t) for t in thr], "per_label": per}


def fit_on_val(logits: np.ndarray, targets: np.ndarray, labels: list[str],
               target_precision: float | None = None, offsets=None) -> dict:
    """What a multi-label run fits on val, in order: the per-label temperatures (:func:`fit_label_temperatures`) on
    the logits less their known ``offsets`` (the log positive weights of the training loss; None: 0), then the
    per-label thresholds on the calibrated probabilities (:func:`choose_thresholds`).

    Returns the bundle's entries: ``offsets``, ``temperatures`` and ``thresholds`` (lists aligned with ``labels``),
    ``threshold_rule``, and ``choice`` (the :func:`choose_thresholds` block, with each label's val numbers) and
    ``reasons`` (why a label kept ``T = 1``) for the metrics. Without val images every label keeps ``T = 1`` and
    the default threshold.

    Example:
        >>> f = fit_on_val(np.array([[4.0], [-4.0], [3.0], [-1.0]]), np.array([[1], [0], [1], [1]]), ["a"])
        >>> f["threshold_rule"], len(f["temperatures"]), f["thresholds"][0] < 0.5
        ('max-f1', 1, True)
    """
    z, y = _arrays(logits, targets)
    n = len(labels)
    off = [_r(v) for v in np.broadcast_to(np.asarray(0.0 if offsets is None else offsets, np.float64), (n,))]
    if not len(y):
        return {"offsets": off, "temperatures": [1.0] * n, "thresholds": [DEFAULT_THRESHOLD] * n,
                "threshold_rule": "default", "choice": None, "reasons": ["no val images"] * n}
    temps, reasons = fit_label_temperatures(z - np.asarray(off), y)
    choice = choose_thresholds(calibrated_probs(z, temps, off), y, labels, target_precision)
    return {"offsets": off, "temperatures": [_r(t) for t in temps], "thresholds": choice["thresholds"],
            "threshold_rule": choice["rule"], "choice": choice, "reasons": reasons}


def labels_above(probs: np.ndarray, labels: list[str], thresholds) -> list[list[dict]]:
    """What ``predict`` and the server answer per image: the labels at or above their threshold with their
    (calibrated) probabilities, most probable first (an empty list: no label).

    Example:
        >>> labels_above(np.array([[0.9, 0.2, 0.6]]), ["a", "b", "c"], [0.5, 0.5, 0.5])
        [[{'label': 'a', 'probability': 0.9}, {'label': 'c', 'probability': 0.6}]]
    """
    p = np.asarray(probs, np.float64)
    thr = np.broadcast_to(np.asarray(thresholds, np.float64), (p.shape[1],))
    out = []
    for row in p:
        keep = [j for j in np.argsort(-row, kind="stable") if row[j] >= thr[j]]
        out.append([{"label": labels[j], "probability": _r(row[j])} for j in keep])
    return out
