"""The one scorer: a model and a set of decoded images in, the numbers of one split (or dataset) out.

Both the end of a training run (:func:`nextclass.training.finish.finish_run`) and ``nextclass evaluate RUN``
(:func:`nextclass.evaluation.run.evaluate`) call :func:`score` with the same two small objects — *what* to
score (:class:`EvalImages`: the decoded uint8 cache, the rows, labels and ids) and *how* (:class:`Scoring`: the
bundle's preprocessing, temperature, TTA views, abstain threshold and neighbour index) — so for the same run
and split they write the same ``metrics.json`` block, field by field (tests/test_scorer.py), the way one
validator serves both the end of training and the stand-alone validate command in timm and Ultralytics.

A block holds: classification metrics (:mod:`nextclass.metrics.classification`), calibration at the
temperature, the files that could not be decoded, the TTA gain (when there are views), the selective numbers
(AUROC per score, risk-coverage, coverage at the abstain threshold), the prediction sets at the bundle's coverage
(empirical coverage overall and per class, set sizes; :mod:`nextclass.metrics.conformal`) and, for the *headline*
block (the run's final split, or another dataset), the kNN second opinion of the neighbour index and the accuracy under
corruptions (cached by weights + images + seed, :mod:`nextclass.evaluation.robust`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from nextclass.data.batch_aug import BatchEval
from nextclass.data.loader import BatchLoader, Batching
from nextclass.data.transforms import Preprocess
from nextclass.engine.loop import Device, loss_and_acc, predict_logits
from nextclass.metrics.calibration import calibration_block
from nextclass.metrics.classification import classification_metrics, softmax
from nextclass.metrics.conformal import sets_block
from nextclass.metrics.multilabel import calibrated_probs, fit_on_val, label_calibration_block, multilabel_metrics
from nextclass.metrics.selective import selective_block
from nextclass.metrics.tta import TTAModel
from nextclass.models.heads import head_from_trunk, head_logits, trunk_features
from nextclass.neighbors import Embedder, NeighborIndex, embedding_of, second_opinion

__all__ = ["EvalImages", "Scoring", "Logits", "predict_rows", "split_logits", "embeddings", "score", "score_multilabel"]


@dataclass
class EvalImages:
    """What to score: rows of a decoded uint8 image cache with their labels and ids."""

    name: str  # the metrics block's name: a split ("val", "test") or "data:<folder>" for another dataset
    array: np.ndarray  # (N, S, S, C) uint8, the whole decoded cache (possibly memory-mapped)
    rows: np.ndarray  # positions in ``array`` of the images to score
    labels: np.ndarray  # their class indices (multi-label: a 0/1 matrix, one column per label)
    ids: list[str]  # their paths (written to predictions*.csv and the block's wrong-prediction list)
    key: str = ""  # the decode cache's key: with ``rows`` and the weights, the robustness cache key
    skipped: list[dict] = field(default_factory=list)  # files of this split that could not be decoded
    features: torch.Tensor | None = None  # cached frozen-backbone features of ``rows`` (linear probe)


@dataclass
class Scoring:
    """How to score: the bundle's settings (the finish step fills them as it fits them)."""

    classes: list[str]
    pp: Preprocess
    runtime: Device = field(default_factory=Device)
    batch_size: int = 64
    views: list[str] = field(default_factory=lambda: ["identity"])  # TTA views; one view: no TTA
    temperature: float = 1.0
    abstain: dict | None = None  # the bundle's ``abstain`` entry (threshold chosen on val)
    sets: dict | None = None  # the bundle's ``sets`` entry (prediction-set threshold fitted on val)
    index: NeighborIndex | None = None  # the bundle's neighbour index
    index_bytes: int = 0
    unfamiliar: float | None = None  # the bundle's ``unfamiliar`` distance
    task: str = "single-label"  # or "multi-label": a sigmoid per label, scored by score_multilabel
    label_fit: dict | None = None  # multi-label: the bundle's per-label temperatures and thresholds (fit_on_val)
    robustness: bool = True  # measure the headline block under corruptions
    cache_dir: str | None = None  # where robustness results are cached
    seed: int = 0
    model_name: str = ""


@dataclass
class Logits:
    """A split's logits (TTA-averaged when there are views) and labels; ``plain_accuracy`` without TTA."""

    logits: np.ndarray
    labels: np.ndarray
    plain_accuracy: float | None = None  # None: no TTA
    embeddings: np.ndarray | None = None  # the index's vectors of the same images, from the same pass (headline)


class _LogitsAndEmbedding(nn.Module):
    """One pass for both: the trunk's features give the logits (through the head) and the index's vectors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = trunk_features(self.model, x)
        return torch.cat([head_from_trunk(self.model, t).float(), embedding_of(self.model, t)], dim=1)


def predict_rows(model: nn.Module, images: EvalImages, s: Scoring, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Logits of ``images.rows`` through ``model``: batched eval preprocessing on the device, in row order."""
    loader = BatchLoader(images.array, images.rows, images.labels,
                         Batching(batch_size=s.batch_size, train=False, pin_memory=s.runtime.device.type == "cuda"))
    return predict_logits(model, loader, s.runtime, batch_transform=BatchEval(s.pp), progress=progress,
                          desc=images.name)


