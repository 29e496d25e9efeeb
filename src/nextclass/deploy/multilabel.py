"""How a bundle answers: its ``task``, and for a multi-label bundle the per-label calibration and thresholds.

A multi-label bundle (issue 26) has in ``model.json``: ``task: "multi-label"``, ``classes`` (the L label names),
``offsets``, ``temperatures`` and ``thresholds`` (one per label, in that order) and ``threshold_rule``. Its network
outputs L raw logits; label ``l``'s calibrated probability is ``sigmoid((z_l - offset_l) / T_l)`` (the offset undoes
the training loss's positive weight, ``log w_l``; a bundle without offsets: 0)
(:func:`nextclass.metrics.multilabel.calibrated_probs`) and the label is predicted when that probability is at or
above its threshold (:func:`nextclass.metrics.multilabel.labels_above`). A bundle without ``task`` (or with
``"single-label"``) is a softmax classifier, as before.

Every backend (PyTorch, ONNX Runtime, the server) reads these numbers here, once, so that they answer alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nextclass.metrics.multilabel import DEFAULT_THRESHOLD, calibrated_probs, labels_above
from nextclass.utils import log

__all__ = ["SINGLE_LABEL", "MULTI_LABEL", "bundle_task", "LabelCalibration", "single_label_only"]

SINGLE_LABEL = "single-label"
MULTI_LABEL = "multi-label"


def bundle_task(meta: dict) -> str:
    """The bundle's task: ``single-label`` (also when ``model.json`` says none) or ``multi-label``.

    Raises:
        ValueError: any other value.

    Example:
        >>> bundle_task({}), bundle_task({"task": "multi-label"})
        ('single-label', 'multi-label')
    """
    task = meta.get("task") or SINGLE_LABEL
    if task not in (SINGLE_LABEL, MULTI_LABEL):
        raise ValueError(f"model.json task {task!r}: this nextclass knows {SINGLE_LABEL!r} and {MULTI_LABEL!r}")
    return task


def single_label_only(what: str) -> ValueError:
    """The error for a single-label feature asked of a multi-label bundle (one line, names the feature).

    Example:
        >>> str(single_label_only("prediction sets"))
        'prediction sets are for single-label models; this bundle is multi-label'
    """
    return ValueError(f"{what} are for single-label models; this bundle is multi-label")


def _per_label(meta: dict, key: str, default: float, n: int) -> np.ndarray:
    """``meta[key]`` as L floats; the default (logged) when the bundle has none; ValueError on a wrong length."""
    values = meta.get(key)
    if values is None:
        log(f"[yellow]NOTE[/]: this multi-label bundle has no '{key}': {default:g} for every label")
        return np.full(n, float(default))
    if isinstance(values, (int, float)):
        values = [values] * n
    if len(values) != n:
        raise ValueError(f"model.json '{key}' has {len(values)} values for {n} labels: the bundle is inconsistent")
    return np.asarray(values, np.float64)


@dataclass(frozen=True)
class LabelCalibration:
    """A multi-label bundle's per-label temperatures and thresholds (aligned with ``classes``).

    Example:
        >>> c = LabelCalibration.from_meta({"classes": ["a", "b"], "temperatures": [1.0, 2.0], "thresholds": [0.5, 0.9]})
        >>> p = c.probs(np.array([[2.0, 2.0]]))
        >>> p.round(4).tolist(), c.answers(p, ["a", "b"])
        ([[0.8808, 0.7311]], [[{'label': 'a', 'probability': 0.880797}]])
    """

    temperatures: np.ndarray
    thresholds: np.ndarray
    rule: str | None = None
    offsets: np.ndarray | None = None  # None: 0 for every label

    @classmethod
    def from_meta(cls, meta: dict) -> "LabelCalibration":
        """Read ``offsets`` (default 0), ``temperatures`` (default 1), ``thresholds`` (default 0.5) and
        ``threshold_rule``.

        Raises:
            ValueError: a list whose length is not the number of labels, or a temperature that is not positive.
        """
        n = len(meta["classes"])
        temps = _per_label(meta, "temperatures", 1.0, n)
        if not (temps > 0).all():
            raise ValueError(f"model.json 'temperatures' must all be positive, got {temps.tolist()}")
        offsets = _per_label(meta, "offsets", 0.0, n) if meta.get("offsets") is not None else None
        return cls(temps, _per_label(meta, "thresholds", DEFAULT_THRESHOLD, n), meta.get("threshold_rule"), offsets)

    def probs(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated per-label probabilities (N, L) of raw logits (N, L): ``sigmoid((z_l - offset_l) / T_l)``."""
        return calibrated_probs(logits, self.temperatures, self.offsets)

    def decisions(self, probs: np.ndarray) -> np.ndarray:
        """(N, L) booleans: each label predicted (probability at or above its threshold)."""
        return np.asarray(probs) >= self.thresholds

    def answers(self, probs: np.ndarray, labels: list[str]) -> list[list[dict]]:
        """Each row's predicted labels as ``{"label", "probability"}``, most probable first (``[]``: none)."""
        return labels_above(probs, labels, self.thresholds)

    def to_dict(self, labels: list[str]) -> dict:
        """JSON-ready: ``{"rule", "thresholds": {label: t}, "temperatures": {label: T}, "offsets": {label: o}}``."""
        off = self.offsets if self.offsets is not None else np.zeros(len(labels))
        return {"rule": self.rule, "thresholds": {c: float(t) for c, t in zip(labels, self.thresholds)},
                "temperatures": {c: float(t) for c, t in zip(labels, self.temperatures)},
                "offsets": {c: float(o) for c, o in zip(labels, off)}}
