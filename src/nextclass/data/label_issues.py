"""Label issues: which given labels are probably wrong, from out-of-sample predicted probabilities.

The pure part of issue 16's label audit (no model, no files but the CSV): :func:`cross_val_probs`
(:mod:`nextclass.data.label_heads`) turns cached embeddings into out-of-sample probabilities with
k-fold cross-validated logistic regression heads (the backbone ran once), :func:`quality_gate` decides
whether those probabilities are good enough for flags to mean much (issue 23), and
:func:`find_label_issues` hands them to cleanlab's confident learning (Northcutt, Jiang & Chuang,
"Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021). cleanlab estimates, per
class, how sure the model is on images of that class, and flags an image when the model is as sure
of another class as it typically is of that class's own images (``prune_by_noise_rate``: the number
flagged per pair of classes follows the estimated noise, not a fixed count).

One guard of our own: a flag needs the model to *prefer* the suggested class, probability >= 0.5
(``min_suggested_probability``). cleanlab cannot tell a model's errors from label errors, so on
features with no signal (near-uniform probabilities) it flags about half the images; with the guard
such a model flags none, and a model that is right 94 % of the time is unaffected (measured on
synthetic blobs with 5 % flipped labels; see tests/test_label_issues.py).

Two callers: ``nextclass audit DATA --labels`` (:mod:`nextclass.curation.label_audit`) embeds every
image, calls :func:`cross_val_probs`, then :func:`find_label_issues` and :func:`write_label_issues_csv`;
and the end of a training run calls :func:`attach_label_issues`, which judges the run's val/test
predictions (out-of-sample for the trained model) and writes them into ``<run>/audit.json`` and
``<run>/label_issues.csv``. It replaced ``label_suspects`` (per-class mean thresholds, no noise-rate
pruning, no probability guard; ``bench/label_noise.py`` keeps a copy as the baseline it is measured against).

Multi-label data (issue 26): :class:`Judged` then holds (N, L) per-label probabilities and a 0/1 matrix of the given
labels, and :func:`run_label_issues` hands them to :func:`nextclass.data.label_set_issues.find_multilabel_issues`
(cleanlab's multi-label finder, one binary problem per label, saying which label to add or remove). The gate is
applied per label (:func:`label_gates`): a label whose model is too weak is not judged, the others are.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from nextclass.data.label_heads import cross_val_probs
from nextclass.data.label_set_issues import (SetIssue, find_multilabel_issues, read_multilabel_predictions, recentre,
                                             set_issues_block, write_set_issues_csv)
from nextclass.rundir import RunDir
from nextclass.utils import atomic_write_text, log

__all__ = ["LabelIssue", "find_label_issues", "cross_val_probs", "quality_gate", "Gate", "MIN_SKILL",
           "write_label_issues_csv", "run_label_issues", "attach_label_issues", "issues_block", "read_run_probabilities",
           "Judged", "label_gates", "gate_block"]

FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning")


@dataclass(frozen=True)
class LabelIssue:
    """One suspected wrong label: ``position`` indexes the inputs; ``score`` is the model's
    probability of the given label (lower: more likely wrong); ``rank`` 1 is the most suspicious."""

    position: int
    given: int
    suggested: int
    score: float
    rank: int


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs must be (N, K) with K >= 2 classes, got shape {probs.shape}")
    if labels.shape != (len(probs),):
        raise ValueError(f"labels must be ({len(probs)},) to match probs, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must be class indices 0..{probs.shape[1] - 1}, got values "
                         f"{sorted(set(np.unique(labels).tolist()))[:10]}")
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3) or (probs < 0).any():
        raise ValueError("each row of probs must be a probability distribution (>= 0, summing to 1)")
    return probs, labels.astype(np.int64)


def find_label_issues(probs, labels, *, filter_by: str = "prune_by_noise_rate",
                      min_suggested_probability: float = 0.5) -> list[LabelIssue]:
    """Suspected label errors, most suspicious first.

    Args:
        probs: (N, K) *out-of-sample* predicted probabilities (a model never trained on row i
            predicted row i: :func:`cross_val_probs`, or a run's val/test predictions).
        labels: (N,) given class indices.
        filter_by: cleanlab's rule, one of ``prune_by_noise_rate`` (default), ``prune_by_class``,
            ``both``, ``confident_learning``.
        min_suggested_probability: a flag also needs the model's probability of the suggested class
            to reach this (0 keeps every cleanlab flag).

    Returns:
        :class:`LabelIssue` per flagged image, ranked by the probability of its given label
        (lowest first). ``suggested`` is the most probable class other than the given one.

    Example:
        >>> probs = np.array([[0.9, 0.1]] * 9 + [[0.1, 0.9]] * 9 + [[0.95, 0.05]])
        >>> [(i.position, i.given, i.suggested) for i in find_label_issues(probs, [0] * 9 + [1] * 10)]
        [(18, 1, 0)]
    """
    from cleanlab.filter import find_label_issues as _cleanlab_find

    if filter_by not in FILTERS:
        raise ValueError(f"filter_by={filter_by!r}: choose one of {', '.join(FILTERS)}")
    probs, labels = _check(probs, labels)
    missing = sorted(set(range(probs.shape[1])) - set(labels.tolist()))
    if missing:  # cleanlab needs every class present among the given labels
        log(f"[yellow]NOTE[/]: classes {missing[:10]} have no labelled example: nothing is suggested for them")
        probs = probs.copy()
        probs[:, missing] = 0.0
        present = [c for c in range(probs.shape[1]) if c not in missing]
        probs = probs[:, present] / np.maximum(probs[:, present].sum(axis=1, keepdims=True), 1e-12)
        labels = np.searchsorted(present, labels)
    else:
        present = list(range(probs.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cleanlab warns about tiny classes; the guard below handles them
        flagged = _cleanlab_find(labels, probs, filter_by=filter_by, n_jobs=1)
    others = probs.copy()
    others[np.arange(len(labels)), labels] = -1.0
    suggested = others.argmax(axis=1)
    flagged &= probs[np.arange(len(labels)), suggested] >= min_suggested_probability
    score = probs[np.arange(len(labels)), labels]
    pos = np.flatnonzero(flagged)
    pos = pos[np.lexsort((pos, score[pos]))]
    return [LabelIssue(int(p), int(present[labels[p]]), int(present[suggested[p]]), float(score[p]), r + 1)
            for r, p in enumerate(pos)]


MIN_SKILL = 0.75  # a flag needs the head to remove >= 3/4 of chance's error, at the interval's low end (docs/audit.md)
MIN_IMAGES = 30  # fewer images cannot tell a head's mistakes from wrong labels


@dataclass(frozen=True)
class Gate:
    """Whether a model's out-of-sample probabilities are good enough for its label flags to mean much."""

    ok: bool
    accuracy: float  # how often the most probable class is the given label
    chance: float  # the majority-class rate: the accuracy of always guessing the largest class
    low: float  # lower end of accuracy's 95 % Wilson interval
    needed: float  # the lower end ``ok`` needs: chance + MIN_SKILL x (1 - chance)
    n: int  # images judged
    reason: str  # one line: why the flags are (not) shown

    def as_dict(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def quality_gate(probs, labels, *, min_skill: float = MIN_SKILL, min_images: int = MIN_IMAGES,
                 confidence: float = 0.95) -> Gate:
    """Is the model strong enough for its label flags to be worth a person's time?

    cleanlab cannot tell a model's mistakes from wrong labels: a weak model's flags are mostly its own
    errors (a 2-epoch model at 77.7 % listed 18 clean images; issue 23). Criterion, the same at 100 and
    at 60,000 images: the lower end of the Wilson interval of the accuracy against the given labels must
    remove at least ``min_skill`` of the error of always guessing the largest class,
    ``low >= chance + min_skill * (1 - chance)`` (10 balanced classes: >= 0.775; two: >= 0.875). The
    interval makes a small set prove it (100 images at 90 % give a low end of ~0.83), and ``min_images``
    is the least that can. Measured precision against this criterion: docs/audit.md.

    Args:
        probs: (N, K) out-of-sample probabilities (cross-validated heads, or a run's val/test predictions).
        labels: (N,) given class indices.

    Returns:
        :class:`Gate`; when ``ok`` is False show no flags, and print ``reason``.

    Example:
        >>> g = quality_gate(np.full((300, 10), 0.1), np.arange(300) % 10)
        >>> g.ok, g.reason[:57]
        (False, 'nothing flagged: the head is right on 10.0% of 300 images')
    """
    from scipy.stats import binomtest

    probs, labels = _check(probs, labels)
    n = len(labels)
    correct = int((probs.argmax(axis=1) == labels).sum())
    acc, chance = correct / max(n, 1), float(np.bincount(labels).max() / max(n, 1))
    low = float(binomtest(correct, n).proportion_ci(confidence, method="wilson").low) if n else 0.0
    needed = chance + min_skill * (1.0 - chance)
    where = f"{acc:.1%} of {n} images ({confidence:.0%} interval from {low:.1%}; chance {chance:.1%})"
    if n < min_images:
        reason = f"nothing flagged: {n} images are too few to tell the head's mistakes from wrong labels (>= {min_images})"
    elif low < needed:
        reason = (f"nothing flagged: the head is right on {where}; its flags would be mostly its own mistakes "
                  f"(flags need the interval's low end >= {needed:.1%}: a stronger embedding, e.g. --model RUN)")
    else:
        reason = f"the head is right on {where}: strong enough to flag"
    return Gate(n >= min_images and low >= needed, acc, chance, low, needed, n, reason)


def label_gates(probs, targets, **kwargs) -> list[Gate]:
    """:func:`quality_gate` for each label of multi-label data, as a two-class problem (absent / present): which
    labels a model judges well enough for its flags to mean much. A label every image carries (or none does) fails:
    the model cannot be told from always guessing it.

    Args:
        probs: (N, L) per-label probabilities (out-of-sample).
        targets: (N, L) given labels, 0/1.
        kwargs: :func:`quality_gate`'s ``min_skill``, ``min_images``, ``confidence``.

    Example:
        >>> y = np.array([[1, 0], [0, 0]] * 50)
        >>> [g.ok for g in label_gates(np.where(y == 1, 0.9, 0.1), y)]
        [True, False]
    """
    p, y = np.asarray(probs, np.float64), np.asarray(targets, np.int64)
    return [quality_gate(np.stack([1.0 - p[:, j], p[:, j]], axis=1), y[:, j], **kwargs) for j in range(p.shape[1])]


def gate_block(gates: Sequence[Gate], classes: Sequence[str]) -> dict:
    """The ``gate`` entry of a multi-label ``label_issues`` block: ``ok`` when at least one label is judged, one
    ``reason`` line naming the labels judged and not, and each label's gate."""
    judged = [c for c, g in zip(classes, gates) if g.ok]
    weak = [c for c, g in zip(classes, gates) if not g.ok]
    if not judged:
        reason = (f"nothing flagged: no label's head is strong enough to tell its own mistakes from wrong labels "
                  f"(per label, as a two-class problem: {gates[0].reason if gates else 'no label'})")
    else:
        reason = (f"labels judged: {', '.join(judged)}" + (f"; not judged (head too weak for that label, or too few "
                                                             f"images): {', '.join(weak)}" if weak else ""))
    return {"ok": bool(judged), "reason": reason, "judged": judged, "not_judged": weak,
            "per_label": {c: g.as_dict() for c, g in zip(classes, gates)}}


def write_label_issues_csv(path: str | os.PathLike, issues: Sequence[LabelIssue], paths: Sequence[str],
                           classes: Sequence[str]) -> int:
    """Write ``label_issues.csv`` (path, given_label, suggested_label, score, rank) atomically.

    Args:
        path: output file.
        issues: from :func:`find_label_issues`; ``position`` indexes ``paths``.
        paths: the image path of each input row.
        classes: class names by index.

    Returns:
        The number of rows written.

    Example:
        >>> write_label_issues_csv("runs/x/label_issues.csv", issues, paths, source.classes)  # doctest: +SKIP
        12
    """
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "given_label", "suggested_label", "score", "rank"])
    for it in sorted(issues, key=lambda i: i.rank):
        w.writerow([paths[it.position], classes[it.given], classes[it.suggested], f"{it.score:.6f}", it.rank])
    atomic_write_text(path, buf.getvalue())
    return len(issues)


