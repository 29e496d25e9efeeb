"""Out-of-sample class probabilities from embeddings: the cross-validated heads that judge labels.

:func:`cross_val_heads` is the one path ``nextclass audit DATA --labels`` (and ``bench/``) takes from
features to probabilities: reduce the features (:func:`reduce_features`), choose the heads'
regularisation on the data (:func:`choose_c`), then predict every row with a k-fold head that never
saw it. :func:`nextclass.data.label_issues.find_label_issues` hands the result to cleanlab.

Why the reduction looks like this (issue 23). The previous path projected onto 256 PCA components
as soon as there were more than 256 images and then standardised every component to unit variance.
On 300 upscaled 8x8 digits (1,024 pixels, ~36 directions that carry the picture) that turned ~220
components of interpolation noise into features as loud as the digit itself; the heads (``C=1``)
fitted the noise, scored 0.34-0.42 and found none of 10 planted flips, while 250 images (no PCA)
found 9. Now:

* PCA keeps the components that explain ``variance`` (99 %) of the variance, at most ``max_dims``
  and at most ``n - 1`` (what the data can estimate); the count follows the data (36 for upscaled
  digits whatever their size, ~190 for Fashion-MNIST's pixels);
* no whitening: every kept component is divided by the *same* number (the root mean variance of the
  kept components), so a near-empty direction stays near-empty. An L2-penalised logistic head is
  invariant to the rotation, so this is a logistic head on the centred features minus their noise floor;
* the inverse L2 strength ``C`` is chosen by stratified cross-validated log-loss
  (scikit-learn's ``LogisticRegressionCV``) on up to 2,000 images, and logged.

The PCA is fitted on all images without their labels (unsupervised), as before.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from nextclass.utils import log

__all__ = ["CrossVal", "cross_val_heads", "cross_val_probs", "reduce_features", "choose_c", "C_GRID"]

C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 13))  # half-decades; features have unit mean variance
C_IMAGES = 2000  # images used to choose C (a stratified subsample beyond that: C is a per-image weight)


@dataclass(frozen=True)
class CrossVal:
    """Out-of-sample probabilities and how they were made."""

    probs: np.ndarray  # (N, K): row i from a head that never saw row i
    C: float  # the heads' inverse L2 strength
    dims: int  # feature dimensions the heads saw
    what: str  # one line for the report: reduction, C, folds


def reduce_features(features, *, variance: float = 0.99, max_dims: int = 256, seed: int = 0) -> tuple[np.ndarray, str]:
    """Centred PCA scores keeping ``variance`` of the variance (at most ``max_dims``, at most N - 1 components),
    all divided by one common scale (no whitening: see the module docstring).

    Returns:
        (N, k) float64 features with mean variance 1 per dimension, and a note for the report.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 1024)) + 1e-3 * rng.normal(size=(300, 1024))
        >>> z, note = reduce_features(x)
        >>> z.shape, note
        ((300, 5), 'PCA 1024 -> 5 dims (100% of the variance, not whitened)')
    """
    from sklearn.decomposition import PCA

    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    m = int(min(max_dims, len(x) - 1, x.shape[1]))
    if m < 1:
        return x - x.mean(axis=0), "no reduction (too few images)"
    solver = "randomized" if m < 0.5 * min(x.shape) else "full"
    pca = PCA(m, svd_solver=solver, random_state=seed).fit(x)
    share = np.cumsum(pca.explained_variance_ratio_)
    k = int(min(m, np.searchsorted(share, variance - 1e-9) + 1))
    kept = pca.explained_variance_[:k]
    z = pca.transform(x)[:, :k] / np.sqrt(max(float(kept.mean()), 1e-12))
    return z, f"PCA {x.shape[1]} -> {k} dims ({share[k - 1]:.0%} of the variance, not whitened)"


def _subsample(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """A stratified random subset of about ``n`` rows (all rows when there are not more)."""
    if len(y) <= n:
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    return np.sort(keep)


def choose_c(x: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0,
             grid: tuple[float, ...] = C_GRID, max_images: int = C_IMAGES) -> float:
    """The inverse L2 strength with the best stratified cross-validated log-loss (``LogisticRegressionCV``)
    on up to ``max_images`` images; ties go to the stronger penalty.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x, y = rng.normal(size=(200, 3)), np.repeat([0, 1], 100)
        >>> choose_c(x, y) <= 0.01  # no signal: the strongest penalty wins
        True
    """
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold

    rows = _subsample(y, max_images, seed)
    xs, ys = x[rows], y[rows]
    n_splits = int(max(2, min(folds, np.bincount(ys)[np.bincount(ys) > 0].min())))
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence at the weakest penalties; tiny classes (said by the caller)
        fit = LogisticRegressionCV(Cs=list(grid), cv=cv, scoring="neg_log_loss", refit=False, max_iter=500).fit(xs, ys)
    scores = np.asarray(next(iter(fit.scores_.values()))).mean(axis=0)
    best = int(np.flatnonzero(scores >= scores.max() - 1e-9)[0])
    return float(fit.Cs_[best])


def _folds(labels: np.ndarray, folds: int) -> int:
    """Folds usable with stratification: at most the size of the smallest class (at least 2)."""
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    usable = int(max(2, min(folds, counts.min())))
    if usable < folds:
        log(f"[yellow]NOTE[/]: the smallest class has {counts.min()} example(s): {usable}-fold cross-validation "
            f"instead of {folds}" + (" (a class with one example is never seen by the head that judges it)"
                                     if counts.min() < 2 else ""))
    return usable


def cross_val_heads(features, labels, *, folds: int = 5, seed: int = 0, C: float | None = None,
                    num_classes: int | None = None, variance: float = 0.99, max_dims: int = 256) -> CrossVal:
    """Out-of-sample class probabilities from k-fold cross-validated logistic-regression heads.

    Each row's probabilities come from a multinomial logistic head trained on the other folds only, so
    they can judge that row's label. Folds are stratified and seeded; with a class smaller than
    ``folds`` the number of folds drops to it.

    Args:
        features: (N, D) embeddings (e.g. a run's cached backbone features), or any numeric features.
        labels: (N,) class indices.
        folds: number of folds (5: each head sees 80 % of the data).
        seed: seed of the folds, the PCA and the subsample C is chosen on.
        C: the heads' inverse L2 strength; ``None`` chooses it (:func:`choose_c`, logged).
        num_classes: K, when some classes may have no example (default: ``labels.max() + 1``).
        variance, max_dims: :func:`reduce_features`.

    Returns:
        :class:`CrossVal`; its ``probs`` rows sum to 1 (a class missing from a head's folds gets 0).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x, y = np.r_[rng.normal(0, 1, (20, 2)), rng.normal(4, 1, (20, 2))], np.repeat([0, 1], 20)
        >>> (cross_val_heads(x, y, folds=4).probs.argmax(axis=1) == y).mean() > 0.9
        np.True_
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels, dtype=np.int64)
    if len(features) != len(y):
        raise ValueError(f"features ({len(features)} rows) and labels ({len(y)}) differ in length")
    x, note = reduce_features(features, variance=variance, max_dims=max_dims, seed=seed)
    k = int(num_classes or y.max() + 1)
    n_splits = _folds(y, folds)
    chosen = C is None
    try:
        C = choose_c(x, y, folds=n_splits, seed=seed) if chosen else float(C)
    except ValueError as e:  # e.g. a class with one image leaves an inner fold without it
        log(f"[yellow]NOTE[/]: C could not be chosen by cross-validation ({e}): C=1")
        C, chosen = 1.0, False
    out = np.zeros((len(y), k))
    split = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "least populated class has only n members": said in _folds
        for train, held in split.split(x, y):
            head = LogisticRegression(C=C, max_iter=2000).fit(x[train], y[train])
            out[np.ix_(held, head.classes_)] = head.predict_proba(x[held])
    how = "chosen by cross-validated log-loss" if chosen else "given"
    what = f"{note}; logistic heads with C={C:.3g} ({how}), {n_splits}-fold cross-validated"
    log(f"label heads: {what}")
    return CrossVal(out, C, x.shape[1], what)


def cross_val_probs(features, labels, *, folds: int = 5, seed: int = 0, C: float | None = None,
                    num_classes: int | None = None) -> np.ndarray:
    """Only the probabilities of :func:`cross_val_heads` (same arguments).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x, y = np.r_[rng.normal(0, 1, (20, 2)), rng.normal(4, 1, (20, 2))], np.repeat([0, 1], 20)
        >>> cross_val_probs(x, y, folds=4).shape
        (40, 2)
    """
    return cross_val_heads(features, labels, folds=folds, seed=seed, C=C, num_classes=num_classes).probs
