"""Selective classification: when to abstain. Confidence scores, a threshold for a target accuracy, risk-coverage.

A *score* says how much to trust one prediction (higher = more trustworthy):

* ``probability``: the maximum calibrated probability (softmax of logits / T), the classic baseline
  (Hendrycks & Gimpel 2017, "A Baseline for Detecting Misclassified and Out-of-Distribution Examples").
* ``margin``: the gap between the two highest calibrated probabilities.
* ``energy``: minus the free energy, ``T * logsumexp(logits / T)`` (Liu et al. 2020, "Energy-based
  Out-of-distribution Detection"); it needs the logits, not only the probabilities.

:func:`choose_threshold` picks, on *validation* predictions, the lowest threshold whose accepted
predictions are at least ``target_accuracy`` right (the largest coverage that meets the target); the
predictor abstains below it. :func:`selective_block` is what ``metrics.json`` keeps per split: the AUROC of
telling right from wrong predictions for each score (scikit-learn's ``roc_auc_score``) and the
risk-coverage curve.

**Which score decides what (the defaults, from ``bench/open_set.py``).** Two questions, two scores. On
Fashion-MNIST trained without Shirt and Bag (simple_cnn, 6 epochs, official test, 2026-12-05; see
``bench/RESULTS.md``), the AUROC of each score was:

=====================================  ===========  ======  ======  ============
question                               probability  margin  energy  kNN distance
=====================================  ===========  ======  ======  ============
right vs wrong (8 known classes)       0.919        0.920   0.898   0.819
known vs unknown class                 0.848        0.843   0.840   **0.880**
=====================================  ===========  ======  ======  ============

* *Is this prediction right?* decides ``abstained``: :data:`DEFAULT_SCORE` stays ``probability``. Margin's lead
  (0.001) is far below the sampling error of an AUROC from ~500 wrong predictions (about 0.006), their
  risk-coverage curves overlap, and the calibrated probability is the one a user can read as a chance.
  Energy and the kNN distance rank right from wrong predictions worse.
* *Is this image like the training images at all?* decides ``unfamiliar``: the distance to the nearest
  training image in the bundle's neighbour index (:mod:`nextclass.neighbors`) is the best score for images of
  classes never seen in training (0.880 vs 0.848; with Sneaker and Pullover left out instead, energy leads it
  0.726 to 0.711, and the distance stays first on the average of the two pairs), so it gets a threshold of its
  own, :func:`distance_threshold`, chosen on *val* at a fixed false-alarm rate (:data:`UNFAMILIAR_QUANTILE`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["SCORES", "THRESHOLD_SCORES", "DEFAULT_SCORE", "UNFAMILIAR_QUANTILE", "scores_from_logits", "score_from_probs",
           "choose_threshold", "coverage_curve", "threshold_from_curve", "auroc", "selective_block", "abstain_entry",
           "distance_threshold"]

SCORES = ("probability", "margin", "energy")
#: Scores the predictor can threshold: they are computed from calibrated probabilities alone, so they work on
#: every backend and in the server's micro-batches (which return probabilities).
THRESHOLD_SCORES = ("probability", "margin")
DEFAULT_SCORE = "probability"
#: Share of validation images *not* flagged ``unfamiliar``: at most 5% of new images drawn like the training
#: data are flagged (the usual 5% significance level); the flag is a warning beside the label, not an abstention.
UNFAMILIAR_QUANTILE = 0.95
CURVE_POINTS = 256  # points of the val curve kept in model.json (for a target accuracy chosen at predict time)


def score_from_probs(probs: np.ndarray, score: str = DEFAULT_SCORE) -> np.ndarray:
    """``probability`` or ``margin`` of each row of calibrated probabilities (N x K)."""
    if score == "probability":
        return probs.max(axis=1)
    if score == "margin":
        if probs.shape[1] < 2:
            return probs[:, 0]
        top2 = np.partition(probs, -2, axis=1)[:, -2:]
        return top2[:, 1] - top2[:, 0]
    raise ValueError(f"Invalid abstain score {score!r}. Only {', '.join(THRESHOLD_SCORES)} can be thresholded.")


def scores_from_logits(logits: np.ndarray, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """Every score of :data:`SCORES` for logits (N x K), at calibration temperature ``temperature``.

    Example:
        >>> s = scores_from_logits(np.array([[4.0, 0.0], [0.1, 0.0]]))
        >>> bool(s["probability"][0] > s["probability"][1]), sorted(s)
        (True, ['energy', 'margin', 'probability'])
    """
    z = np.asarray(logits, np.float64) / float(temperature)
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    probs = np.exp(z - lse[:, None])
    return {"probability": score_from_probs(probs, "probability"), "margin": score_from_probs(probs, "margin"),
            "energy": float(temperature) * lse}


def coverage_curve(scores: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accepting every prediction with score >= t, for each distinct t (descending): (t, coverage, accuracy)."""
    scores, correct = np.asarray(scores, np.float64), np.asarray(correct, bool)
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], correct[order]
    n = len(s)
    if n == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    last = np.r_[s[1:] != s[:-1], True]  # a threshold must accept every tie of its score
    k = np.flatnonzero(last) + 1
    return s[k - 1], k / n, np.cumsum(c)[k - 1] / k


