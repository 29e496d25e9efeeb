"""Stratified splits for multi-label data that keep rare labels in every split (issue 26).

A per-class stratified split (:mod:`nextclass.data.splits`) needs one class per image. With several labels per image
nextclass uses **iterative stratification** (Sechidis, Tsoumakas & Vlahavas 2011, "On the Stratification of
Multi-label Data", ECML PKDD; written here, scikit-multilearn being unmaintained):

1. Each split ``j`` wants ``c_j = N * r_j`` images in all and ``c_j^l = N_l * r_j`` images of each label ``l``.
2. Take the label with the fewest images still unassigned (ties in a seeded random order), and deal its images
   out one by one: each goes to the split that wants that label most (``c_j^l``), ties to the split that wants
   the most images (``c_j``), then at random; the desires of the split it went to drop for each of its labels.
3. Repeat until only images with no label are left; those go to the splits that want the most images.

Dealing the rarest labels first is what keeps them spread. Two additions make the promise "a label with at least
one image per split appears in every split" hold on data where the paper's rule alone misses it (a label of 3 images
at 70/20/10 wants 2.1, 0.6 and 0.3: the paper puts two in train and one in val, none in test):

* **lacking first**: while a split has no image of the label being dealt (a label with at least one image per
  split), the image goes to such a split (the one lacking the most of the image's labels, then by desire); a label
  too rare for every split follows the paper's rule, so its images go where they are most wanted (train first);
* **repair**: a label still missing from a split after the deal (its images were all dealt earlier with rarer
  labels) gets one image moved there from the split holding most of it, an image whose labels all stay present
  in the split it leaves. A label that cannot be repaired that way is reported (never silently).

Deterministic for a given seed. Splits with a zero ratio are never filled.
"""

from __future__ import annotations

import numpy as np

from nextclass.utils import log, parse_ratios
from nextclass.data.samples import DataError, log_carved

__all__ = ["iterative_stratification", "missing_labels", "assign_multilabel_splits"]

SPLITS = ("train", "val", "test")


def _choose(cands: list[int], want_label: np.ndarray, want: np.ndarray, score: np.ndarray | None, rng) -> int:
    """The split among ``cands`` with the highest (score, label desire, total desire); remaining ties at random."""
    keys = [(score[j] if score is not None else 0, want_label[j], want[j]) for j in cands]
    best = max(keys)
    tied = [j for j, k in zip(cands, keys) if k == best]
    return tied[0] if len(tied) == 1 else int(tied[rng.integers(len(tied))])


def _deal(y: np.ndarray, ratios: np.ndarray, rng) -> np.ndarray:
    """Iterative stratification with 'lacking first' (see the module docstring): a split index per image."""
    n, n_labels = y.shape
    active = [j for j in range(len(ratios)) if ratios[j] > 0]
    want = n * ratios.astype(np.float64)
    want_label = np.outer(ratios, y.sum(axis=0)).astype(np.float64)  # (splits, labels)
    have = np.zeros((len(ratios), n_labels), np.int64)
    out = np.full(n, -1, np.int64)
    left = y.sum(axis=0).astype(np.int64)
    priority = rng.permutation(n_labels)  # seeded tie-break between labels of equal count
    members = [np.flatnonzero(y[:, l]) for l in range(n_labels)]
    spread = y.sum(axis=0) >= len(active)  # labels with enough images for every split get one in each first
    while (left > 0).any():
        lab = min(np.flatnonzero(left > 0), key=lambda k: (left[k], priority[k]))
        for i in rng.permutation(members[lab]):
            if out[i] >= 0:
                continue
            labs = np.flatnonzero(y[i])
            lacking = [j for j in active if have[j, lab] == 0] if spread[lab] else []
            score = (have[:, labs] == 0).sum(axis=1) if lacking else None
            j = _choose(lacking or active, want_label[:, lab], want, score, rng)
            out[i] = j
            want[j] -= 1
            want_label[j, labs] -= 1
            have[j, labs] += 1
            left[labs] -= 1
    for i in rng.permutation(np.flatnonzero(out < 0)):  # images with no label
        j = _choose(active, np.zeros(len(ratios)), want, None, rng)
        out[i] = j
        want[j] -= 1
    return out


def _donor(y: np.ndarray, out: np.ndarray, have: np.ndarray, lab: int, rng) -> int | None:
    """An image of ``lab`` that can leave its split: in the split richest in ``lab``, every one of its labels held
    by at least one other image there (so no label vanishes from it)."""
    for j in np.argsort(-have[:, lab], kind="stable"):
        if have[j, lab] < 2:
            return None
        for i in rng.permutation(np.flatnonzero((out == j) & (y[:, lab] == 1))):
            if (have[j, np.flatnonzero(y[i])] >= 2).all():
                return int(i)
    return None


