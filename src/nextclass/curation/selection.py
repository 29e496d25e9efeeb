"""Which unlabelled images to label next, from probabilities and embeddings alone (no files, no model).

:func:`select` is the pure part of ``nextclass suggest`` (:mod:`nextclass.curation.suggest` feeds it a
run's calibrated probabilities and trunk features); ``bench/active.py`` feeds it a logistic head's.

* **uncertainty**: ``u = 1 - margin``, the margin being the gap between the two largest calibrated
  probabilities (Scheffer et al. 2001; margin beats entropy when there are many classes, because
  entropy rewards images spread over classes nobody would confuse).
* **diversity**: uncertainty alone picks near-identical images from the one confusing region
  (Sener & Savarese 2018, "core-set"). ``suggest`` picks like k-means++ seeding (Arthur & Vassilvitskii
  2007), weighted by uncertainty: each pick is drawn with probability proportional to
  ``u * d^2``, ``d`` the embedding distance to the nearest image already labelled or already picked.
  Drawing (seeded) instead of taking the maximum, as BADGE does (Ash et al. 2020), avoids the greedy
  k-center habit of picking the outliers at the edge of the space.
* **near-duplicates of labelled images** are never picked: a candidate whose distance to its nearest
  labelled image is at most ``threshold`` is skipped (and any the caller names in ``exclude``:
  ``suggest`` adds the audit's pixel-level same-picture check). The threshold comes from the data:
  :data:`DUPLICATE_FRACTION` x the 5th percentile of the distances between a labelled image and its
  nearest other labelled image - closer to a labelled image than the closest labelled pictures are to
  each other. Distances are Euclidean on L2-normalised embeddings.

  NOTE: measured on a scratch CNN's trunk (tests/test_suggest.py), a JPEG re-encode of a training image
  moves its embedding as far as a different picture of the same class, while exact copies stay at ~0:
  embedding distance alone finds exact and near-exact copies; re-encoded or resized copies need the
  pixel check.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Selection", "select", "unit", "nearest_distance", "duplicate_threshold", "margins", "STRATEGIES",
           "DUPLICATE_FRACTION"]

STRATEGIES = ("suggest", "uncertainty", "random")
DUPLICATE_FRACTION = 0.25  # of the 5th percentile of nearest-labelled-neighbour distances among labelled images
DUPLICATE_QUANTILE = 5.0


@dataclass
class Selection:
    """``order[r]`` indexes the candidates; ``score[r]`` and ``reason[r]`` describe pick ``r``."""

    order: np.ndarray
    score: np.ndarray
    reason: list[str]
    skipped: np.ndarray  # candidates skipped as near-duplicates of labelled images
    threshold: float
    threshold_note: str
    left_out: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # ``leave_out`` candidates


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32)."""
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_distance(queries: np.ndarray, refs: np.ndarray, *, exclude_self: bool = False,
                     chunk: int = 1024) -> np.ndarray:
    """Euclidean distance from each unit row of ``queries`` to its nearest unit row of ``refs`` (chunked)."""
    out = np.full(len(queries), np.inf, dtype=np.float32)
    if len(refs) == 0:
        return out
    for s in range(0, len(queries), chunk):
        sim = queries[s:s + chunk] @ refs.T
        if exclude_self:
            sim[np.arange(len(sim)), np.arange(s, s + len(sim))] = -np.inf
        out[s:s + chunk] = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * sim.max(axis=1)))
    return out


def duplicate_threshold(labelled: np.ndarray, seed: int = 0, sample: int = 2000) -> tuple[float, str]:
    """(threshold, how it was set): see the module docstring. Up to ``sample`` labelled images are measured."""
    if len(labelled) < 2:
        return 0.0, "fewer than 2 labelled images: no near-duplicate check"
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(labelled), min(sample, len(labelled)), replace=False)
    others = np.delete(np.arange(len(labelled)), idx)
    d = np.minimum(nearest_distance(labelled[idx], labelled[idx], exclude_self=True),
                   nearest_distance(labelled[idx], labelled[others]))
    q = float(np.percentile(d, DUPLICATE_QUANTILE))
    return DUPLICATE_FRACTION * q, (f"{DUPLICATE_FRACTION} x {q:.4g}, the {DUPLICATE_QUANTILE:g}th percentile of the "
                                    f"distance from a labelled image to its nearest labelled neighbour "
                                    f"({len(idx)} measured, median {np.median(d):.4g})")


