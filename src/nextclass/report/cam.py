"""Grad-CAM overlays (the ``grad-cam`` package), with the target layer found automatically.

Grad-CAM (Selvaraju et al. 2017) weights the last convolutional feature map by the gradient of
the class score. Which layer that is differs per architecture (``layer4`` in a ResNet,
``stages[-1]`` in a ConvNeXt, ``bn2`` in an EfficientNet); :func:`find_target_layer` finds it from
the model rather than from a hand-kept table:

1. take the module that has timm's ``forward_features`` (the model itself, or the backbone a
   custom head wraps);
2. run one dummy image through ``forward_features`` with forward hooks on every sub-module and
   keep the modules whose output is the final feature map (same shape, ``N x C x H x W``);
3. take the outermost one (the last to finish); if that output came out of a pooling layer
   (``simple_cnn`` ends with a max-pool), step back to the layer feeding it, for a finer map.

Models without a spatial feature map (ViT-style token outputs) raise :class:`CamError`.
"""

from __future__ import annotations

import copy
import io
import os
import threading
from typing import Sequence

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

__all__ = ["CamError", "find_backbone", "find_target_layer", "cam_maps", "overlay", "cam_overlay", "cam_overlays",
           "display_image", "explain_files"]

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class CamError(ValueError):
    """Grad-CAM cannot be computed for this model; the message says why."""


def find_backbone(model: nn.Module) -> nn.Module:
    """The module that exposes ``forward_features`` (the model, or the first sub-module that does)."""
    if hasattr(model, "forward_features"):
        return model
    for _, m in model.named_modules():
        if m is not model and hasattr(m, "forward_features"):
            return m
    raise CamError(f"{type(model).__name__}: no forward_features() (not a timm-style model); cannot pick a Grad-CAM layer")


@torch.no_grad()
def find_target_layer(model: nn.Module, input_shape: Sequence[int]) -> tuple[str, nn.Module]:
    """``(name, module)`` of the layer whose output is the last spatial feature map (see the module docstring).

    Example:
        >>> from nextclass.models.factory import create
        >>> find_target_layer(create("resnet18", num_classes=3), (3, 64, 64))[0]
        'layer4'
    """
    backbone = find_backbone(model)
    done: list[tuple[str, nn.Module, torch.Tensor]] = []
    names = {id(m): n for n, m in backbone.named_modules() if m is not backbone}

    def hook(mod, _inp, out):
        if isinstance(out, torch.Tensor):
            done.append((names[id(mod)], mod, out))

    handles = [m.register_forward_hook(hook) for m in backbone.modules() if m is not backbone]
    was_training = backbone.training
    backbone.eval()
    try:
        dev = next(backbone.parameters()).device
        feats = backbone.forward_features(torch.zeros(1, *input_shape, device=dev))
    finally:
        for h in handles:
            h.remove()
        backbone.train(was_training)
    if not isinstance(feats, torch.Tensor) or feats.ndim != 4 or feats.shape[-1] * feats.shape[-2] < 2:
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise CamError(f"{type(backbone).__name__}: forward_features gives {shape}, not a spatial N x C x H x W map; "
                       "Grad-CAM needs a convolutional feature map")
    same = [i for i, (_, _, o) in enumerate(done) if o.shape == feats.shape and o.data_ptr() == feats.data_ptr()]
    if not same:
        raise CamError(f"{type(backbone).__name__}: no sub-module produces the final feature map")
    pick = same[-1]
    pools = [i for i in same if isinstance(done[i][1], _POOLS)]
    if pools:  # the map came out of a pooling layer: use the last layer before it (same channels, finer grid)
        before = [i for i in range(pools[0]) if done[i][2].ndim == 4 and done[i][2].shape[1] == feats.shape[1]
                  and done[i][2].shape[-1] > feats.shape[-1] and not isinstance(done[i][1], _POOLS)]
        if before:
            pick = before[-1]
    return done[pick][0], done[pick][1]


def cam_maps(model: nn.Module, batch: torch.Tensor, class_indices: Sequence[int], layer: nn.Module | None = None
             ) -> np.ndarray:
    """Grad-CAM maps (``N x H x W`` in [0, 1], at the input size) for ``class_indices`` of a normalised batch."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if layer is None:
        layer = find_target_layer(model, tuple(batch.shape[1:]))[1]
    was_training = model.training
    dev = next(model.parameters()).device
    x = batch.detach().to(dev).clone().requires_grad_(True)  # a graph exists even if every weight is frozen
    try:
        with torch.enable_grad(), GradCAM(model=model, target_layers=[layer]) as cam:
            maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in class_indices])
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return np.nan_to_num(np.asarray(maps, dtype=np.float32))


def display_image(img: Image.Image, preprocess) -> np.ndarray:
    """What the model sees, before normalisation: the eval resize + centre crop, as RGB uint8 ``HxWx3``."""
    from nextclass.data.transforms import to_square

    sq = to_square(img, preprocess.size, preprocess.interpolation)
    off = (preprocess.size - preprocess.crop) // 2
    sq = sq[off:off + preprocess.crop, off:off + preprocess.crop]
    return np.repeat(sq, 3, axis=2) if sq.shape[2] == 1 else sq[:, :, :3]


def overlay(rgb: np.ndarray, cam: np.ndarray, size: int = 224, image_weight: float = 0.55) -> Image.Image:
    """Heat-map ``cam`` (HxW in [0, 1]) over ``rgb`` (uint8 HxWx3), both scaled up to at least ``size`` px."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    h, w = rgb.shape[:2]
    scale = max(1.0, size / max(h, w))
    W, H = round(w * scale), round(h * scale)
    base = np.asarray(Image.fromarray(rgb).resize((W, H), Image.BICUBIC), dtype=np.float32) / 255.0
    heat = np.asarray(Image.fromarray(cam.astype(np.float32), mode="F").resize((W, H), Image.BILINEAR))
    out = show_cam_on_image(base, np.clip(heat, 0, 1), use_rgb=True, image_weight=image_weight)
    return Image.fromarray(out)