def _repair(y: np.ndarray, out: np.ndarray, ratios: np.ndarray, rng) -> list[str]:
    """Move single images so that every label with at least one image per active split is in each of them;
    returns a note per label that could not be repaired (split indices in the message)."""
    active = [j for j in range(len(ratios)) if ratios[j] > 0]
    have = np.stack([y[out == j].sum(axis=0) for j in range(len(ratios))]).astype(np.int64)
    notes = []
    for lab in np.argsort(y.sum(axis=0), kind="stable"):
        if y[:, lab].sum() < len(active):
            continue
        for j in active:
            if have[j, lab] > 0:
                continue
            i = _donor(y, out, have, lab, rng)
            if i is None:
                notes.append(f"label {lab}: no image can move to split {j} without emptying another label")
                continue
            labs = np.flatnonzero(y[i])
            have[out[i], labs] -= 1
            have[j, labs] += 1
            out[i] = j
    return notes


def iterative_stratification(y: np.ndarray, ratios=(0.7, 0.2, 0.1), names=SPLITS, seed: int = 0) -> np.ndarray:
    """A split name per image of the (N, L) multi-hot ``y`` (see the module docstring).

    Args:
        ratios: a fraction per split (normalised to sum 1); a zero-ratio split gets no image.
        names: the splits' names, aligned with ``ratios``.

    Example:
        >>> y = np.array([[1, 0]] * 6 + [[0, 1]] * 3 + [[1, 1]] * 1)
        >>> s = iterative_stratification(y, (0.6, 0.2, 0.2), seed=0)
        >>> sorted(set(s[y[:, 1] == 1]))   # the 4 images of the rare label: in every split
        ['test', 'train', 'val']
    """
    y = (np.asarray(y) > 0).astype(np.int64)
    r = np.asarray(ratios, np.float64)
    if y.ndim != 2 or len(r) != len(names) or (r < 0).any() or r.sum() <= 0:
        raise ValueError(f"iterative_stratification: y {y.shape} must be (N, L) and ratios {tuple(ratios)} "
                         f"non-negative, one per split name {tuple(names)}")
    r = r / r.sum()
    rng = np.random.default_rng(seed)
    out = _deal(y, r, rng)
    for note in _repair(y, out, r, rng):
        log(f"[yellow]NOTE[/]: {note}")
    return np.array([names[j] for j in out], dtype=object)


def missing_labels(y: np.ndarray, splits, classes: list[str], min_images: int = 3) -> dict[str, list[str]]:
    """Per split present in ``splits``, the labels with at least ``min_images`` images in all that it lacks (the
    check a caller logs; empty lists when every split holds every such label).

    Example:
        >>> missing_labels(np.array([[1], [1], [1]]), ["train", "train", "val"], ["a"])
        {'train': [], 'val': []}
    """
    y, splits = np.asarray(y), np.asarray(splits, dtype=object)
    big = y.sum(axis=0) >= min_images
    return {str(sp): [c for c, ok, b in zip(classes, y[splits == sp].sum(axis=0) > 0, big) if b and not ok]
            for sp in dict.fromkeys(splits.tolist())}


def assign_multilabel_splits(source, ratios=(0.7, 0.2, 0.1), seed: int = 0) -> list[str]:
    """The multi-label counterpart of :func:`nextclass.data.splits.assign_splits`: a split per sample of a
    multi-label :class:`~nextclass.data.samples.DataSource` (and ``sample.split`` set).

    Without given splits: iterative stratification over train/val/test. With given splits: kept; a missing val or
    test is carved from train by iterative stratification, and said so (model selection never looks at test).
    """
    ratios = parse_ratios(ratios)
    y = source.targets()
    if not source.has_splits:
        splits = iterative_stratification(y, ratios, SPLITS, seed)
    else:
        splits = np.array([s.split for s in source.samples], dtype=object)
        if "train" not in set(splits):
            raise DataError(f"{source.name}: the given splits {sorted(set(splits))} have no 'train'")
        missing = [m for m in ("val", "test") if m not in set(splits)]
        if missing:
            fr = {"val": ratios[1], "test": ratios[2]}
            rows = np.flatnonzero(splits == "train")
            sub = iterative_stratification(y[rows], [ratios[0]] + [fr[m] or 0.1 for m in missing],
                                           ["train"] + missing, seed)
            splits[rows] = sub
            log_carved(source.name, missing, sub, f"iterative stratification, seed {seed}")
    for s, sp in zip(source.samples, splits):
        s.split = str(sp)
    return [str(x) for x in splits]
