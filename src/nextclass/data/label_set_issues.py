"""Label issues of multi-label data (issue 26): which labels of which images are probably wrong.

The multi-label counterpart of :mod:`nextclass.data.label_issues` (which holds the single-label finder, the quality
gate and the run-level entry points that call this module). A multi-label image can be wrong in two ways per label:
a label it carries that is not in the picture (*remove*), or one that is in the picture but was left out (*add*).

* :func:`cross_val_label_heads`: out-of-sample per-label probabilities from embeddings, one binary logistic head per
  label (one-vs-rest), each row predicted by a head that never saw it, on the same reduced features as the
  single-label heads (:func:`nextclass.data.label_heads.reduce_features`); folds are stratified per label, so a
  rare label's few positives are spread over the folds.
* :func:`find_multilabel_issues`: cleanlab's multi-label confident learning
  (``cleanlab.multilabel_classification.filter.find_multilabel_issues_per_class``: each label judged as a
  one-vs-rest binary problem with noise-rate pruning, as ``cleanlab.filter.find_label_issues(..., multi_label=True)``
  does before it merges the labels), keeping which label of an image is doubted, so the flag says what to change.
  The guard of the single-label finder, per label: a flag needs the model to prefer the other value (a carried label
  below 0.5, a missing one at or above it).
* :func:`set_issues_block`, :func:`write_set_issues_csv`, :func:`read_multilabel_predictions`: the ``label_issues``
  block of ``audit.json``, ``label_issues.csv`` and a finished run's ``predictions*.csv`` read back.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nextclass.data.label_heads import CrossVal, choose_c, reduce_features
from nextclass.utils import atomic_write_text, log

__all__ = ["SetIssue", "find_multilabel_issues", "cross_val_label_heads", "set_issues_block", "write_set_issues_csv",
           "read_multilabel_predictions", "set_text", "recentre"]

C_LABELS = 3  # labels the common C of the per-label heads is chosen on (the most balanced ones): ~3 s each on 2 cores


@dataclass(frozen=True)
class SetIssue:
    """One image whose label set is probably wrong: ``position`` indexes the inputs, ``given``/``suggested`` are label
    indices (``suggested``: ``given`` with ``added`` put in and ``removed`` taken out); ``score`` is the model's
    probability of the given value of the most doubted label (lower: more likely wrong); ``rank`` 1 is the most
    suspicious."""

    position: int
    given: tuple[int, ...]
    suggested: tuple[int, ...]
    added: tuple[int, ...]
    removed: tuple[int, ...]
    score: float
    rank: int


def set_text(indices: Sequence[int], classes: Sequence[str]) -> str:
    """Label indices as a manifest writes them (``a;b``; empty for none).

    Example:
        >>> set_text((0, 2), ["blue", "green", "red"]), set_text((), ["a"])
        ('blue;red', '')
    """
    return ";".join(classes[j] for j in indices)


def recentre(probs, thresholds) -> np.ndarray:
    """Per-label probabilities moved so that each label's decision threshold sits at 0.5: ``sigmoid(logit(p) -
    logit(t_l))``. A trained multi-label model decides a label at its own threshold (chosen on val, often far from
    0.5); judged at 0.5 its decisions would not be the ones it makes. Order within a label is kept.

    Example:
        >>> recentre(np.array([[0.3, 0.3]]), [0.3, 0.5]).round(3).tolist()
        [[0.5, 0.3]]
    """
    p = np.clip(np.asarray(probs, np.float64), 1e-7, 1 - 1e-7)
    t = np.clip(np.asarray(thresholds, np.float64), 1e-7, 1 - 1e-7)
    z = np.log(p / (1 - p)) - np.log(t / (1 - t))
    return 1.0 / (1.0 + np.exp(-z))


def _check(probs, targets) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(probs, np.float64), np.asarray(targets)
    if p.ndim != 2 or y.shape != p.shape:
        raise ValueError(f"probs and targets must both be (N, L), got shapes {p.shape} and {y.shape}")
    if ((p < 0) | (p > 1)).any() or not np.isin(y, (0, 1)).all():
        raise ValueError("probs must be per-label probabilities in [0, 1] and targets a 0/1 matrix")
    return p, y.astype(np.int64)


def _per_label_flags(p: np.ndarray, y: np.ndarray, filter_by: str) -> np.ndarray:
    """(N, L) cleanlab flags, one binary problem per label (a label all 0 or all 1 among the given labels: none)."""
    from cleanlab.multilabel_classification.filter import find_multilabel_issues_per_class

    flags = np.zeros(y.shape, bool)
    both = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]  # cleanlab needs both values of a label
    if not both:
        return flags
    lists = [list(np.flatnonzero(row)) for row in y[:, both]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tiny labels: the guard and the per-label gate handle them
        per = np.asarray(find_multilabel_issues_per_class(lists, p[:, both], filter_by=filter_by, n_jobs=1), bool)
    # cleanlab 2.9 returns an (N, K) mask (its docstring says a list of K masks): take either
    flags[:, both] = per if per.shape == (len(y), len(both)) else per.T
    return flags


def find_multilabel_issues(probs, targets, *, judged: Sequence[bool] | None = None,
                           filter_by: str = "prune_by_noise_rate", min_probability: float = 0.5) -> list[SetIssue]:
    """Images whose given label set is probably wrong, most suspicious first, with the labels to add or remove.

    Args:
        probs: (N, L) *out-of-sample* per-label probabilities (sigmoid outputs: rows need not sum to 1), e.g.
            :func:`cross_val_label_heads` or a run's calibrated val/test probabilities.
        targets: (N, L) given labels, 0/1.
        judged: one bool per label: only these labels may be doubted (the per-label quality gate of
            :func:`nextclass.data.label_issues.label_gates`); None judges every label.
        filter_by: cleanlab's rule (``prune_by_noise_rate``, ``prune_by_class``, ``both``, ``confident_learning``...).
        min_probability: a carried label is doubted only when the model gives it less than this, a missing one only
            when the model gives it at least this (0.5: the model prefers the other value).

    Returns:
        :class:`SetIssue` per flagged image, ranked by the probability of the given value of its most doubted label.

    Example:
        >>> p = np.array([[0.95, 0.05]] * 20 + [[0.05, 0.95]] * 20)
        >>> y = np.array([[1, 0]] * 20 + [[0, 1]] * 19 + [[1, 1]])  # the last image wrongly carries label 0 too
        >>> [(i.position, i.removed, i.added) for i in find_multilabel_issues(p, y)]
        [(39, (0,), ())]
    """
    p, y = _check(probs, targets)
    flags = _per_label_flags(p, y, filter_by) if len(y) else np.zeros(y.shape, bool)
    flags &= np.where(y == 1, p < min_probability, p >= min_probability)  # the model prefers the other value
    if judged is not None:
        flags &= np.asarray(judged, bool)[None, :]
    given_p = np.where(y == 1, p, 1.0 - p)  # the model's probability of each given value
    rows = np.flatnonzero(flags.any(axis=1))
    score = np.where(flags, given_p, np.inf).min(axis=1)
    rows = rows[np.lexsort((rows, score[rows]))]
    out = []
    for r, i in enumerate(rows):
        given = tuple(int(j) for j in np.flatnonzero(y[i]))
        added = tuple(int(j) for j in np.flatnonzero(flags[i] & (y[i] == 0)))
        removed = tuple(int(j) for j in np.flatnonzero(flags[i] & (y[i] == 1)))
        suggested = tuple(sorted((set(given) - set(removed)) | set(added)))
        out.append(SetIssue(int(i), given, suggested, added, removed, float(score[i]), r + 1))
    return out


def _common_c(x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> float:
    """One C for every label's head: the geometric median of the C chosen by cross-validated log-loss
    (:func:`~nextclass.data.label_heads.choose_c`) on up to ``C_LABELS`` labels with the most balanced values."""
    balance = np.minimum(y.sum(axis=0), len(y) - y.sum(axis=0))
    chosen = []
    for j in np.argsort(-balance, kind="stable")[:C_LABELS]:
        if balance[j] >= 2:
            try:
                chosen.append(choose_c(x, y[:, j], folds=folds, seed=seed))
            except ValueError:  # a label too rare for the inner folds: it does not vote
                pass
    return float(np.exp(np.median(np.log(chosen)))) if chosen else 1.0


def _label_probs(x: np.ndarray, t: np.ndarray, C: float, folds: int, seed: int) -> np.ndarray:
    """Out-of-sample probabilities of one label: stratified folds of its own values; a fold whose training part holds
    one value only predicts that value's share (a label with one positive is never seen by the head judging it)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    pos = int(t.sum())
    out = np.full(len(t), pos / max(len(t), 1), np.float64)
    n_splits = int(min(folds, pos, len(t) - pos))
    if n_splits < 2:
        return out
    split = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train, held in split.split(x, t):
        head = LogisticRegression(C=C, max_iter=2000).fit(x[train], t[train])
        out[held] = head.predict_proba(x[held])[:, 1]
    return out


