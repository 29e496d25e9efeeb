"""A training run's data and settings as the scorer takes them (:mod:`nextclass.evaluation.scorer`).

The finish step, the neighbour index and the per-epoch validation pass all score through the same two
objects; ``nextclass evaluate`` builds the same ones from the run directory and the bundle
(:mod:`nextclass.evaluation.targets`).
"""

from __future__ import annotations

import numpy as np
import torch

from nextclass.evaluation.scorer import EvalImages, Scoring
from nextclass.metrics.tta import views_from_config
from nextclass.training.context import Context

__all__ = ["eval_images", "scoring_of", "final_views"]


def eval_images(ctx: Context, split: str, keep: np.ndarray | None = None) -> EvalImages:
    """``split``'s decodable images (or its rows at positions ``keep``) from the run's decoded cache.

    After a linear probe the backbone never changed, so the rows carry their cached features (the eval view
    the probe trained on) and the scorer runs only the head.
    """
    rows, labels = ctx.rows[split], ctx.labels[split]
    feats = getattr(ctx.features, split, None) if ctx.cfg.recipe == "linear-probe" else None
    if feats is not None and split == "train":
        feats = feats[0]  # train holds (views, N, ...): view 0 is the eval view
    if keep is not None:
        rows, labels = rows[keep], labels[keep]
        feats = feats[torch.as_tensor(keep)] if feats is not None else None
    samples = ctx.source.samples
    skipped = ctx.images.skipped(samples, split) if keep is None else []
    return EvalImages(split, ctx.images.array, rows, labels, [samples[r].path for r in rows], key=ctx.images.key,
                      skipped=skipped, features=feats)


def final_views(ctx: Context) -> list[str]:
    """The TTA views of the final numbers: the training-matched views with ``tta`` (none after a linear probe,
    whose numbers come from the cached eval-view features)."""
    views = views_from_config(ctx.cfg)
    if not ctx.cfg.tta or ctx.cfg.recipe == "linear-probe":
        return ["identity"]
    return views


def scoring_of(ctx: Context) -> Scoring:
    """The run's :class:`Scoring`, before the finish step fits the temperature and builds the index."""
    cfg = ctx.cfg
    return Scoring(classes=list(ctx.classes), pp=ctx.pp, runtime=ctx.runtime, batch_size=max(cfg.batch_size, 64),
                   views=final_views(ctx), robustness=bool(cfg.robustness), cache_dir=cfg.cache_dir, seed=cfg.seed,
                   model_name=cfg.model, task=ctx.source.task)
