"""The run's data as batches: the training loader of an epoch and the logits of a split."""

from __future__ import annotations

import numpy as np
from torch import nn

from nextclass.data.batch_aug import BatchEval, batch_augment
from nextclass.evaluation.scorer import predict_rows
from nextclass.data.loader import ArrayDataset, BatchLoader, Batching, make_loader
from nextclass.data.transforms import train_transform
from nextclass.dist import all_gather_object, shard, unshard, world_size
from nextclass.training.context import Context
from nextclass.training.defaults import augment_for
from nextclass.training.scoring import eval_images, scoring_of

__all__ = ["train_batches", "split_logits"]


def split_logits(ctx: Context, model: nn.Module, split: str = "val", progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Plain logits and labels of a split, in split order: the scorer's eval pass
    (:func:`nextclass.evaluation.scorer.predict_rows`) on the run's images.

    Under DDP rank r evaluates ``rows[r::world]`` and the shards are gathered back on every rank.
    """
    images = eval_images(ctx, split)
    images.rows, images.labels = shard(images.rows), shard(images.labels)
    lg, y = predict_rows(model, images, scoring_of(ctx), progress)
    if world_size() > 1:
        parts, n = all_gather_object((lg, y)), len(ctx.rows[split])
        lg, y = unshard([p[0] for p in parts], n), unshard([p[1] for p in parts], n)
    return lg, y


def train_batches(ctx: Context, epoch: int, shard: tuple[int, int] = (0, 1)):
    """The training loader for ``epoch`` and the transform to run on each batch (None: done per sample).

    The fast path gathers uint8 batches and augments them in one batched op (:mod:`nextclass.data.batch_aug`);
    RandAugment/TrivialAugment have no batched version and use per-sample ``transforms.v2`` in a DataLoader.
    """
    cfg = ctx.cfg
    aug = augment_for(cfg)
    b = Batching(batch_size=cfg.batch_size, train=True, seed=cfg.seed, epoch=epoch, balance=cfg.balance == "sampler",
                 drop_last=True, shard=shard, pin_memory=ctx.device.type == "cuda", workers=cfg.workers)
    if aug is None or aug.auto == "none":
        loader = BatchLoader(ctx.images.array, ctx.rows["train"], ctx.labels["train"], b)
        return loader, (batch_augment(ctx.pp, aug) if aug is not None else BatchEval(ctx.pp))
    ds = ArrayDataset(ctx.images.array, ctx.rows["train"], ctx.labels["train"], train_transform(ctx.pp, aug))
    return make_loader(ds, b), None