def cam_overlays(model: nn.Module, images: Sequence[Image.Image], preprocess, class_indices: Sequence[int] | None = None,
                 size: int = 224) -> tuple[list[Image.Image], np.ndarray]:
    """Overlays for decoded PIL ``images`` and the model's probabilities (no temperature) for each.

    ``class_indices`` defaults to each image's predicted class.
    """
    from nextclass.data.transforms import image_to_tensor

    if not images:
        return [], np.zeros((0, 0), np.float32)
    batch = torch.stack([image_to_tensor(im, preprocess) for im in images])
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(batch.to(next(model.parameters()).device)).float(), 1).cpu().numpy()
    classes = list(class_indices) if class_indices is not None else probs.argmax(1).tolist()
    maps = cam_maps(model, batch, classes)
    return [overlay(display_image(im, preprocess), m, size) for im, m in zip(images, maps)], probs


def _cam_model(predictor) -> nn.Module:
    """A private copy of the predictor's torch model: Grad-CAM's hooks must not see concurrent predictions."""
    model = predictor.__dict__.get("_cam_model")
    if model is None:
        base = getattr(predictor, "model", None)
        if not isinstance(base, nn.Module):  # e.g. an ONNX Runtime predictor: Grad-CAM needs the torch weights
            from nextclass.bundle import load_model

            if not getattr(predictor, "path", None):
                raise CamError("Grad-CAM needs the torch model, and this predictor has no bundle path to load it from")
            base, _ = load_model(predictor.path)
            model = base
        else:
            model = copy.deepcopy(base)
        predictor.__dict__["_cam_model"] = model.eval()
    return model


def cam_overlay(predictor, pil_image, class_index: int | None = None, size: int = 224) -> Image.Image:
    """Grad-CAM overlay for one image, for ``class_index`` (default: the predicted class).

    ``predictor`` is a :class:`nextclass.deploy.predictor.Predictor` (or anything with ``preprocess`` and
    a torch ``model`` or a bundle ``path``); ``pil_image`` may be a PIL image, a path or bytes.
    Thread-safe: one overlay at a time per predictor, on a private copy of the model.

    Example:
        >>> from nextclass import load
        >>> img = cam_overlay(load("runs/demo-digits"), "digit.png")  # doctest: +SKIP
        >>> img.save("digit_cam.png")                                    # doctest: +SKIP
    """
    from nextclass.data.decode import open_image

    pp = predictor.preprocess
    img = open_image(pil_image, pp.channels)
    lock = predictor.__dict__.setdefault("_cam_lock", threading.Lock())
    with lock:
        model = _cam_model(predictor)
        out, _ = cam_overlays(model, [img], pp, None if class_index is None else [int(class_index)], size)
    return out[0]


def explain_files(predictor, files: Sequence[str], output: str | os.PathLike, class_name: str | None = None,
                  size: int = 224) -> list[dict]:
    """Write ``<output>/<stem>_cam.png`` for each image; unreadable files are reported, never fatal.

    Returns one dict per input: ``{"source", "label", "probability", "explained", "output"}`` or
    ``{"source", "error"}``. ``class_name`` explains that class instead of the predicted one.

    Example:
        >>> rows = explain_files(load("runs/digits"), ["a.png"], "cams")  # doctest: +SKIP
        >>> rows[0]["output"]                                              # doctest: +SKIP
        'cams/a_cam.png'
    """
    from nextclass.data.decode import DecodeError, open_image
    from nextclass.utils import atomic_write_bytes

    classes = list(predictor.classes)
    if class_name is not None and class_name not in classes:
        raise ValueError(f"--class {class_name!r} is not one of the model's classes: {', '.join(classes[:20])}")
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
        target = classes.index(class_name) if class_name is not None else pred.index
        over = cam_overlay(predictor, img, target, size)
        stem, k = Path(str(f)).stem, 1
        name = f"{stem}_cam.png"
        while name in used:  # two inputs with the same file name (different folders) in one call
            k += 1
            name = f"{stem}_{k}_cam.png"
        used.add(name)
        buf = io.BytesIO()
        over.save(buf, format="PNG")
        atomic_write_bytes(out_dir / name, buf.getvalue())
        results.append({"source": str(f), "label": pred.label, "probability": pred.probability,
                        "explained": classes[target], "output": str(out_dir / name)})
    return results