def _row_probs(row: dict, index: dict[str, int]) -> np.ndarray:
    """A class-probability vector from one ``predictions*.csv`` row.

    The file keeps the top-k classes (``topk``: ``name:p;...``, k = 5) and the given class's probability
    exactly; the mass left over is spread evenly over the other classes (each below the k-th, so tiny).
    With K <= 5 classes the vector is exact.
    """
    k = len(index)
    p = np.full(k, np.nan)
    for part in filter(None, (row.get("topk") or "").split(";")):
        name, _, v = part.rpartition(":")
        if name in index:
            p[index[name]] = float(v)
    p[index[row["predicted"]]] = float(row["probability"])
    p[index[row["true"]]] = float(row["true_probability"])
    known = ~np.isnan(p)
    rest = max(0.0, 1.0 - float(p[known].sum()))
    p[~known] = rest / max(1, int((~known).sum()))
    return p / p.sum()


def _run_classes(run_dir: Path, rows: list[dict]) -> list[str]:
    """Class names in the model's order (``model/model.json``), else the names the predictions use."""
    meta = RunDir(run_dir).read_bundle_meta()
    if meta and meta.get("classes"):
        return list(meta["classes"])
    names = {r["true"] for r in rows} | {r["predicted"] for r in rows}
    for r in rows:
        names |= {part.rpartition(":")[0] for part in filter(None, (r.get("topk") or "").split(";"))}
    return sorted(names)


