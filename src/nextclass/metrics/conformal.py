"""Prediction sets with a coverage guarantee: split conformal prediction with adaptive (APS) or regularised (RAPS)
sets, for single-label classifiers.

Instead of one label, a *prediction set*: the smallest group of top-ranked classes that holds the true class with a
promised probability ``coverage`` (= 1 - alpha). The recipe (Vovk et al. 2005; Angelopoulos & Bates 2021, "A Gentle
Introduction to Conformal Prediction and Distribution-Free Uncertainty Quantification"):

1. A *conformity score* says how far down the model's ranking an image's label lies. APS (Romano, Sesia & Candès
   2020, "Classification with Valid and Adaptive Coverage") sums the calibrated probabilities of the classes
   ranked above the label and of the label itself; RAPS (Angelopoulos, Bates, Malik & Jordan 2020, "Uncertainty
   Sets for Image Classifiers using Conformal Prediction") adds ``penalty * max(0, rank - k_reg)`` so that sets
   beyond ``k_reg`` classes cost more (smaller, steadier sets when many classes share a little probability).
2. On the *validation* images (never test), the threshold ``q`` is the ``ceil((n + 1) * coverage)``-th smallest of
   the ``n`` scores (:func:`conformal_quantile`; the ``+ 1`` is the finite-sample correction).
3. A new image's set is every class whose score would be ``<= q`` (:func:`prediction_sets`): a prefix of its
   ranking.

**The promise.** If the new image and the validation images are exchangeable (drawn the same way, in any order),
the set holds its true class with probability at least ``coverage``, and, when the scores have no ties (continuous
probabilities), at most ``coverage + 1 / (n + 1)``. It is a promise on average over images, not for each class or
each image: :func:`set_metrics` measures it per class too. The temperature is fitted on the same validation images
as ``q`` (one number, a negligible use of them twice; ``bench/coverage.py`` measures the whole procedure).

**Val too small for the promise.** With ``n < coverage / (1 - coverage)`` validation images (``n < 1/alpha - 1``),
``ceil((n + 1) * coverage) > n``: no score is high enough, ``q`` is infinite and every set is every class
(:func:`min_calibration_size`; e.g. 19 images for 0.95, 99 for 0.99).

**Randomised, reproducibly.** nextclass trains, predicts and serves Romano et al.'s randomised APS: the label's
own probability counts with a factor ``u ~ U(0, 1)`` drawn per image (:func:`tie_breaks`, from a generator seeded
by the bundle's seed: per split in the scorer, per call in input order in ``predict`` and per request in the server,
so the same call gives the same sets). We measured the deterministic version (``u = 1``, :func:`class_scores` with
``u=None``) first: it keeps the promise too, but its sets crawl through the many classes of tiny probability of a
confident model (``bench/coverage.py``: mean size 3.5 instead of 1.1 on Fashion-MNIST at 0.90, and 4.9 instead of
0.9 on digits, whose test images the model gets all right) and its empty sets fall on the most confident images.
Either way coverage is exact (both bounds above, the scores being continuous), so when the model is more accurate
than the coverage asked for some sets are *empty* (99 % right, asked for 90 %: about 9 % of the sets are empty,
because an exact 90 % must miss 10 % somewhere; the predicted label is still given beside the set).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DEFAULT_COVERAGE", "tie_breaks", "MAX_KEPT_SCORES", "conformal_quantile", "min_calibration_size", "class_scores",
           "conformity_scores", "prediction_sets", "set_metrics", "sets_entry", "threshold_for", "check_coverage",
           "sets_block"]

DEFAULT_COVERAGE = 0.95  # the example value in messages; the config's default is off
#: Most validation scores a bundle keeps for thresholds at other coverage levels (a seeded random subsample above
#: it, itself exchangeable with new images: the promise holds with its own n).
MAX_KEPT_SCORES = 5000
_DECIMALS = 1e7  # kept scores are rounded *up* to 7 decimals: a threshold can only grow, never lose coverage


def check_coverage(coverage: float, name: str = "coverage") -> float:
    """``coverage`` as a float in (0, 1), else ValueError naming ``name``.

    Example:
        >>> check_coverage(0.9)
        0.9
    """
    try:
        c = float(coverage)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {coverage!r}: give a number in (0, 1), e.g. {DEFAULT_COVERAGE}") from None
    if not 0 < c < 1 or math.isnan(c):
        why = " (the share of sets that should hold the true class)" if name == "coverage" else ""
        raise ValueError(f"{name} {coverage!r}: give a number in (0, 1), e.g. {DEFAULT_COVERAGE}{why}")
    return c


def min_calibration_size(coverage: float) -> int:
    """The fewest validation images for which the threshold is finite: ``ceil(coverage / (1 - coverage))``.

    Example:
        >>> min_calibration_size(0.9), min_calibration_size(0.95), min_calibration_size(0.99)
        (9, 19, 99)
    """
    c = check_coverage(coverage)
    return int(math.ceil(c / (1 - c) - 1e-9))


def conformal_quantile(scores: np.ndarray, coverage: float, name: str = "coverage") -> float:
    """The split-conformal threshold: the ``ceil((n + 1) * coverage)``-th smallest of the ``n`` scores, ``inf``
    when that rank is beyond ``n`` (too few scores for the promise: every set is every class).

    Example:
        >>> conformal_quantile(np.arange(1, 40) / 100, 0.95)   # 39 scores: the 38th smallest
        0.38
        >>> conformal_quantile(np.array([0.1, 0.2]), 0.95)
        inf
    """
    s = np.sort(np.asarray(scores, np.float64).ravel())
    c = check_coverage(coverage, name)
    k = int(np.ceil((len(s) + 1) * c - 1e-9))  # 1e-9: (n + 1) * c computed in floats may overshoot an integer
    return float(s[k - 1]) if k <= len(s) else float("inf")


def class_scores(probs: np.ndarray, *, penalty: float = 0.0, k_reg: int = 1, u: np.ndarray | None = None) -> np.ndarray:
    """The score each class would have if it were the image's label (N x K), from calibrated probabilities.

    APS: the probability of the classes ranked above the class, plus its own (times ``u`` when randomised);
    RAPS adds ``penalty * max(0, rank - k_reg)`` (rank 1 = the top class). Ties in probability are ranked by
    class index, the same way every time.

    Example:
        >>> class_scores(np.array([[0.2, 0.7, 0.1]])).round(2).tolist()
        [[0.9, 0.7, 1.0]]
    """
    p = np.asarray(probs, np.float64)
    order = np.argsort(-p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1)
    cum = np.cumsum(ranked, axis=1)
    if u is not None:
        cum = cum - (1.0 - np.asarray(u, np.float64)[:, None]) * ranked
    if penalty:
        cum = cum + float(penalty) * np.maximum(0, np.arange(1, p.shape[1] + 1) - int(k_reg))
    out = np.empty_like(cum)
    np.put_along_axis(out, order, cum, axis=1)
    return out


def conformity_scores(probs: np.ndarray, labels: np.ndarray, **kw) -> np.ndarray:
    """The score of each image's true label (what the threshold is the quantile of); ``kw`` as :func:`class_scores`."""
    labels = np.asarray(labels, np.int64)
    return class_scores(probs, **kw)[np.arange(len(labels)), labels]


def prediction_sets(probs: np.ndarray, threshold: float, **kw) -> np.ndarray:
    """N x K booleans: class k is in image i's set (a prefix of its ranking; ``inf``: every class).

    Example:
        >>> prediction_sets(np.array([[0.2, 0.7, 0.1]]), 0.9).tolist()
        [[True, True, False]]
    """
    if threshold == float("inf"):
        return np.ones(np.shape(probs), bool)
    return class_scores(probs, **kw) <= threshold


def set_metrics(sets: np.ndarray, labels: np.ndarray, classes: list[str], predicted: np.ndarray | None = None) -> dict:
    """Empirical coverage overall (with its 95 % Wilson interval) and per class, and the set sizes.

    Args:
        sets: N x K booleans (:func:`prediction_sets`).
        predicted: the top-1 class of each image, for the accuracy of the singleton sets' label (None: the
            singleton's class itself).

    Returns:
        ``n``, ``coverage``, ``coverage_ci``, ``per_class`` (class -> ``n``, ``coverage``, ``mean_size``),
        ``mean_size``, ``median_size``, ``size_histogram`` (count of sets of 0, 1, ..., K classes), ``empty``
        and ``singleton`` (shares), ``singleton_accuracy`` (how often a one-class set is right; None without one).
    """
    from nextclass.metrics.classification import wilson_interval

    sets, labels = np.asarray(sets, bool), np.asarray(labels, np.int64)
    n, k = sets.shape if sets.ndim == 2 else (0, len(classes))
    hit = sets[np.arange(n), labels] if n else np.zeros(0, bool)
    size = sets.sum(axis=1) if n else np.zeros(0, np.int64)
    per = {}
    for j, c in enumerate(classes):
        m = labels == j
        per[c] = {"n": int(m.sum()), "coverage": float(hit[m].mean()) if m.any() else None,
                  "mean_size": float(size[m].mean()) if m.any() else None}
    one = size == 1
    return {"n": int(n), "coverage": float(hit.mean()) if n else None, "coverage_ci": wilson_interval(int(hit.sum()), n),
            "per_class": per, "mean_size": float(size.mean()) if n else None,
            "median_size": float(np.median(size)) if n else None,
            "size_histogram": np.bincount(size, minlength=k + 1).astype(int).tolist(),
            "empty": float((size == 0).mean()) if n else None, "singleton": float(one.mean()) if n else None,
            "singleton_accuracy": float(hit[one].mean()) if one.any() else None}