def margins(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row."""
    top = np.sort(np.asarray(probs, dtype=np.float64), axis=1)
    return top[:, -1] - top[:, -2]


#: A pick is called ``uncertain`` when its top two probabilities are closer than this (margin), whatever the
#: rest of the pool looks like: "above the pool's median uncertainty" called a p = 0.999 image uncertain.
UNCERTAIN_MARGIN = 0.5


def _reasons(u: np.ndarray, d: np.ndarray, picks: np.ndarray) -> list[str]:
    """Why each pick was made: ``uncertain`` (margin < :data:`UNCERTAIN_MARGIN`), ``far from labelled`` (farther
    from every labelled image than the median candidate), else ``diversity`` (a confident image in a part of the
    embedding the other picks do not cover)."""
    d_med = np.median(d[np.isfinite(d)]) if np.isfinite(d).any() else 0.0
    out = []
    for i in picks:
        parts = (["uncertain"] if 1.0 - u[i] < UNCERTAIN_MARGIN else []) + (["far from labelled"] if d[i] >= d_med else [])
        out.append(" + ".join(parts) or "diversity")
    return out


def _kmeanspp(x: np.ndarray, u: np.ndarray, d: np.ndarray, n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Uncertainty-weighted k-means++ seeding: ``n`` picks, each with probability ~ ``u * d^2``; ``d`` updated."""
    d = d.copy()
    picks, scores = [], []
    for _ in range(n):
        w = u * np.square(np.where(np.isfinite(d), d, 2.0))
        w[picks] = 0.0
        if w.sum() <= 0:
            w = np.ones(len(w))
            w[picks] = 0.0
        i = int(rng.choice(len(w), p=w / w.sum()))
        picks.append(i)
        scores.append(float(w[i] / w.max()))
        d = np.minimum(d, np.sqrt(np.maximum(0.0, 2.0 - 2.0 * (x @ x[i]))))
    return np.array(picks, dtype=np.int64), np.array(scores)


def select(probs: np.ndarray, features: np.ndarray, labelled: np.ndarray, n: int, *, strategy: str = "suggest",
           seed: int = 0, exclude=(), leave_out=()) -> Selection:
    """Pick ``n`` candidates to label.

    Args:
        probs: (N, K) calibrated class probabilities of the candidates.
        features: (N, D) their embeddings.
        labelled: (M, D) embeddings of the images already labelled (for diversity and duplicates).
        n: how many to pick (fewer when fewer candidates are left).
        strategy: ``suggest`` (uncertainty x diversity), ``uncertainty`` (smallest margins) or ``random``.
        seed: seed of the draws.
        exclude: candidates to skip as well (e.g. verified copies of labelled images).
        leave_out: candidates never to pick for another reason than duplication (``suggest --skip-unfamiliar``:
            images unlike every training image); they are not counted in ``skipped`` but in ``left_out``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> sel = select(rng.dirichlet(np.ones(3), 50), rng.normal(size=(50, 8)), rng.normal(size=(20, 8)), 5)
        >>> len(sel.order), sel.order.dtype
        (5, dtype('int64'))
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    x, lab = unit(features), unit(labelled) if len(labelled) else np.zeros((0, np.prod(features.shape[1:])), np.float32)
    d = nearest_distance(x, lab)
    thr, note = duplicate_threshold(lab, seed)
    skipped = np.union1d(np.flatnonzero(d <= thr) if thr > 0 else np.zeros(0, np.int64),
                         np.asarray(list(exclude), dtype=np.int64)).astype(np.int64)
    left_out = np.setdiff1d(np.asarray(list(leave_out), dtype=np.int64), skipped)
    ok = np.setdiff1d(np.arange(len(x)), np.union1d(skipped, left_out))
    u = 1.0 - margins(probs)
    n = min(int(n), len(ok))
    rng = np.random.default_rng(seed)
    if strategy == "random":
        picks, score = rng.choice(ok, n, replace=False), np.zeros(n)
    elif strategy == "uncertainty":
        picks = ok[np.argsort(-u[ok], kind="stable")[:n]]
        score = u[picks]
    else:
        sub, score = _kmeanspp(x[ok], np.maximum(u[ok], 1e-6), d[ok], n, rng)
        picks = ok[sub]
    return Selection(np.asarray(picks, np.int64), np.asarray(score, float), _reasons(u, d, picks), skipped, thr, note,
                     left_out)