def read_run_probabilities(run_dir: str | os.PathLike) -> tuple[list[dict], np.ndarray, np.ndarray, list[str]]:
    """A finished run's val and test predictions: ``(rows, probs (N, K), given labels (N,), classes)``.

    Raises:
        FileNotFoundError: the run has neither ``predictions_val.csv`` nor ``predictions.csv``.
    """
    run = RunDir(run_dir)
    rows: list[dict] = []
    for path in (run.predictions("val"), run.predictions("test")):
        if path.exists():
            with open(path, newline="", encoding="utf-8") as fh:
                rows += list(csv.DictReader(fh))
    if not rows:
        raise FileNotFoundError(f"{run_dir}: no predictions_val.csv or predictions.csv (has the run finished?)")
    classes = _run_classes(run.path, rows)
    index = {c: i for i, c in enumerate(classes)}
    probs = np.stack([_row_probs(r, index) for r in rows])
    return rows, probs, np.array([index[r["true"]] for r in rows], dtype=np.int64), classes


def issues_block(issues: Sequence[LabelIssue], paths: Sequence[str], classes: Sequence[str], *, method: str,
                 checked: int, max_items: int = 100, splits: Sequence[str] | None = None) -> dict:
    """The ``label_issues`` block of ``audit.json``: counts, the most frequent (given -> suggested) pairs and
    the top ``max_items`` issues."""
    from collections import Counter

    pairs = Counter((classes[i.given], classes[i.suggested]) for i in issues)
    items = [{"rank": i.rank, "path": paths[i.position], **({"split": splits[i.position]} if splits else {}),
              "label": classes[i.given], "suggested": classes[i.suggested], "score": round(i.score, 5)}
             for i in issues[:max_items]]
    return {"method": method, "checked": int(checked), "n": len(issues),
            "pairs": [{"label": a, "suggested": b, "n": n} for (a, b), n in pairs.most_common(10)], "items": items}


