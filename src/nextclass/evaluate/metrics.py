"""Classification metrics (scikit-learn underneath), labelled with the split and its size."""

from __future__ import annotations

import numpy as np

__all__ = ["softmax", "classification_metrics", "topk_accuracy"]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    if len(labels) == 0:
        return float("nan")
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classes: list[str], split: str) -> dict:
    """Top-1/top-5, per-class precision/recall/F1/support, macro & weighted averages, confusion matrix.

    A class with no predictions gets precision 0 (scikit-learn's ``zero_division=0``) and is counted;
    a class absent from the split has support 0 and is left out of the macro average (so the
    average is over the classes the split can measure).

    Example:
        >>> m = classification_metrics(np.eye(2), np.array([0, 1]), ["a", "b"], "test")
        >>> m["accuracy"], m["n"]
        (1.0, 2)
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    k = len(classes)
    labels = np.asarray(labels, dtype=int)
    pred = probs.argmax(1) if len(labels) else np.zeros(0, int)
    p, r, f, s = precision_recall_fscore_support(labels, pred, labels=list(range(k)), zero_division=0)
    present = s > 0
    per_class = {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                 for i, c in enumerate(classes)}
    total = max(int(s.sum()), 1)
    macro = {m: float(v[present].mean()) if present.any() else float("nan") for m, v in (("precision", p), ("recall", r), ("f1", f))}
    weighted = {m: float((v * s).sum() / total) for m, v in (("precision", p), ("recall", r), ("f1", f))}
    cm = confusion_matrix(labels, pred, labels=list(range(k))) if len(labels) else np.zeros((k, k), int)
    return {
        "split": split,
        "n": int(len(labels)),
        "accuracy": float((pred == labels).mean()) if len(labels) else float("nan"),
        "top5": topk_accuracy(probs, labels, 5),
        "macro": macro,
        "weighted": weighted,
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }
