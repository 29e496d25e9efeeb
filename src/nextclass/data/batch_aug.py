"""Batched augmentation on uint8 image batches (CPU or GPU), one affine warp per batch.

Per-image PIL or per-sample ``transforms.v2`` pipelines cost more than a small model's training
step on a 2-core CPU (measured: ~300 img/s for a v2 crop/flip/rotate/jitter chain on 28 px images,
against ~1,000 img/s for the simple_cnn step). Here the random resized crop, rotation and flips of a
whole batch are folded into one per-image 2x3 affine matrix and applied with a single
``affine_grid`` + ``grid_sample`` call; brightness/contrast and random erasing are batched tensor
ops. On CUDA the same code runs on the GPU, after a pinned, non-blocking uint8 copy (4x fewer bytes
than float).

The distributions follow torchvision's ``RandomResizedCrop`` (area fraction ~ U(scale), log aspect
~ U(log 3/4, log 4/3)), ``RandomRotation`` (U(-deg, deg), zero fill), ``ColorJitter`` brightness and
contrast factors ~ U(1-s, 1+s), and ``RandomErasing`` (area 2-33 %, aspect 0.3-3.3, value 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from nextclass.data.transforms import Augment, Preprocess

__all__ = ["BatchAugment", "BatchEval", "BatchTranslate", "batch_augment", "erase_boxes"]


def _norm_tensors(pp: Preprocess, device, dtype=torch.float32):
    c = pp.channels
    mean = list(pp.mean)[:c] if len(pp.mean) >= c else [pp.mean[0]] * c
    std = list(pp.std)[:c] if len(pp.std) >= c else [pp.std[0]] * c
    return (torch.tensor(mean, device=device, dtype=dtype).view(1, c, 1, 1),
            torch.tensor(std, device=device, dtype=dtype).view(1, c, 1, 1))


def _affine_grid(theta: torch.Tensor, out: int) -> torch.Tensor:
    """``F.affine_grid(theta, [B, C, out, out], align_corners=False)`` by broadcasting.

    Same result; measured ~30x faster on CPU here (the library version goes through a batched
    matmul that is slow for these thin shapes).
    """
    lin = (torch.arange(out, device=theta.device, dtype=theta.dtype) * 2 + 1) / out - 1  # pixel centres
    xs, ys = lin.view(1, 1, out), lin.view(1, out, 1)
    t = theta.view(-1, 6, 1, 1)
    gx = t[:, 0] * xs + t[:, 1] * ys + t[:, 2]
    gy = t[:, 3] * xs + t[:, 4] * ys + t[:, 5]
    return torch.stack([gx, gy], dim=-1)


def erase_boxes(x: torch.Tensor, p: float) -> torch.Tensor:
    """``RandomErasing`` for a normalised batch: with probability ``p`` per image, one box set to 0 (the mean).

    Box area ~ U(2 %, 33 %) of the image, log aspect ~ U(log 0.3, log 1/0.3), as torchvision; one mask
    for the whole batch, no per-image Python.
    """
    b, _, hh, ww = x.shape
    hit = torch.rand(b, device=x.device) < p
    if not bool(hit.any()):
        return x
    area = torch.empty(b, device=x.device).uniform_(0.02, 0.33) * hh * ww
    logr = torch.empty(b, device=x.device).uniform_(math.log(0.3), math.log(1 / 0.3))
    eh = torch.sqrt(area * torch.exp(logr)).clamp(1, hh)
    ew = torch.sqrt(area / torch.exp(logr)).clamp(1, ww)
    y0 = torch.rand(b, device=x.device) * (hh - eh)
    x0 = torch.rand(b, device=x.device) * (ww - ew)
    ys = torch.arange(hh, device=x.device).view(1, hh, 1)
    xs = torch.arange(ww, device=x.device).view(1, 1, ww)
    box = ((ys >= y0.view(b, 1, 1)) & (ys < (y0 + eh).view(b, 1, 1)) &
           (xs >= x0.view(b, 1, 1)) & (xs < (x0 + ew).view(b, 1, 1)) & hit.view(b, 1, 1))
    return x.masked_fill(box.unsqueeze(1), 0.0)


class BatchEval:
    """Eval preprocessing for a uint8 batch: centre crop, scale to [0, 1], normalise.

    Uses the same ``transforms.v2`` ops as the per-image path, applied to the batch, so results
    are identical to :func:`~nextclass.data.transforms.eval_transform` image by image.
    """

    def __init__(self, pp: Preprocess):
        from nextclass.data.transforms import eval_transform

        self.tf = eval_transform(pp)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.tf(x)


class BatchAugment:
    """Random resized crop + rotation + flips + brightness/contrast + erasing, for a whole batch.

    Args:
        pp: the preprocessing (output size ``pp.crop``, mean/std).
        aug: the augmentation knobs (``auto`` RandAugment/TrivialAugment is not batched: use the
            per-sample path for it).

    Example:
        >>> aug = BatchAugment(Preprocess(size=32, crop=28, channels=3), Augment())
        >>> aug(torch.zeros(4, 3, 32, 32, dtype=torch.uint8)).shape
        torch.Size([4, 3, 28, 28])
    """

    def __init__(self, pp: Preprocess, aug: Augment):
        if aug.auto != "none":
            raise ValueError("BatchAugment does not implement RandAugment/TrivialAugment; use train_transform")
        self.pp, self.aug = pp, aug

    def _theta(self, b: int, device) -> torch.Tensor:
        a = self.aug
        lo, hi = float(a.scale[0]), float(a.scale[1])
        area = torch.empty(b, device=device).uniform_(lo, hi)
        logr = torch.empty(b, device=device).uniform_(math.log(3 / 4), math.log(4 / 3))
        ratio = torch.exp(logr)
        w = torch.sqrt(area * ratio)  # fraction of the source width/height kept
        h = torch.sqrt(area / ratio)
        # an aspect ratio that does not fit keeps the area on the other side (scale=(1, 1) = whole image)
        w, h = torch.where(w > 1, 1.0, torch.where(h > 1, area, w)), torch.where(h > 1, 1.0, torch.where(w > 1, area, h))
        cx = (torch.rand(b, device=device) * 2 - 1) * (1 - w)
        cy = (torch.rand(b, device=device) * 2 - 1) * (1 - h)
        if a.translate:  # a shift of up to `translate` output pixels (grid units: 2 / side)
            cx = cx + (torch.rand(b, device=device) * 2 - 1) * (2 * a.translate / self.pp.crop)
            cy = cy + (torch.rand(b, device=device) * 2 - 1) * (2 * a.translate / self.pp.crop)
        ang = (torch.rand(b, device=device) * 2 - 1) * math.radians(a.rotation)
        cos, sin = torch.cos(ang), torch.sin(ang)
        fx = torch.ones(b, device=device)
        fy = torch.ones(b, device=device)
        if a.hflip:
            fx = torch.where(torch.rand(b, device=device) < 0.5, -fx, fx)
        if a.vflip:
            fy = torch.where(torch.rand(b, device=device) < 0.5, -fy, fy)
        theta = torch.stack([
            torch.stack([w * cos * fx, -h * sin * fy, cx], 1),
            torch.stack([w * sin * fx, h * cos * fy, cy], 1),
        ], 1)
        return theta

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.aug, x.shape[0]
        if a.brightness:
            x = x * torch.empty(b, 1, 1, 1, device=x.device).uniform_(1 - a.brightness, 1 + a.brightness)
        if a.contrast:
            gray = x.mean(dim=(1, 2, 3), keepdim=True) if x.shape[1] == 1 else \
                (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).mean(dim=(1, 2)).view(b, 1, 1, 1)
            c = torch.empty(b, 1, 1, 1, device=x.device).uniform_(1 - a.contrast, 1 + a.contrast)
            x = (x - gray) * c + gray
        return x.clamp_(0, 1) if (a.brightness or a.contrast) else x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, S, S) → augmented, normalised float (B, C, crop, crop), on ``x.device``."""
        b, c = x.shape[0], x.shape[1]
        xf = x.float().div_(255.0)
        out = self.pp.crop
        theta = self._theta(b, x.device)
        grid = _affine_grid(theta, out)
        xf = F.grid_sample(xf, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        xf = self._jitter(xf)
        mean, std = _norm_tensors(self.pp, x.device)
        xf = (xf - mean) / std
        if self.aug.erasing > 0:
            xf = erase_boxes(xf, self.aug.erasing)
        return xf


class BatchTranslate:
    """Random horizontal flip, a random shift of up to ``aug.translate`` pixels and (``aug.erasing``) a random
    erased box, for a whole batch.

    The small-image recipe's augmentation (as in the fast CIFAR-10 trainers): no resampling, so the
    image keeps every pixel sharp; the border is filled by reflection. The shift is one gather over a
    padded batch (no per-image Python), so it costs a few percent of a small model's step.

    Example:
        >>> t = BatchTranslate(Preprocess(size=28, crop=28, channels=1), Augment(translate=2))
        >>> t(torch.zeros(4, 1, 28, 28, dtype=torch.uint8)).shape
        torch.Size([4, 1, 28, 28])
    """

    def __init__(self, pp: Preprocess, aug: Augment):
        self.pp, self.aug, self.eval = pp, aug, BatchEval(pp)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        xf = self.eval(x)  # centre crop + normalise, as in evaluation
        b, _, h, w = xf.shape
        dev = xf.device
        if self.aug.hflip:
            flip = torch.rand(b, device=dev) < 0.5
            xf = torch.where(flip.view(b, 1, 1, 1), xf.flip(3), xf)
        p = int(self.aug.translate)
        if p > 0:
            padded = F.pad(xf, (p, p, p, p), mode="reflect" if p < min(h, w) else "replicate")
            dy = torch.randint(0, 2 * p + 1, (b,), device=dev)
            dx = torch.randint(0, 2 * p + 1, (b,), device=dev)
            rows = (dy.view(b, 1) + torch.arange(h, device=dev)).view(b, 1, h, 1)
            cols = (dx.view(b, 1) + torch.arange(w, device=dev)).view(b, 1, 1, w)
            idx = torch.arange(b, device=dev).view(b, 1, 1, 1)
            ch = torch.arange(xf.shape[1], device=dev).view(1, -1, 1, 1)
            xf = padded[idx, ch, rows, cols]
        if self.aug.erasing > 0:  # cutout, for long schedules
            xf = erase_boxes(xf, self.aug.erasing)
        return xf


def batch_augment(pp: Preprocess, aug: Augment):
    """The batched augmentation for ``aug``: shift-and-flip when that is all it asks, else the affine warp."""
    plain = aug.scale[0] >= 1.0 and not aug.rotation and not aug.vflip and not (aug.brightness or aug.contrast)
    if aug.translate and plain:
        return BatchTranslate(pp, aug)
    return BatchAugment(pp, aug)