@dataclass
class Judged:
    """Out-of-sample probabilities to judge labels by: row i is image ``ids[i]`` of split ``splits[i]``."""

    probs: np.ndarray  # (N, K) exact calibrated probabilities (multi-label: (N, L) per-label probabilities)
    labels: np.ndarray  # (N,) given class indices (multi-label: the (N, L) 0/1 matrix of the given labels)
    ids: list[str]
    splits: list[str]
    classes: list[str]

    @classmethod
    def of(cls, per_split: dict, classes: Sequence[str]) -> "Judged":
        """From ``{split: (probs, labels, ids)}`` (the finish step's values in memory), splits in that order."""
        k = len(classes)
        parts = [(np.asarray(p, dtype=np.float64).reshape(-1, k), np.asarray(y), list(i), [sp] * len(i))
                 for sp, (p, y, i) in per_split.items()]
        return cls(np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, k)),
                   np.concatenate([p[1] for p in parts]).astype(np.int64) if parts else np.zeros(0, np.int64),
                   [x for p in parts for x in p[2]], [x for p in parts for x in p[3]], list(classes))

    @property
    def multilabel(self) -> bool:
        """True when the labels are a 0/1 matrix (one column per label)."""
        return np.asarray(self.labels).ndim == 2

    @classmethod
    def from_run_files(cls, run_dir: str | os.PathLike) -> "Judged":
        """A finished run's ``predictions*.csv`` (top-5, rounded: exact only up to five classes; for runs judged
        after the fact, when the in-memory probabilities are gone). A multi-label run's files hold every label's
        calibrated probability (``p:<label>``, five decimals)."""
        run = RunDir(run_dir)
        meta = run.read_bundle_meta() or {}
        if meta.get("task") == "multi-label":
            files = [run.predictions("val"), run.predictions("test")]
            rows, probs, labels, classes = read_multilabel_predictions(files, meta.get("classes"))
            if not rows:
                raise FileNotFoundError(f"{run_dir}: no predictions_val.csv or predictions.csv (has the run finished?)")
        else:
            rows, probs, labels, classes = read_run_probabilities(run_dir)
        return cls(probs, labels, [r["path"] for r in rows], [r["split"] for r in rows], classes)