def tie_breaks(entry: dict, n: int, stream: int | str = 0) -> np.ndarray | None:
    """The ``u ~ U(0, 1)`` of ``n`` images for a randomised ``sets`` entry (None for a deterministic one): seeded by the
    entry's seed and ``stream`` (a split's name in the scorer; 0 for ``predict``, drawn in input order).

    Example:
        >>> e = {"randomized": True, "seed": 0}
        >>> bool((tie_breaks(e, 2) == tie_breaks(e, 3)[:2]).all()), tie_breaks({"randomized": False}, 2)
        (True, None)
    """
    if not entry.get("randomized"):
        return None
    if isinstance(stream, str):
        import zlib

        stream = zlib.crc32(stream.encode())
    return np.random.default_rng([int(entry.get("seed", 0)), int(stream)]).uniform(size=n)


def sets_entry(probs: np.ndarray, labels: np.ndarray, coverage: float | None, *, penalty: float = 0.0,
               k_reg: int = 1, randomized: bool = True, seed: int = 0, max_kept: int = MAX_KEPT_SCORES) -> dict:
    """The bundle's ``sets`` entry, fitted on *validation* probabilities (calibrated) and labels.

    Args:
        coverage: the trained coverage (None: keep only the scores, so ``predict --coverage`` can choose one).

    Returns:
        ``coverage``, ``threshold`` (None when off or when val is too small: then ``too_small`` is True and every
        set is every class), ``val_n``, ``min_val_n``, the method (``score``, ``penalty``, ``k_reg``,
        ``randomized``, ``seed``) and ``val_scores``: the sorted scores (rounded up to 7 decimals; a seeded subsample of
        :data:`MAX_KEPT_SCORES` when val is larger) from which :func:`threshold_for` serves other levels.
    """
    entry = {"score": "raps" if penalty else "aps", "penalty": float(penalty), "k_reg": int(k_reg),
             "randomized": bool(randomized), "seed": int(seed)}
    s = conformity_scores(probs, labels, penalty=penalty, k_reg=k_reg, u=tie_breaks(entry, len(labels), "val"))
    kept = s if len(s) <= max_kept else np.random.default_rng(seed).choice(s, max_kept, replace=False)
    entry.update({"coverage": None, "threshold": None, "too_small": False, "val_n": int(len(s)),
             "min_val_n": None, "val_scores": (np.ceil(np.sort(kept) * _DECIMALS) / _DECIMALS).tolist()})
    if coverage is not None:
        q = conformal_quantile(s, coverage)
        entry.update(coverage=float(coverage), threshold=None if math.isinf(q) else q, too_small=math.isinf(q),
                     min_val_n=min_calibration_size(coverage))
    return entry


def threshold_for(entry: dict, coverage: float | None = None) -> float:
    """The threshold for ``coverage`` (None: the entry's own, fitted on all of val) from a ``sets`` entry;
    ``inf`` when val is too small for that coverage (every set is every class).

    Raises:
        ValueError: a bad ``coverage``, or none given and none trained.
    """
    own = entry.get("coverage")
    if coverage is None or (own is not None and float(coverage) == float(own)):
        if own is None:
            raise ValueError("coverage: this model was trained without one; give one, e.g. 0.95")
        return float("inf") if entry.get("too_small") or entry.get("threshold") is None else float(entry["threshold"])
    return conformal_quantile(np.asarray(entry.get("val_scores") or [], np.float64), check_coverage(coverage))


def sets_block(probs: np.ndarray, labels: np.ndarray, classes: list[str], entry: dict, stream: str = "test") -> dict:
    """What ``metrics.json`` keeps per split for a bundle trained with a coverage: the trained threshold's sets on
    these images (:func:`set_metrics`), beside the promise they are measured against. ``stream``: the images'
    block name, which seeds their tie-breaks (:func:`tie_breaks`), so the same block always gets the same sets.

    Example:
        >>> e = sets_entry(np.array([[0.8, 0.2]] * 20), np.zeros(20, int), 0.9, randomized=False)
        >>> b = sets_block(np.array([[0.6, 0.4], [0.9, 0.1]]), np.array([0, 0]), ["a", "b"], e)
        >>> b["coverage"], b["size_histogram"]
        (0.5, [1, 1, 0])
    """
    q = threshold_for(entry)
    sets = prediction_sets(probs, q, penalty=entry.get("penalty", 0.0), k_reg=entry.get("k_reg", 1),
                           u=tie_breaks(entry, len(probs), stream))
    out = {"target": entry["coverage"], "threshold": None if math.isinf(q) else q, "too_small": math.isinf(q),
           "val_n": entry.get("val_n"), "min_val_n": entry.get("min_val_n"), "score": entry.get("score", "aps"),
           "randomized": bool(entry.get("randomized")), "penalty": entry.get("penalty", 0.0),
           "k_reg": entry.get("k_reg", 1)}
    predicted = np.asarray(probs).argmax(axis=1) if len(labels) else None
    return {**out, **set_metrics(sets, labels, classes, predicted)}
