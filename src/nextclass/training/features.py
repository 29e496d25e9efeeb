"""Embed once: a frozen backbone's features for every train/val/test image, cached on disk.

A linear probe re-running a frozen backbone on every image in every epoch (what the seed notebooks
do) spends > 99 % of its time recomputing the same numbers. Here every training, validation and
test image goes through the backbone once, batched and in eval mode; the head then trains on the cached
tensors in seconds. Optionally ``tta_views`` augmented views of each training image are embedded
too (the probe draws one view per image per epoch, a cheap stand-in for per-epoch augmentation).

The cache file is ``<cache_dir>/features/<key>.safetensors``; the key hashes everything the
numbers depend on: model name, head kind (pooled vector or feature map), the backbone's actual
weights, the preprocessing, the decoded-image cache key, the train/val/test rows, the number of views
and, when there are views, the augmentation and seed. Change any of them and the features are
recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nextclass.data.loader import ArrayDataset, Batching, make_loader
from nextclass.data.transforms import eval_transform, train_transform
from nextclass.models.heads import trunk_features, weights_digest
from nextclass.utils import default_cache_dir, log, progress_bar, sha1_of

__all__ = ["EmbedOptions", "Features", "cached_features", "embed", "feature_key", "feature_cache_path", "weights_digest",
           "FEATURE_VERSION"]

FEATURE_VERSION = 2  # 2: the test split is embedded too (its logits come from the cache)


@dataclass(frozen=True, kw_only=True)
class EmbedOptions:
    """How :func:`embed` runs the backbone: batching, device and the dtype/layout of what it keeps."""

    batch_size: int = 64
    device: torch.device | str = "cpu"
    workers: int = 0  # DataLoader worker processes
    channels_last: bool = False  # move each batch to channels-last (the model must be converted by the caller)
    half: bool = False  # keep the features as fp16 (computed in the model's dtype, stored half)
    seed: int = 0  # seeds the DataLoader's workers: random (view) transforms depend only on it


@dataclass
class Features:
    """Cached backbone outputs. ``train[v, i]`` is view ``v`` of training row ``i`` (view 0: eval view)."""

    train: torch.Tensor  # (1 + tta_views, N_train, *feature_shape)
    val: torch.Tensor  # (N_val, *feature_shape)
    test: torch.Tensor  # (N_test, *feature_shape)
    key: str
    hit: bool
    seconds: float  # time spent embedding (0 on a cache hit)
    path: Path


def _rows_digest(rows: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()


def feature_key(ctx, model: nn.Module) -> str:
    """The cache key of ``model``'s features on ``ctx``'s train/val/test images (see module docstring)."""
    from nextclass.training.defaults import augment_for

    cfg = ctx.cfg
    kind = "map" if hasattr(model, "forward_trunk") else "pooled"
    views = cfg.tta_views
    aug = repr(augment_for(cfg)) if views else None
    return sha1_of([FEATURE_VERSION, cfg.model, kind, weights_digest(model), ctx.pp.to_dict(), ctx.images.key,
                    _rows_digest(ctx.rows["train"]), _rows_digest(ctx.rows["val"]), _rows_digest(ctx.rows["test"]), views, aug,
                    cfg.seed if views else None])


@torch.inference_mode()
def embed(model: nn.Module, array: np.ndarray, rows: np.ndarray, transform, opts: EmbedOptions = EmbedOptions(), *,
          progress=None, desc: str = "embed") -> torch.Tensor:
    """Backbone outputs (:func:`~nextclass.models.heads.trunk_features`) for ``array[rows]``, in order.

    Example:
        >>> import timm, numpy as np
        >>> from nextclass.data.transforms import Preprocess, eval_transform
        >>> m = timm.create_model("test_resnet", num_classes=3)
        >>> imgs = np.zeros((4, 32, 32, 3), np.uint8)
        >>> embed(m, imgs, np.arange(4), eval_transform(Preprocess(32, 32))).shape[0]
        4
    """
    ds = ArrayDataset(array, rows, np.zeros(len(rows), np.int64), transform)
    loader = make_loader(ds, Batching(batch_size=opts.batch_size, train=False, seed=opts.seed, workers=opts.workers))
    model.eval()
    out = []
    task = progress.add_task(desc, total=len(loader), metrics="") if progress is not None else None
    for x, _ in loader:
        x = x.to(opts.device)
        if opts.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        f = trunk_features(model, x).float().cpu()
        out.append(f.half() if opts.half else f)
        if task is not None:
            progress.advance(task)
    if task is not None:
        progress.remove_task(task)
    if not out:
        return torch.zeros(0)
    return torch.cat(out)


def _embed_all(ctx, model: nn.Module, progress: bool) -> dict[str, torch.Tensor]:
    from nextclass.training.defaults import augment_for

    cfg = ctx.cfg
    half = hasattr(model, "forward_trunk")  # feature maps are large: store fp16 (pooled vectors stay fp32)
    # NOTE: channels_last measured ~1.8x faster for CPU *inference* of conv nets (ENVIRONMENT.md), unlike training.
    cl = ctx.device.type == "cpu" or bool(cfg.channels_last)
    model.to(ctx.device)
    if cl:
        model.to(memory_format=torch.channels_last)
    opts = EmbedOptions(batch_size=max(cfg.batch_size, 64), device=ctx.device, workers=cfg.workers, channels_last=cl,
                        half=half)
    try:
        with progress_bar(progress) as bar:
            views = [embed(model, ctx.images.array, ctx.rows["train"], eval_transform(ctx.pp), opts, progress=bar,
                           desc="embed train")]
            for v in range(cfg.tta_views):
                torch.manual_seed(cfg.seed * 7919 + v + 1)  # views depend only on (seed, view)
                tf = train_transform(ctx.pp, augment_for(cfg))
                views.append(embed(model, ctx.images.array, ctx.rows["train"], tf, replace(opts, seed=cfg.seed + v + 1),
                                   progress=bar, desc=f"embed view {v + 1}/{cfg.tta_views}"))
            out = {split: embed(model, ctx.images.array, ctx.rows[split], eval_transform(ctx.pp), opts, progress=bar,
                                desc=f"embed {split}") for split in ("val", "test")}
    finally:
        if cl and not cfg.channels_last:
            model.to(memory_format=torch.contiguous_format)
    return {"train": torch.stack(views), **out}


def feature_cache_path(ctx, model: nn.Module) -> Path:
    """Where ``model``'s features on ``ctx``'s images are (or will be) cached."""
    return Path(ctx.cfg.cache_dir or default_cache_dir()) / "features" / f"{feature_key(ctx, model)}.safetensors"


def cached_features(ctx, model: nn.Module, progress: bool = True) -> Features:
    """Features of ``ctx``'s train (with views), val and test images, from the cache or embedded now.

    Example:
        >>> feats = cached_features(ctx, model)  # doctest: +SKIP
        >>> feats.train.shape, feats.hit          # doctest: +SKIP
        (torch.Size([1, 700, 1280]), True)
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = feature_cache_path(ctx, model)
    key, folder = path.stem, path.parent
    if path.exists():
        try:
            with safe_open(str(path), framework="pt") as f:
                t = {k: f.get_tensor(k) for k in ("train", "val", "test")}
            log(f"features: cache hit {path.name[:12]} ({tuple(t['train'].shape)} train, {len(t['val'])} val, "
                f"{len(t['test'])} test) - no backbone pass")
            return Features(t["train"], t["val"], t["test"], key, True, 0.0, path)
        except Exception as e:  # a damaged cache file is rebuilt, never trusted
            log(f"[yellow]features: unreadable cache {path} ({type(e).__name__}); recomputing[/]")
    t0 = time.time()
    t = _embed_all(ctx, model, progress)
    seconds = time.time() - t0
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{key}.{os.getpid()}.tmp"
    meta = {"model": ctx.cfg.model, "views": str(ctx.cfg.tta_views), "seconds": f"{seconds:.2f}",
            "preprocess": json.dumps(ctx.pp.to_dict())}
    save_file({k: v.contiguous() for k, v in t.items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)
    n = t["train"].shape[0] * t["train"].shape[1] + len(t["val"]) + len(t["test"])
    mb = sum(v.numel() * v.element_size() for v in t.values()) / 2**20
    log(f"features: embedded {n} images in {seconds:.1f}s ({n / max(seconds, 1e-9):.1f} img/s), "
        f"{mb:.1f} MB cached at {path}")
    return Features(t["train"], t["val"], t["test"], key, False, seconds, path)