def run_label_issues(run_dir: str | os.PathLike, judged: Judged | None = None, *,
                     max_items: int = 100) -> list[LabelIssue] | list[SetIssue]:
    """Label issues among a run's val/test images -> ``<run>/label_issues.csv`` and ``audit.json``.

    The trained model never fitted val or test, so its predictions there are out-of-sample (val picked
    the checkpoint and the temperature, which cannot make a wrong label look right). They go through
    :func:`find_label_issues` (cleanlab, noise-rate pruning, the 0.5 guard). Training images are not
    judged here: ``nextclass audit DATA --labels`` cross-validates every image.

    A multi-label run (``judged.labels`` a 0/1 matrix) is judged label by label: :func:`label_gates`, then
    :func:`nextclass.data.label_set_issues.find_multilabel_issues`; its CSV has the given and suggested label sets
    and the labels to add or remove.

    Args:
        judged: the probabilities to judge by (the finish step passes its exact ones); None reads the run's
            ``predictions*.csv`` back (:meth:`Judged.from_run_files`).

    Example:
        >>> [i.rank for i in run_label_issues("runs/simple_cnn-digits")][:3]  # doctest: +SKIP
        [1, 2, 3]
    """
    run = RunDir(run_dir)
    judged = judged if judged is not None else Judged.from_run_files(run.path)
    if judged.multilabel:
        return _run_set_issues(run, judged, max_items)
    gate = quality_gate(judged.probs, judged.labels)
    issues = find_label_issues(judged.probs, judged.labels) if gate.ok else []
    write_label_issues_csv(run.label_issues, issues, judged.ids, judged.classes)
    method = ("cleanlab confident learning (prune_by_noise_rate) on the trained model's val/test probabilities, flag "
              "needs p(suggested) >= 0.5 and a model strong enough for its disagreements to point at labels; ranked "
              "by p(given label)")
    block = issues_block(issues, judged.ids, judged.classes, method=method, checked=len(judged.labels),
                         max_items=max_items, splits=judged.splits)
    note = (f"{len(issues)} val/test image(s) the trained model confidently disagrees with: wrong labels or the "
            f"model's own mistakes ({run.label_issues.name})")
    _record_in_audit(run, block, gate.as_dict(), None if gate.ok else _model_gate_reason(gate), note if issues else None)
    return issues


