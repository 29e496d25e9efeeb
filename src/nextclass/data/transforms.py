"""Preprocessing: the exact eval pipeline stored in the bundle, and train augmentation.

Images go through two stages, identical for training, evaluation and prediction:

1. :func:`to_square` (PIL, once per image, cached): resize the *shorter side* to ``size`` and
   centre-crop a ``size`` x ``size`` square, as uint8. This is what the decoded-image cache holds.
2. on the uint8 tensor: eval = centre-crop ``crop`` then scale/normalise; train = random
   resized crop / flip / rotation / colour, then the same scale/normalise
   (torchvision.transforms.v2 on tensors, no per-epoch PIL work).

Because predict runs the very same two functions as the cache, "with cache" and "without cache"
eval batches are bit-identical.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image

__all__ = ["Preprocess", "to_square", "eval_transform", "train_transform", "image_to_tensor", "INTERPOLATIONS"]

INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST,
                  "lanczos": Image.LANCZOS, "box": Image.BOX}


@dataclass
class Preprocess:
    """The eval preprocessing a bundle carries (enough to reproduce it anywhere, ONNX included)."""

    size: int  # shorter side resized to this, then centre square of size x size
    crop: int  # final centre crop fed to the model
    channels: int = 3
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


def to_square(img: Image.Image, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """Resize the shorter side to ``size`` and centre-crop a square; returns uint8 HxWxC."""
    w, h = img.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), INTERPOLATIONS[interpolation])
        left, top = (nw - size) // 2, (nh - size) // 2
        img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _normalize(pp: Preprocess):
    from torchvision.transforms import v2

    mean = list(pp.mean)[: pp.channels] if len(pp.mean) >= pp.channels else [pp.mean[0]] * pp.channels
    std = list(pp.std)[: pp.channels] if len(pp.std) >= pp.channels else [pp.std[0]] * pp.channels
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=mean, std=std)]


def eval_transform(pp: Preprocess):
    """uint8 CxSxS tensor → normalised float CxCropxCrop tensor."""
    from torchvision.transforms import v2

    ops = [v2.CenterCrop(pp.crop)] if pp.crop != pp.size else []
    return v2.Compose(ops + _normalize(pp))


@dataclass
class Augment:
    """Train-time augmentation knobs (see TrainConfig for the meaning of each)."""

    scale: tuple[float, float] = (0.75, 1.0)
    hflip: bool = True
    vflip: bool = False
    rotation: float = 10.0
    brightness: float = 0.2
    contrast: float = 0.2
    auto: str = "none"  # none | randaugment | trivialaugment
    erasing: float = 0.0
    translate: int = 0  # random shift of up to this many pixels (reflect padding), the small-image recipe's crop
    extra: dict = field(default_factory=dict)


def train_transform(pp: Preprocess, aug: Augment | None):
    """Augmentation on uint8 tensors (torchvision.transforms.v2), then the eval normalisation."""
    from torchvision.transforms import v2

    if aug is None:
        return eval_transform(pp)
    interp = {"bicubic": v2.InterpolationMode.BICUBIC, "nearest": v2.InterpolationMode.NEAREST}.get(
        pp.interpolation, v2.InterpolationMode.BILINEAR)
    ops: list = []
    if aug.rotation:
        ops.append(v2.RandomRotation(aug.rotation, interpolation=v2.InterpolationMode.BILINEAR))
    if aug.scale[0] < 1.0 or pp.crop != pp.size:
        ops.append(v2.RandomResizedCrop(pp.crop, scale=tuple(aug.scale), interpolation=interp, antialias=True))
    if aug.translate:
        ops.append(v2.RandomCrop(pp.crop, padding=aug.translate, padding_mode="reflect"))
    if aug.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if aug.vflip:
        ops.append(v2.RandomVerticalFlip())
    if aug.brightness or aug.contrast:
        ops.append(v2.ColorJitter(brightness=aug.brightness, contrast=aug.contrast))
    if aug.auto == "randaugment":
        ops.append(v2.RandAugment(interpolation=interp))
    elif aug.auto == "trivialaugment":
        ops.append(v2.TrivialAugmentWide(interpolation=interp))
    ops += _normalize(pp)
    if aug.erasing > 0:
        ops.append(v2.RandomErasing(p=aug.erasing))
    return v2.Compose(ops)


def image_to_tensor(img: Image.Image, pp: Preprocess) -> torch.Tensor:
    """A decoded PIL image → the model's normalised input tensor (CxHxW), exactly as in eval."""
    sq = to_square(img, pp.size, pp.interpolation)
    return eval_transform(pp)(torch.from_numpy(np.array(sq, copy=True)).permute(2, 0, 1))
