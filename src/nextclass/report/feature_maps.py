"""Activation maps of each stage of the backbone, as one image grid per input (``explain --feature-maps``).

A *stage* is a resolution level of the backbone: forward hooks record every 4-D output while the image
passes through :func:`nextclass.models.heads.trunk_features`, and the last output at each spatial size
(in call order) stands for that stage (e.g. simple_cnn: after each conv block's max-pool; a timm ResNet:
``layer1``..``layer4``). Each row of the grid is one stage: the input as the model sees it, then the
``channels`` most active channels (largest mean activation), each min-max scaled to grey levels and
enlarged to the cell size. This generic rule needs no per-architecture table of layer names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nextclass.models.heads import trunk_features
from nextclass.report import plots

__all__ = ["stage_activations", "feature_map_grid", "feature_map_files"]


@torch.no_grad()
def stage_activations(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """``(module name, activation (C, H, W))`` of the last module at each spatial size, for one image ``x`` (1xCxHxW)."""
    seen: list[tuple[str, torch.Tensor]] = []
    hooks = []
    for name, m in model.named_modules():
        if name and not list(m.children()):  # leaves only: each output recorded once
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: seen.append((name, out.detach().clone()))  # clone: in-place ops follow
                if torch.is_tensor(out) and out.ndim == 4 else None))
    try:
        trunk_features(model.eval(), x)
    finally:
        for h in hooks:
            h.remove()
    if getattr(model, "output_fmt", "NCHW") == "NHWC":
        seen = [(n, t.permute(0, 3, 1, 2)) for n, t in seen]
    stages: dict[tuple[int, int], tuple[str, torch.Tensor]] = {}
    for name, t in seen:
        stages[tuple(t.shape[2:])] = (name, t[0].float().cpu())  # later modules at the same size replace earlier ones
    return list(stages.values())


def _grey(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return np.zeros(a.shape, np.uint8) if hi <= lo else ((a - lo) / (hi - lo) * 255).astype(np.uint8)


def feature_map_grid(model: nn.Module, img, pp, channels: int = 8, cell: int = 96) -> bytes | None:
    """The PNG grid for one PIL image: a row per stage, the input then its ``channels`` most active maps."""
    from nextclass.data.transforms import image_to_tensor
    from nextclass.report.cam import display_image

    x = image_to_tensor(img, pp).unsqueeze(0).to(next(model.parameters()).device)
    shown = display_image(img, pp)
    items: list = []
    for i, (name, act) in enumerate(stage_activations(model, x)):
        top = torch.argsort(act.mean((1, 2)), descending=True)[:channels].tolist()
        items.append((shown, f"stage {i + 1}: {act.shape[1]}x{act.shape[2]}\n{name}", None))
        items += [(_grey(act[c].numpy()), f"channel {c}", None) for c in top]
        items += [(None, "", None)] * (channels - len(top))
    return plots.image_grid(items, cols=channels + 1, title="activation maps per stage (most active channels)", cell=cell)


def feature_map_files(predictor, files: Sequence[str], output: str | os.PathLike, channels: int = 8) -> list[dict]:
    """Write ``<output>/<stem>_features.png`` for each image; unreadable files are reported, never fatal.

    Returns one dict per input like :func:`nextclass.report.cam.explain_files`: ``{"source", "label",
    "probability", "explained": "feature maps", "output"}`` or ``{"source", "error"}``.
    """
    from nextclass.data.decode import DecodeError, open_image
    from nextclass.report.cam import _cam_model
    from nextclass.utils import atomic_write_bytes

    model = _cam_model(predictor)  # the PyTorch module (a private copy), also for ONNX predictors
    out_dir = Path(output)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, used = [], set()
    for f in files:
        try:
            img = open_image(f, predictor.preprocess.channels)
        except DecodeError as e:
            results.append({"source": str(f), "error": str(e)})
            continue
        pred = predictor.predict([img], topk=1)[0]
        stem, k = Path(str(f)).stem, 1
        name = f"{stem}_features.png"
        while name in used:
            k += 1
            name = f"{stem}_{k}_features.png"
        used.add(name)
        atomic_write_bytes(out_dir / name, feature_map_grid(model, img, predictor.preprocess, channels))
        results.append({"source": str(f), "label": pred.label, "probability": pred.probability,
                        "explained": "feature maps", "output": str(out_dir / name)})
    return results
