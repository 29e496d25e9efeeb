"""Trust at the end of a run: when to abstain, and which training images a prediction resembles.

Called by :func:`nextclass.training.finish.finish_run` after the metrics of each split:

* :func:`selective_results`: the abstain threshold chosen on *val* (only with ``target_accuracy``), and per
  split the AUROC of telling right from wrong predictions per score plus the risk-coverage curve
  (``metrics.json`` → ``<split>.selective``);
* :func:`build_neighbors`: the bundle's nearest-neighbour index of the training images
  (:mod:`nextclass.neighbors`), the kNN classifier's accuracy on the last split beside the head's, and the
  nearest training images of its wrong predictions for the report (``<split>.neighbors``); with a val split,
  the ``unfamiliar`` distance threshold (the conformal 95% quantile of the val images' distances to their
  nearest training image, :func:`nextclass.metrics.selective.distance_threshold`) and the share of the last
  split's images it flags.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nextclass.data.batch_aug import BatchEval
from nextclass.data.loader import BatchLoader
from nextclass.engine.loop import predict_logits
from nextclass.metrics.selective import UNFAMILIAR_QUANTILE, abstain_entry, distance_threshold, selective_block
from nextclass.neighbors import (
    INDEX_FILE,
    KNN_K,
    THUMB,
    WRONG_SHOWN,
    Embedder,
    NeighborIndex,
    embedding_of,
    save_index,
    second_opinion,
    subsample,
    thumbnails,
)
from nextclass.training.context import Context
from nextclass.utils import log, progress_bar

__all__ = ["selective_results", "build_neighbors", "KNN_K", "WRONG_SHOWN"]



def selective_results(ctx: Context, logits: dict, temperature: float, blocks: dict) -> dict | None:
    """Add ``selective`` to each split's block; return the bundle's ``abstain`` entry (None without val)."""
    abstain = abstain_entry(*logits["val"], temperature, ctx.cfg.target_accuracy) if "val" in logits else None
    for split, (lg, y) in logits.items():
        blocks[split]["selective"] = selective_block(lg, y, temperature, abstain)
    if abstain and abstain["threshold"] is not None:
        log(f"abstain below {abstain['score']} {abstain['threshold']:.4f}: val coverage {abstain['val_coverage']:.1%} "
            f"for target accuracy {ctx.cfg.target_accuracy:.1%}")
    return abstain


def _embed(ctx: Context, model: nn.Module, split: str, bar, keep: np.ndarray | None = None) -> np.ndarray:
    """Index vectors of ``split``'s images (or of its rows at positions ``keep``).

    After a linear probe the backbone never changed, so the vectors come from the feature cache (the eval view
    the probe trained on) and no image goes through the backbone again.
    """
    cached = getattr(ctx.features, split, None) if ctx.cfg.recipe == "linear-probe" else None
    if cached is not None:
        t = cached[0] if split == "train" else cached  # train holds (views, N, ...): view 0 is the eval view
        return embedding_of(model, t if keep is None else t[torch.as_tensor(keep)]).numpy()
    rows, labels = ctx.rows[split], ctx.labels[split]
    if keep is not None:
        rows, labels = rows[keep], labels[keep]
    loader = BatchLoader(ctx.images.array, rows, labels, max(ctx.cfg.batch_size, 64), train=False,
                         pin_memory=ctx.device.type == "cuda")
    emb, _ = predict_logits(Embedder(model), loader, ctx.runtime, batch_transform=BatchEval(ctx.pp), progress=bar,
                            desc=f"{split} embeddings")
    return emb


def _second_opinion(ctx: Context, model: nn.Module, index: NeighborIndex, split: str, logits, bar,
                    unfamiliar: dict | None) -> dict:
    """kNN accuracy on ``split`` beside the head's, the neighbours of the head's wrong predictions, and the
    share of ``split``'s images flagged ``unfamiliar`` (:func:`nextclass.neighbors.second_opinion`)."""
    lg, y = logits
    emb = _embed(ctx, model, split, bar)
    paths = [ctx.source.samples[r].path for r in ctx.rows[split]]
    return second_opinion(index, emb, lg, y, paths, ctx.classes, unfamiliar["distance"] if unfamiliar else None)


def _unfamiliar(ctx: Context, model: nn.Module, index: NeighborIndex, bar) -> dict | None:
    """The bundle's ``neighbors.unfamiliar`` entry from the val images' distances to their nearest training image.

    None without val images, or with too few of them for the quantile (then nothing is ever flagged).
    """
    rows = ctx.rows.get("val")
    if rows is None or len(rows) == 0:
        return None
    emb = _embed(ctx, model, "val", bar)
    d = index.search(emb, 1)[0][:, 0]
    th = distance_threshold(d, UNFAMILIAR_QUANTILE)
    if not np.isfinite(th):
        log(f"unfamiliar: {len(d)} val images are too few for the {UNFAMILIAR_QUANTILE:.0%} quantile; never flagged")
        return None
    return {"score": "knn_distance", "distance": th, "quantile": UNFAMILIAR_QUANTILE, "val_n": int(len(d)),
            "val_rate": float((d > th).mean()), "val_median": float(np.median(d))}


def build_neighbors(ctx: Context, model: nn.Module, logits: dict, blocks: dict, progress: bool = True) -> dict | None:
    """Write ``<run>/model/neighbors.safetensors``; return the bundle's ``neighbors`` entry (None: no index)."""
    cap, train_rows = ctx.cfg.neighbor_index, ctx.rows["train"]
    if cap == 0 or len(train_rows) == 0:
        return None
    keep = subsample(ctx.labels["train"], cap, ctx.cfg.seed)
    rows, labels = train_rows[keep], ctx.labels["train"][keep]
    folder = ctx.run_dir / "model"
    folder.mkdir(parents=True, exist_ok=True)
    with progress_bar(progress) as bar:
        emb = _embed(ctx, model, "train", bar, keep)
        size = save_index(folder, emb, labels, [ctx.source.samples[r].path for r in rows], thumbnails(ctx.images.array[rows]))
        info = {"file": INDEX_FILE, "n": int(len(rows)), "of": int(len(train_rows)), "dim": int(emb.shape[1]),
                "bytes": int(size), "thumbnail": THUMB, "seed": ctx.cfg.seed}
        index = NeighborIndex(emb.astype(np.float16), labels, [], np.zeros((0,)))  # as predict loads it: float16
        unfamiliar = _unfamiliar(ctx, model, index, bar)
        if unfamiliar is not None:
            info["unfamiliar"] = unfamiliar
        last = "test" if "test" in logits else ("val" if "val" in logits else None)
        if last is not None:
            blocks[last]["neighbors"] = {**_second_opinion(ctx, model, index, last, logits[last], bar, unfamiliar),
                                         "index_n": info["n"], "index_bytes": info["bytes"]}
            info[f"knn_{last}_accuracy"] = blocks[last]["neighbors"]["knn_accuracy"]
    log(f"neighbour index: {info['n']} training images, {size / 2 ** 20:.2f} MB"
        + (f"; kNN {last} accuracy {info[f'knn_{last}_accuracy']:.1%} (head {blocks[last]['neighbors']['head_accuracy']:.1%})"
           if last else "")
        + (f"; unfamiliar beyond distance {unfamiliar['distance']:.4f} (val {UNFAMILIAR_QUANTILE:.0%} quantile)"
           if unfamiliar else ""))
    return info