def choose_threshold(scores: np.ndarray, correct: np.ndarray, target_accuracy: float) -> tuple[float, float, float]:
    """The lowest threshold whose accepted predictions are at least ``target_accuracy`` right.

    Returns:
        ``(threshold, coverage, accuracy)`` of the accepted predictions on these (validation) images. When no
        threshold reaches the target, the threshold lies above every score: coverage 0 (abstain on all).

    Example:
        >>> choose_threshold(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 1, 0, 1]), 0.99)
        (0.8, 0.5, 1.0)
    """
    t, cov, acc = coverage_curve(scores, correct)
    ok = np.flatnonzero(acc >= target_accuracy - 1e-12)
    if len(ok) == 0:
        top = float(np.max(scores)) if len(scores) else 1.0
        return float(np.nextafter(top, np.inf)), 0.0, float("nan")
    i = ok[-1]
    return float(t[i]), float(cov[i]), float(acc[i])


def threshold_from_curve(curve: list, target_accuracy: float) -> tuple[float, float]:
    """``(threshold, val coverage)`` for a target from the ``[t, coverage, accuracy]`` rows kept in ``model.json``."""
    ok = [row for row in curve if row[2] is not None and row[2] >= target_accuracy - 1e-12]
    if not ok:
        top = max((row[0] for row in curve), default=1.0)
        return float(np.nextafter(top, np.inf)), 0.0
    best = max(ok, key=lambda row: row[1])
    return float(best[0]), float(best[1])


def _thin(rows: np.ndarray, n: int = CURVE_POINTS) -> list[list[float]]:
    if len(rows) > n:
        rows = rows[np.unique(np.linspace(0, len(rows) - 1, n).round().astype(int))]
    return [[float(x) for x in r] for r in rows]


def auroc(scores: np.ndarray, correct: np.ndarray) -> float | None:
    """AUROC of ``scores`` separating right (positive) from wrong predictions; None when either is absent."""
    from sklearn.metrics import roc_auc_score

    correct = np.asarray(correct, bool)
    if correct.all() or not correct.any():
        return None
    return float(roc_auc_score(correct, scores))


def selective_block(logits: np.ndarray, labels: np.ndarray, temperature: float,
                    threshold: dict | None = None) -> dict:
    """What ``metrics.json`` keeps per split: AUROC per score, the risk-coverage curve, the threshold's coverage.

    Args:
        threshold: the bundle's ``abstain`` entry (``score``, ``threshold``) when one was chosen.
    """
    scores = scores_from_logits(logits, temperature)
    correct = np.asarray(logits).argmax(axis=1) == np.asarray(labels)
    t, cov, acc = coverage_curve(scores[DEFAULT_SCORE], correct)
    out = {"auroc": {name: auroc(s, correct) for name, s in scores.items()},
           "curve_score": DEFAULT_SCORE,
           "risk_coverage": _thin(np.stack([t, cov, 1.0 - acc], axis=1)) if len(t) else []}
    if threshold and threshold.get("threshold") is not None:
        s = scores[threshold["score"]]
        keep = s >= threshold["threshold"]
        out["at_threshold"] = {"threshold": threshold["threshold"], "score": threshold["score"],
                               "coverage": float(keep.mean()) if len(keep) else 0.0,
                               "accuracy": float(correct[keep].mean()) if keep.any() else None}
    return out


def abstain_entry(logits: np.ndarray, labels: np.ndarray, temperature: float, target_accuracy: float | None,
                  score: str = DEFAULT_SCORE) -> dict:
    """The bundle's ``abstain`` entry, from *validation* logits: the threshold for ``target_accuracy`` (None: none
    chosen), its val coverage and accuracy, and the val curve ``[threshold, coverage, accuracy]`` (thinned to
    :data:`CURVE_POINTS` rows) from which a target given at predict time is turned into a threshold.
    """
    s = scores_from_logits(logits, temperature)[score]
    correct = np.asarray(logits).argmax(axis=1) == np.asarray(labels)
    t, cov, acc = coverage_curve(s, correct)
    entry = {"score": score, "target_accuracy": target_accuracy, "threshold": None, "val_coverage": None,
             "val_accuracy": None, "val_n": int(len(s)), "curve": _thin(np.stack([t, cov, acc], axis=1))}
    if target_accuracy is not None:
        th, c, a = choose_threshold(s, correct, target_accuracy)
        entry.update(threshold=th, val_coverage=c, val_accuracy=None if np.isnan(a) else a)
    return entry


def distance_threshold(distances: np.ndarray, quantile: float = UNFAMILIAR_QUANTILE) -> float:
    """The nearest-training-image distance above which an image is ``unfamiliar``, from *validation* distances.

    The split-conformal quantile: the ``ceil((n + 1) * quantile)``-th smallest of the ``n`` validation
    distances, so a new image drawn like the validation images exceeds it with probability at most
    ``1 - quantile`` (Vovk et al. 2005; Angelopoulos & Bates 2021, "A Gentle Introduction to Conformal
    Prediction"). With too few validation images for that rank it is ``inf``: never flag.

    Example:
        >>> distance_threshold(np.arange(1, 40) / 100, 0.95)   # 39 distances: the 38th smallest
        0.38
        >>> distance_threshold(np.array([0.1, 0.2]), 0.95)
        inf
    """
    from nextclass.metrics.conformal import conformal_quantile

    return conformal_quantile(distances, quantile, name="quantile")