def cross_val_label_heads(features, targets, *, folds: int = 5, seed: int = 0, C: float | None = None,
                          variance: float = 0.99, max_dims: int = 256) -> CrossVal:
    """Out-of-sample per-label probabilities from k-fold cross-validated one-vs-rest logistic heads.

    The features are reduced once (:func:`~nextclass.data.label_heads.reduce_features`, unsupervised), then each
    label gets its own binary head per fold, its folds stratified by that label; one C serves every label
    (:func:`_common_c`, logged) unless given.

    Args:
        features: (N, D) embeddings.
        targets: (N, L) given labels, 0/1.
        folds, seed, variance, max_dims: as :func:`nextclass.data.label_heads.cross_val_heads`.

    Returns:
        :class:`~nextclass.data.label_heads.CrossVal` whose ``probs`` is (N, L), each entry in [0, 1].

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, (60, 2))
        >>> x = y * 4.0 + rng.normal(size=(60, 2))
        >>> ((cross_val_label_heads(x, y, folds=3).probs >= 0.5) == y).mean() > 0.9
        np.True_
    """
    y = np.asarray(targets, np.int64)
    if y.ndim != 2 or len(features) != len(y):
        raise ValueError(f"targets must be (N, L) with N = {len(features)} rows, got shape {y.shape}")
    x, note = reduce_features(features, variance=variance, max_dims=max_dims, seed=seed)
    chosen = C is None
    C = _common_c(x, y, folds, seed) if chosen else float(C)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence at weak penalties
        probs = np.stack([_label_probs(x, y[:, j], C, folds, seed) for j in range(y.shape[1])], axis=1)
    how = "chosen by cross-validated log-loss" if chosen else "given"
    what = (f"{note}; one-vs-rest logistic heads per label with C={C:.3g} ({how}), {folds}-fold cross-validated "
            "(stratified per label)")
    log(f"label heads: {what}")
    return CrossVal(probs, C, x.shape[1], what)


