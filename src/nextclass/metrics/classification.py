"""Classification and probability metrics, each labelled with the split and its size.

Counting metrics (accuracy, per-class precision/recall/F1, confusion matrix) come from
scikit-learn. The probability metrics (log-loss, Brier score, expected calibration error) are a
few lines of numpy written out here so that their exact definition is visible and checked
against hand-computed values in ``tests/test_metrics.py``:

* **log-loss** - mean of ``-log p(true class)`` (probabilities clipped at 1e-15, as scikit-learn does);
* **Brier score** - mean over images of ``sum_k (p_k - onehot_k)^2`` (multi-class form, range 0..2);
* **ECE** - confidence (max probability) in equal-width bins over [0, 1]; the bin-size-weighted
  mean of ``|accuracy(bin) - mean confidence(bin)|`` (Guo et al. 2017, "On Calibration of
  Modern Neural Networks", 15 bins).
"""

from __future__ import annotations

import numpy as np

__all__ = ["softmax", "classification_metrics", "wilson_interval", "topk_accuracy", "balanced_accuracy", "row_normalize",
           "most_confused", "log_loss", "brier_score", "reliability_bins", "expected_calibration_error", "ECE_BINS"]

#: Number of equal-width confidence bins for ECE and the reliability diagram (Guo et al. use 15).
ECE_BINS = 15
_EPS = 1e-15


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (float32).

    Example:
        >>> softmax(np.array([[0.0, 0.0]])).tolist()
        [[0.5, 0.5]]
    """
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose true label is among the ``k`` highest scores (NaN for no rows).

    Example:
        >>> topk_accuracy(np.array([[0.5, 0.3, 0.2]]), np.array([1]), 2)
        1.0
    """
    if len(labels) == 0:
        return float("nan")
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    return float((top == np.asarray(labels)[:, None]).any(axis=1).mean())


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes present in the split (rows of ``cm`` with support > 0).

    A class absent from the split has no recall to measure and is left out (as in scikit-learn's
    ``balanced_accuracy_score``); a present class that is never predicted counts with recall 0.

    Example:
        >>> balanced_accuracy(np.array([[3, 1], [0, 0]]))
        0.75
    """
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float((np.diag(cm)[present] / support[present]).mean())


def row_normalize(cm: np.ndarray) -> np.ndarray:
    """Confusion matrix with each row divided by its support (rows of absent classes stay 0).

    Example:
        >>> row_normalize(np.array([[1, 3], [0, 0]])).tolist()
        [[0.25, 0.75], [0.0, 0.0]]
    """
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)


def most_confused(cm: np.ndarray, classes: list[str], top: int = 10) -> list[dict]:
    """Off-diagonal cells of the confusion matrix, largest count first (ties: larger rate first).

    Each entry: ``{"true", "predicted", "count", "rate"}`` where ``rate`` is the share of the true
    class's images that went to ``predicted``.

    Example:
        >>> most_confused(np.array([[5, 2], [1, 4]]), ["a", "b"])[0]
        {'true': 'a', 'predicted': 'b', 'count': 2, 'rate': 0.2857142857142857}
    """
    cm = np.asarray(cm)
    rates = row_normalize(cm)
    cells = [(int(cm[i, j]), float(rates[i, j]), i, j) for i in range(len(cm)) for j in range(len(cm)) if i != j and cm[i, j] > 0]
    cells.sort(key=lambda c: (-c[0], -c[1], c[2], c[3]))
    return [{"true": classes[i], "predicted": classes[j], "count": n, "rate": r} for n, r, i, j in cells[:top]]


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-probability of the true class (NaN for no rows).

    Example:
        >>> round(log_loss(np.array([[0.5, 0.5], [0.9, 0.1]]), np.array([0, 0])), 6)
        0.399254
    """
    labels = np.asarray(labels, dtype=int)
    if len(labels) == 0:
        return float("nan")
    p = np.clip(np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), labels], _EPS, 1.0)
    return float(-np.log(p).mean())


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multi-class Brier score: mean over rows of the squared distance to the one-hot label.

    Example:
        >>> round(brier_score(np.array([[0.5, 0.5], [0.9, 0.1]]), np.array([0, 0])), 6)
        0.26
    """
    labels = np.asarray(labels, dtype=int)
    if len(labels) == 0:
        return float("nan")
    p = np.asarray(probs, dtype=np.float64)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(((p - onehot) ** 2).sum(axis=1).mean())


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin: ``{"lo", "hi", "count", "accuracy", "confidence"}`` (empty bins: count 0, None).

    Bins are ``(lo, hi]`` except the first, which also takes confidence exactly 0.

    Example:
        >>> b = reliability_bins(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([0, 1]), bins=2)
        >>> [(x["count"], x["accuracy"]) for x in b]
        [(0, None), (2, 0.5)]
    """
    labels = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=np.float64)
    conf = p.max(axis=1) if len(labels) else np.zeros(0)
    correct = (p.argmax(axis=1) == labels) if len(labels) else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # right-closed bins: with 2 bins a confidence of exactly 0.5 lands in [0, 0.5], 0.6 in (0.5, 1]
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        out.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n,
                    "accuracy": float(correct[m].mean()) if n else None,
                    "confidence": float(conf[m].mean()) if n else None})
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: sum over bins of ``count/n * |accuracy - confidence|`` (NaN for no rows).

    Example:
        >>> round(expected_calibration_error(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([0, 1]), bins=2), 6)
        0.25
    """
    rows = reliability_bins(probs, labels, bins)
    n = sum(r["count"] for r in rows)
    if n == 0:
        return float("nan")
    return float(sum(r["count"] / n * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"]))


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> list[float] | None:
    """The 95 % Wilson score interval ``[lo, hi]`` of an accuracy of ``correct`` out of ``n`` (None for n = 0).

    Unlike the normal approximation it stays inside [0, 1] and is not zero-width at 100 % (E. B. Wilson,
    "Probable inference...", JASA 1927; recommended by Brown, Cai & DasGupta 2001 for small n): 179 of 179 right
    is [0.979, 1.0], not a certainty.

    Example:
        >>> [round(x, 3) for x in wilson_interval(179, 179)]
        [0.979, 1.0]
    """
    if n <= 0:
        return None
    p, z2 = correct / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str], split: str) -> dict:
    """Top-1/top-5, balanced accuracy, per-class P/R/F1/support, macro & weighted averages, confusion matrices.

    A class with no predictions gets precision 0 (scikit-learn's ``zero_division=0``) and is counted;
    a class absent from the split has support 0 and is left out of the macro averages and balanced
    accuracy (so they average over the classes the split can measure). The block names its split
    and its size (``n``); ``accuracy_ci`` is the 95 % Wilson interval of the accuracy (:func:`wilson_interval`);
    ``confusion_matrix`` is raw counts (rows = true class),
    ``confusion_matrix_normalized`` divides each row by its support; ``most_confused`` lists the
    largest off-diagonal cells.

    Example:
        >>> m = classification_metrics(np.eye(2), np.array([0, 1]), ["a", "b"], "test")
        >>> m["accuracy"], m["n"]
        (1.0, 2)
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    k = len(classes)
    labels = np.asarray(labels, dtype=int)
    pred = probs.argmax(1) if len(labels) else np.zeros(0, int)
    if len(labels):
        p, r, f, s = precision_recall_fscore_support(labels, pred, labels=list(range(k)), zero_division=0)
    else:  # an empty split: scikit-learn refuses; every class is absent
        p = r = f = np.zeros(k)
        s = np.zeros(k, int)
    present = s > 0
    per_class = {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i]),
                     "predicted": int((pred == i).sum())}
                 for i, c in enumerate(classes)}
    total = max(int(s.sum()), 1)
    macro = {m: float(v[present].mean()) if present.any() else float("nan") for m, v in (("precision", p), ("recall", r), ("f1", f))}
    weighted = {m: float((v * s).sum() / total) for m, v in (("precision", p), ("recall", r), ("f1", f))}
    cm = confusion_matrix(labels, pred, labels=list(range(k))) if len(labels) else np.zeros((k, k), int)
    return {
        "split": split,
        "n": int(len(labels)),
        "accuracy": float((pred == labels).mean()) if len(labels) else float("nan"),
        "accuracy_ci": wilson_interval(int((pred == labels).sum()), len(labels)),
        "top5": topk_accuracy(probs, labels, 5),
        "balanced_accuracy": balanced_accuracy(cm),
        "macro": macro,
        "weighted": weighted,
        "per_class": per_class,
        "classes_absent": [c for i, c in enumerate(classes) if not present[i]],
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": np.round(row_normalize(cm), 6).tolist(),
        "most_confused": most_confused(cm, list(classes)),
        "classes": list(classes),
    }
