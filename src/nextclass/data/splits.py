"""Deterministic stratified train/val/test splits, saved as ``split.csv`` in the run.

The test split is for the final number only. When a dataset brings its own splits they are
kept; a missing ``val`` is carved (stratified) from ``train`` and said so - model selection never
looks at ``test``. A missing ``test`` is carved from ``train`` too.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from nextclass.utils import parse_ratios as _parse_ratios, atomic_write_text, log
from nextclass.data.multilabel_splits import assign_multilabel_splits
from nextclass.data.samples import DataError, DataSource, log_carved

__all__ = ["parse_ratios", "assign_splits", "MAX_CARVED_VAL", "log_carved", "write_split_csv", "read_split_csv", "split_rows", "SPLITS"]

SPLITS = ("train", "val", "test")


def parse_ratios(spec: str | tuple | list) -> tuple[float, float, float]:
    """:func:`nextclass.utils.parse_ratios`, raising :class:`DataError` for a bad spec."""
    try:
        return _parse_ratios(spec)
    except ValueError as e:
        raise DataError(str(e)) from None


def _stratified(labels: np.ndarray, fractions: list[float], names: list[str], seed: int) -> np.ndarray:
    """Split indices per class with a seeded RNG; every class of >= len(names) items gets one of each."""
    out = np.empty(len(labels), dtype=object)
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        counts = [int(round(n * f)) for f in fractions[1:]]
        for k, f in enumerate(fractions[1:]):  # at least one per requested split when possible
            if f > 0 and counts[k] == 0 and n - sum(counts) > 1:
                counts[k] = 1
        while sum(counts) >= n and max(counts) > 0:  # keep at least one training image
            counts[int(np.argmax(counts))] -= 1
        start = n - sum(counts)
        out[idx[:start]] = names[0]
        for name, cnt in zip(names[1:], counts):
            out[idx[start:start + cnt]] = name
            start += cnt
    return out


#: The most images a carved val gets when the user left ``split`` at its default: at 5,000 images the standard error
#: of a val accuracy is at most 0.7 points (0.3 at 95 %), finer than the differences model selection can trust, and
#: every image beyond it trains instead (Fashion-MNIST's 60k: 5,000 val instead of 13,333).
MAX_CARVED_VAL = 5000


def _capped(fractions: list[float], names: list[str], n: int, cap: int | None) -> tuple[list[float], str]:
    """``fractions`` (summing to 1, aligned with ``names``) with val's share of ``n`` images cut to ``cap`` and the rest
    given to train; the note to log (empty when nothing changed)."""
    if cap is None or "val" not in names or fractions[names.index("val")] * n <= cap:
        return fractions, ""
    out = list(fractions)
    v, t = names.index("val"), names.index("train")
    out[t] += out[v] - cap / n
    out[v] = cap / n
    return out, (f"val capped at {cap:,} of {n:,} images (the default split's {fractions[v]:.0%} would be "
                 f"{round(fractions[v] * n):,}; the rest trains; --split sets the fractions)")


def assign_splits(source: DataSource, ratios=(0.7, 0.2, 0.1), seed: int = 0, val_cap: int | None = None) -> list[str]:
    """Return a split name per sample (and set ``sample.split``); a multi-label source's come from iterative
    stratification (:func:`nextclass.data.multilabel_splits.assign_multilabel_splits`).

    ``val_cap``: the most images a val drawn or carved here may get (:data:`MAX_CARVED_VAL` when the user left the
    split at its default); None: the fractions as given.
    """
    if source.multilabel:
        return assign_multilabel_splits(source, ratios, seed)
    ratios = parse_ratios(ratios)
    labels = np.array([s.label for s in source.samples])
    if not source.has_splits:
        fractions, note = _capped(list(ratios), list(SPLITS), len(labels), val_cap)
        if note:
            log(f"[dim]auto[/] {note}")
        splits = _stratified(labels, fractions, list(SPLITS), seed)
    else:
        splits = np.array([s.split for s in source.samples], dtype=object)
        present = set(splits)
        if "train" not in present:
            raise DataError(f"{source.name}: the given splits {sorted(present)} have no 'train'")
        train_idx = np.flatnonzero(splits == "train")
        missing = [s for s in ("val", "test") if s not in present]
        if missing:
            fr = {"val": ratios[1], "test": ratios[2]}
            wanted = [fr[m] if fr[m] > 0 else 0.1 for m in missing]
            keep = ratios[0]
            total = keep + sum(wanted)
            fractions, note = _capped([keep / total] + [w / total for w in wanted], ["train"] + missing,
                                      len(train_idx), val_cap)
            if note:
                log(f"[dim]auto[/] {note}")
            sub = _stratified(labels[train_idx], fractions, ["train"] + missing, seed)
            splits[train_idx] = sub
            log_carved(source.name, missing, sub, f"stratified, seed {seed}")
    for s, sp in zip(source.samples, splits):
        s.split = str(sp)
    return [str(x) for x in splits]


def write_split_csv(path: str | Path, source: DataSource) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "label", "class", "split"])
    for s in source.samples:  # multi-label: no class index; "class" holds the label names joined by ';'
        w.writerow([s.path, "" if source.multilabel else s.label, source.label_text(s), s.split])
    atomic_write_text(path, buf.getvalue())


def read_split_csv(path: str | Path, source: DataSource) -> None:
    """Apply a saved split to ``source`` (same files, same labels), failing loudly on drift."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    missing = 0
    for s in source.samples:
        r = rows.get(s.path)
        if r is None:
            missing += 1
            s.split = None
            continue
        s.split = r["split"]
    if missing:
        log(f"[yellow]NOTE[/]: {missing} file(s) are not in {path} (added since the run started); they are ignored")
        source.samples = [s for s in source.samples if s.split]
    if not source.samples:
        raise DataError(f"{path}: none of the files in the saved split exist in {source.root}")


def split_rows(source: DataSource, images) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Positions of the decodable images (``images.ok``, a :class:`~nextclass.data.cache.DecodedImages`) of each
    split, and their labels (class indices, or a multi-hot matrix: :meth:`DataSource.targets`)."""
    splits = np.array([s.split for s in source.samples])
    all_labels = source.targets()
    rows = {sp: np.flatnonzero((splits == sp) & images.ok) for sp in ("train", "val", "test")}
    return rows, {sp: all_labels[r] for sp, r in rows.items()}