def set_issues_block(issues: Sequence[SetIssue], paths: Sequence[str], classes: Sequence[str], *, method: str,
                     checked: int, max_items: int = 100, splits: Sequence[str] | None = None) -> dict:
    """The ``label_issues`` block of ``audit.json`` for multi-label data: as the single-label block
    (:func:`nextclass.data.label_issues.issues_block`: ``label`` is the given set, ``suggested`` the suggested one,
    ``score`` the probability of the given value of the most doubted label) with ``added``/``removed`` per item and
    ``per_label`` counts of the labels to add and remove."""
    pairs = Counter((set_text(i.given, classes), set_text(i.suggested, classes)) for i in issues)
    per_label = {c: {"add": 0, "remove": 0} for c in classes}
    for i in issues:
        for j in i.added:
            per_label[classes[j]]["add"] += 1
        for j in i.removed:
            per_label[classes[j]]["remove"] += 1
    items = [{"rank": i.rank, "path": paths[i.position], **({"split": splits[i.position]} if splits else {}),
              "label": set_text(i.given, classes), "suggested": set_text(i.suggested, classes),
              "added": [classes[j] for j in i.added], "removed": [classes[j] for j in i.removed],
              "score": round(i.score, 5)} for i in issues[:max_items]]
    return {"task": "multi-label", "method": method, "checked": int(checked), "n": len(issues),
            "pairs": [{"label": a, "suggested": b, "n": n} for (a, b), n in pairs.most_common(10)],
            "per_label": per_label, "items": items}


def write_set_issues_csv(path: str | os.PathLike, issues: Sequence[SetIssue], paths: Sequence[str],
                         classes: Sequence[str]) -> int:
    """Write ``label_issues.csv`` for multi-label data (path, given_labels, suggested_labels, add, remove, score,
    rank; label sets joined by ``;``) atomically; returns the number of rows."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "given_labels", "suggested_labels", "add", "remove", "score", "rank"])
    for it in sorted(issues, key=lambda i: i.rank):
        w.writerow([paths[it.position], set_text(it.given, classes), set_text(it.suggested, classes),
                    set_text(it.added, classes), set_text(it.removed, classes), f"{it.score:.6f}", it.rank])
    atomic_write_text(path, buf.getvalue())
    return len(issues)


def read_multilabel_predictions(paths: Sequence[Path], classes: Sequence[str] | None = None
                                ) -> tuple[list[dict], np.ndarray, np.ndarray, list[str]]:
    """A multi-label run's ``predictions*.csv`` files read back: ``(rows, probs (N, L), given (N, L) 0/1, labels)``.

    The label order is ``classes`` (the bundle's), else the order of the files' ``p:<label>`` columns; the
    probabilities are the calibrated ones the run wrote (five decimals).
    """
    rows: list[dict] = []
    for path in paths:
        if Path(path).exists():
            with open(path, newline="", encoding="utf-8") as fh:
                rows += list(csv.DictReader(fh))
    names = list(classes) if classes else [k[2:] for k in (rows[0] if rows else {}) if k.startswith("p:")]
    index = {c: j for j, c in enumerate(names)}
    probs = np.array([[float(r[f"p:{c}"]) for c in names] for r in rows], np.float64).reshape(len(rows), len(names))
    given = np.zeros((len(rows), len(names)), np.int64)
    for i, r in enumerate(rows):
        for name in filter(None, (r.get("true") or "").split(";")):
            given[i, index[name]] = 1
    return rows, probs, given, names
