"""Trust at the end of a run: when to abstain, and which training images a prediction resembles.

Called by :func:`nextclass.training.finish.finish_run` before the blocks are scored; both fill the shared
:class:`~nextclass.evaluation.scorer.Scoring` that the scorer then reads, exactly as ``nextclass evaluate``
reads the same settings back from the bundle:

* :func:`abstain_on_val`: the abstain threshold chosen on *val* (only with ``target_accuracy``);
* :func:`sets_on_val`: the prediction-set threshold fitted on *val* by split conformal prediction (only with
  ``coverage``; the val scores are kept either way, so ``predict --coverage`` works on every bundle with a val
  split, :mod:`nextclass.metrics.conformal`);
* :func:`build_index`: the bundle's nearest-neighbour index of the training images
  (:mod:`nextclass.neighbors`) and, with a val split, the ``unfamiliar`` distance threshold (the conformal 95%
  quantile of the val images' distances to their nearest training image,
  :func:`nextclass.metrics.selective.distance_threshold`).
"""

from __future__ import annotations

import numpy as np
from torch import nn

from nextclass.evaluation.scorer import Logits, Scoring, embeddings
from nextclass.metrics.classification import softmax
from nextclass.metrics.conformal import sets_entry
from nextclass.metrics.selective import UNFAMILIAR_QUANTILE, abstain_entry, distance_threshold
from nextclass.neighbors import (INDEX_FILE, KNN_K, THUMB, WRONG_SHOWN, NeighborIndex, relative_id, save_index, subsample,
                                 thumbnails)
from nextclass.training.context import Context
from nextclass.training.scoring import eval_images
from nextclass.utils import log, progress_bar

__all__ = ["abstain_on_val", "sets_on_val", "build_index", "log_index", "KNN_K", "WRONG_SHOWN"]


def abstain_on_val(ctx: Context, logits: dict[str, Logits], s: Scoring) -> dict | None:
    """The bundle's ``abstain`` entry from val's logits (None without val); also set on ``s``."""
    val = logits.get("val")
    s.abstain = abstain_entry(val.logits, val.labels, s.temperature, ctx.cfg.target_accuracy) if val else None
    a = s.abstain
    if a and a["threshold"] is not None:
        log(f"abstain below {a['score']} {a['threshold']:.4f}: val coverage {a['val_coverage']:.1%} "
            f"for target accuracy {ctx.cfg.target_accuracy:.1%}")
    return s.abstain


def sets_on_val(ctx: Context, logits: dict[str, Logits], s: Scoring) -> dict | None:
    """The bundle's ``sets`` entry from val's calibrated probabilities (None without val); also set on ``s``."""
    val, coverage = logits.get("val"), ctx.cfg.coverage
    if val is None or not len(val.labels):
        if coverage is not None:
            log(f"[yellow]NOTE[/]: coverage {coverage:g}: no validation images to fit the set threshold on; no sets")
        s.sets = None
        return None
    s.sets = sets_entry(softmax(val.logits, s.temperature), val.labels, coverage, seed=ctx.cfg.seed)
    e = s.sets
    if e["too_small"]:
        log(f"[yellow]prediction sets[/]: {e['val_n']} val images are too few for coverage {coverage:g} (at least "
            f"{e['min_val_n']} needed): the threshold is infinite and every set is every class")
    elif coverage is not None:
        log(f"prediction sets: {e['score'].upper()} threshold {e['threshold']:.4f} for coverage {coverage:g}, "
            f"fitted on {e['val_n']} val images (split conformal)")
    return e


def _unfamiliar(ctx: Context, model: nn.Module, s: Scoring, bar) -> dict | None:
    """The bundle's ``neighbors.unfamiliar`` entry from the val images' distances to their nearest training image.

    None without val images, or with too few of them for the quantile (then nothing is ever flagged).
    """
    if len(ctx.rows.get("val", ())) == 0:
        return None
    d = s.index.search(embeddings(model, eval_images(ctx, "val"), s, bar), 1)[0][:, 0]
    th = distance_threshold(d, UNFAMILIAR_QUANTILE)
    if not np.isfinite(th):
        log(f"unfamiliar: {len(d)} val images are too few for the {UNFAMILIAR_QUANTILE:.0%} quantile; never flagged")
        return None
    return {"score": "knn_distance", "distance": th, "quantile": UNFAMILIAR_QUANTILE, "val_n": int(len(d)),
            "val_rate": float((d > th).mean()), "val_median": float(np.median(d))}


def build_index(ctx: Context, model: nn.Module, s: Scoring, progress: bool = True) -> dict | None:
    """Write ``<run>/model/neighbors.safetensors``; set ``s.index``/``s.unfamiliar`` as ``evaluate`` loads them;
    return the bundle's ``neighbors`` entry (None: no index)."""
    cap, train_rows = ctx.cfg.neighbor_index, ctx.rows["train"]
    if cap == 0 or len(train_rows) == 0:
        return None
    keep = subsample(ctx.labels["train"], cap, ctx.cfg.seed)
    images = eval_images(ctx, "train", keep)
    folder = ctx.run.bundle
    folder.mkdir(parents=True, exist_ok=True)
    with progress_bar(progress) as bar:
        emb = embeddings(model, images, s, bar)
        ids = [relative_id(i, ctx.source.root) for i in images.ids]  # no absolute path in a bundle
        thumbs = thumbnails(ctx.images.array[images.rows]) if ctx.cfg.neighbor_thumbnails else \
            np.zeros((len(ids), 0, 0, ctx.pp.channels), np.uint8)
        size = save_index(folder, emb, images.labels, ids, thumbs)
        s.index, s.index_bytes = NeighborIndex.load(folder), int(size)  # float16, as predict and evaluate load it
        info = {"file": INDEX_FILE, "n": int(len(images.rows)), "of": int(len(train_rows)), "dim": int(emb.shape[1]),
                "bytes": int(size), "thumbnail": THUMB if ctx.cfg.neighbor_thumbnails else 0, "seed": ctx.cfg.seed,
                "ids": "relative to the training data's root"}
        unfamiliar = _unfamiliar(ctx, model, s, bar)
    if unfamiliar is not None:
        info["unfamiliar"], s.unfamiliar = unfamiliar, unfamiliar["distance"]
    return info


def log_index(info: dict | None, blocks: dict, last: str | None) -> None:
    """One line on the index, with the kNN accuracy of the headline block (recorded into ``info`` too)."""
    if info is None:
        return
    knn = (blocks.get(last) or {}).get("neighbors") if last else None
    if knn:
        info[f"knn_{last}_accuracy"] = knn["knn_accuracy"]
    u = info.get("unfamiliar")
    log(f"neighbour index: {info['n']} training images, {info['bytes'] / 2 ** 20:.2f} MB"
        + (f"; kNN {last} accuracy {knn['knn_accuracy']:.1%} (head {knn['head_accuracy']:.1%})" if knn else "")
        + (f"; unfamiliar beyond distance {u['distance']:.4f} (val {UNFAMILIAR_QUANTILE:.0%} quantile)" if u else ""))