def _run_set_issues(run: RunDir, judged: Judged, max_items: int) -> list[SetIssue]:
    """:func:`run_label_issues` for a multi-label run: the per-label gate, cleanlab's multi-label finder on the labels
    that pass, ``label_issues.csv`` (given and suggested label sets) and the ``label_issues`` block.

    The model decides each label at its bundle's threshold (chosen on val), so the probabilities are judged
    re-centred on it (:func:`~nextclass.data.label_set_issues.recentre`): "prefers the other value" means "decides the
    other way", and the gate counts the decisions the model makes."""
    thresholds = (run.read_bundle_meta() or {}).get("thresholds")
    probs = recentre(judged.probs, thresholds) if thresholds and len(thresholds) == judged.probs.shape[1] \
        else judged.probs
    gates = label_gates(probs, judged.labels)
    gate = gate_block(gates, judged.classes)
    issues = find_multilabel_issues(probs, judged.labels, judged=[g.ok for g in gates]) if gate["ok"] else []
    write_set_issues_csv(run.label_issues, issues, judged.ids, judged.classes)
    method = ("cleanlab multi-label confident learning (one binary problem per label, prune_by_noise_rate) on the "
              "trained model's calibrated val/test probabilities" + (", re-centred on each label's threshold"
                                                                     if probs is not judged.probs else "")
              + "; a label is doubted when the model decides the other way, and only on labels whose model is strong "
              "enough for its disagreements to point at labels; ranked by p(given value) of the most doubted label")
    block = set_issues_block(issues, judged.ids, judged.classes, method=method, checked=len(judged.labels),
                             max_items=max_items, splits=judged.splits)
    skipped = None if gate["ok"] else ("label check skipped: " + gate["reason"] + " (train longer, or `nextclass audit "
                                       "DATA --labels --model RUN`)")
    note = (f"{len(issues)} val/test image(s) whose label set the trained model confidently disagrees with: wrong "
            f"labels or the model's own mistakes ({run.label_issues.name})")
    _record_in_audit(run, block, gate, skipped, note if issues else None)
    return issues


def _record_in_audit(run: RunDir, block: dict, gate: dict, skipped: str | None, note: str | None) -> None:
    """The run's ``audit.json`` gets the end-of-run label check (``label_issues``) and its one finding line, replacing
    an earlier check's."""
    rep = run.read_audit() or {"version": 1}
    rep["label_issues"] = {**block, "csv": run.label_issues.name, "source": "model", "gate": gate, "skipped": skipped}
    rep["findings"] = [x for x in rep.get("findings", []) if "look mislabelled" not in x and "disagrees with" not in x] \
        + ([note] if note else [])
    run.write_audit(rep)


def _model_gate_reason(gate: Gate) -> str:
    """One line for a run whose model is too weak for the end-of-run label check (the gate of ``audit --labels``)."""
    return (f"label check skipped: the model is right on {gate.accuracy:.1%} of {gate.n} val/test images (95% interval "
            f"from {gate.low:.1%}; chance {gate.chance:.1%}); below {gate.needed:.1%} its disagreements would be mostly "
            f"its own mistakes, not wrong labels (train longer, or `nextclass audit DATA --labels --model RUN`)")


def attach_label_issues(run_dir: str | os.PathLike, judged: Judged | None = None) -> list[LabelIssue] | list[SetIssue]:
    """:func:`run_label_issues` for the end of a run (:func:`nextclass.training.finish.finish_run` calls it with
    its exact probabilities): one log line, never raises. A multi-label run passes the same
    ``Judged.of({split: (probs (N, L), labels (N, L) 0/1, ids)}, labels)``.

    Example:
        >>> attach_label_issues(run_dir, Judged.of({"val": (p_val, y_val, ids_val)}, classes))  # doctest: +SKIP
        []
    """
    try:
        found = run_label_issues(run_dir, judged)
        skipped = (RunDir(run_dir).read_audit().get("label_issues") or {}).get("skipped")
        log(skipped or f"label check: {len(found)} val/test image(s) the model confidently disagrees with (wrong "
                       f"labels or its own mistakes)" + (f"; see {RunDir(run_dir).label_issues}" if found else ""))
        return found
    except Exception as e:  # informative only: never fail a finished run
        log(f"[yellow]label-issue check skipped[/]: {type(e).__name__}: {e}")
        return []