def split_logits(model: nn.Module, images: EvalImages, s: Scoring, progress=None, *,
                 with_embeddings: bool = False) -> Logits:
    """The logits the block is measured on: the plain pass, averaged with the other TTA views when there are.

    With cached features (a linear probe: the backbone never changed) the head runs on them and no image
    goes through the backbone again; there are no views then. ``with_embeddings``: the plain pass also returns
    the neighbour index's vectors (one backbone pass instead of two for the headline block).
    """
    if images.features is not None:
        return Logits(head_logits(model, images.features, s.runtime.device), np.asarray(images.labels))
    emb = None
    if with_embeddings:
        both, y = predict_rows(_LogitsAndEmbedding(model), images, s, progress)
        lg, emb = both[:, :len(s.classes)], both[:, len(s.classes):]
    else:
        lg, y = predict_rows(model, images, s, progress)
    others = [v for v in s.views if v != "identity"]
    if not others or not len(y):
        return Logits(lg, y, None, emb)
    plain = loss_and_acc(lg, y)[1]  # top-1 (the temperature never changes the argmax); multi-label: mAP
    lg_o, _ = predict_rows(TTAModel(model, others), images, s, progress)
    lg = ((lg if "identity" in s.views else 0) + lg_o * len(others)) / len(s.views)
    return Logits(lg.astype(np.float32), y, plain, emb)


def embeddings(model: nn.Module, images: EvalImages, s: Scoring, progress=None) -> np.ndarray:
    """The neighbour index's vectors (L2-normalised trunk features) of ``images.rows``."""
    if images.features is not None:
        return embedding_of(model, images.features).numpy()
    return predict_rows(Embedder(model), images, s, progress)[0]


def score(model: nn.Module, images: EvalImages, s: Scoring, logits: Logits | None = None, *, headline: bool,
          progress=None) -> tuple[dict, np.ndarray]:
    """The metrics block of ``images`` and its calibrated probabilities (N x K, at ``s.temperature``).

    Args:
        logits: already computed (the finish step computes val's first, to fit the temperature on them).
        headline: the run's final split or another dataset: add the neighbour and robustness blocks.
    """
    if s.task == "multi-label":
        return score_multilabel(logits or split_logits(model, images, s, progress), images, s)
    lg = logits or split_logits(model, images, s, progress, with_embeddings=headline and s.index is not None)
    probs = softmax(lg.logits, s.temperature)
    m = classification_metrics(probs, lg.labels, s.classes, images.name)
    m["temperature"] = s.temperature
    m.update(calibration_block(lg.logits, lg.labels, s.temperature))
    m["skipped"] = list(images.skipped)
    if lg.plain_accuracy is not None:
        m["tta"] = {"views": list(s.views), "accuracy_without_tta": lg.plain_accuracy,
                    "gain": m["accuracy"] - lg.plain_accuracy}
    if len(lg.labels):
        m["selective"] = selective_block(lg.logits, lg.labels, s.temperature, s.abstain)
        if s.sets and s.sets.get("coverage") is not None:
            m["sets"] = sets_block(probs, lg.labels, s.classes, s.sets, stream=images.name)
    if headline and len(lg.labels):
        if s.index is not None:
            m["neighbors"] = _neighbors(model, images, s, lg, progress)
        if s.robustness:
            from nextclass.evaluation.robust import cached_robustness

            m["robustness"] = cached_robustness(model, images, s)
    return m, probs


def score_multilabel(lg: Logits, images: EvalImages, s: Scoring) -> tuple[dict, np.ndarray]:
    """The multi-label block of ``images`` and its calibrated per-label probabilities (N x L).

    At the bundle's per-label temperatures and thresholds (``s.label_fit``, fitted on val; none yet: T = 1 and
    0.5): mAP, micro/macro F1, per-label numbers, exact match (:func:`~nextclass.metrics.multilabel.multilabel_metrics`),
    each label's calibration before/after its temperature, and the thresholds' val numbers. No neighbour,
    robustness, abstain or set block: those read one class per image.
    """
    fit = s.label_fit or fit_on_val(np.zeros((0, len(s.classes))), np.zeros((0, len(s.classes))), s.classes)
    probs = calibrated_probs(lg.logits, fit["temperatures"], fit.get("offsets")).astype(np.float32)
    m = multilabel_metrics(probs, lg.labels, s.classes, images.name, fit["thresholds"])
    m.update(label_calibration_block(lg.logits, lg.labels, s.classes, fit["temperatures"], fit.get("reasons"),
                                     offsets=fit.get("offsets")))
    m["threshold_rule"], m["threshold_choice"] = fit["threshold_rule"], fit.get("choice")
    m["skipped"] = list(images.skipped)
    if lg.plain_accuracy is not None and m["map"] is not None:
        m["tta"] = {"views": list(s.views), "map_without_tta": lg.plain_accuracy, "gain": m["map"] - lg.plain_accuracy}
    return m, probs


def _neighbors(model: nn.Module, images: EvalImages, s: Scoring, lg: Logits, progress) -> dict:
    """kNN accuracy beside the head's, the nearest training images of wrong predictions, the unfamiliar share."""
    emb = lg.embeddings if lg.embeddings is not None else embeddings(model, images, s, progress)
    return {**second_opinion(s.index, emb, lg.logits, lg.labels, images.ids, s.classes, s.unfamiliar),
            "index_n": len(s.index), "index_bytes": int(s.index_bytes)}
