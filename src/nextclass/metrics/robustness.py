"""Robustness: accuracy under blur, noise, JPEG, brightness and contrast at three severities.

The "performance across image qualities" table. Corruptions are applied to the decoded square
uint8 images (what the cache holds, before the eval crop and normalisation), so they hit the model
exactly like a degraded photo would. Severities follow the spirit of ImageNet-C (Hendrycks &
Dietterich 2019), with blur scaled to the image side so that 28 px and 224 px images are degraded
comparably:

=========== ========================================= ======================
corruption  parameter                                  severity 1 / 2 / 3
=========== ========================================= ======================
blur        Gaussian sigma, as a fraction of the side  0.008 / 0.016 / 0.03
noise       Gaussian std on the [0, 1] scale           0.05 / 0.10 / 0.20
jpeg        JPEG quality                               40 / 20 / 10
brightness  added to every pixel ([0, 1] scale)        0.15 / 0.30 / 0.45
contrast    factor towards the image mean              0.6 / 0.4 / 0.2
=========== ========================================= ======================

The cost is capped: at most ``max_images`` images (a seeded random subset of the split), further
reduced (to no fewer than 20) so that the clean and 15 corrupted passes fit in ``time_budget_s``
seconds, judged from a first batch of 32. The block says how many images it used.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageFilter

__all__ = ["CORRUPTIONS", "ROBUSTNESS_VERSION", "RobustnessOptions", "corrupt", "robustness", "model_logits_fn"]

#: bump when the corruptions, the sampling or the returned block change: it is part of cached results' keys
ROBUSTNESS_VERSION = 1

#: name -> (description of the parameter, values for severities 1..3)
CORRUPTIONS: dict[str, tuple[str, tuple[float, ...]]] = {
    "blur": ("Gaussian blur sigma (fraction of image side)", (0.008, 0.016, 0.03)),
    "noise": ("Gaussian noise std (0-1 scale)", (0.05, 0.10, 0.20)),
    "jpeg": ("JPEG quality", (40, 20, 10)),
    "brightness": ("brightness shift (0-1 scale)", (0.15, 0.30, 0.45)),
    "contrast": ("contrast factor", (0.6, 0.4, 0.2)),
}


@dataclass(frozen=True, kw_only=True)
class RobustnessOptions:
    """How much of a split :func:`robustness` measures, and how: the sample, the time budget, the batch size."""

    split: str = "test"  # the split's name, written into the block
    max_images: int = 500  # cap on the images used (a seeded random subset)
    time_budget_s: float = 20.0  # the corrupted passes are cut down to fit in about this many seconds
    seed: int = 0  # the subset and the noise
    batch_size: int = 128


def _pil(a: np.ndarray) -> Image.Image:
    return Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)


def _back(img: Image.Image, channels: int) -> np.ndarray:
    a = np.asarray(img, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a[:, :, :channels]


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """Corrupt a batch of uint8 ``NxSxSxC`` images; severity 1 (mild) to 3 (strong).

    Example:
        >>> x = np.full((2, 16, 16, 1), 100, np.uint8)
        >>> int(corrupt(x, "brightness", 1)[0, 0, 0, 0])
        138
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    if not 1 <= severity <= len(CORRUPTIONS[name][1]):
        raise ValueError(f"severity must be 1..{len(CORRUPTIONS[name][1])}, got {severity}")
    level = CORRUPTIONS[name][1][severity - 1]
    x = np.asarray(images)
    ch = x.shape[3]
    if name == "blur":
        radius = level * x.shape[1]
        return np.stack([_back(_pil(a).filter(ImageFilter.GaussianBlur(radius)), ch) for a in x])
    if name == "jpeg":
        out = []
        for a in x:
            buf = io.BytesIO()
            _pil(a).save(buf, format="JPEG", quality=int(level))
            out.append(_back(Image.open(io.BytesIO(buf.getvalue())), ch))
        return np.stack(out)
    f = x.astype(np.float32) / 255.0
    if name == "noise":
        f = f + np.random.default_rng(seed).normal(0.0, level, f.shape).astype(np.float32)
    elif name == "brightness":
        f = f + level
    else:  # contrast: pull every pixel towards its image's mean
        mean = f.mean(axis=(1, 2, 3), keepdims=True)
        f = (f - mean) * level + mean
    return np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8)


def model_logits_fn(model: torch.nn.Module, device: torch.device | str = "cpu") -> Callable[[torch.Tensor], np.ndarray]:
    """``batch -> logits`` for a torch model (eval mode, no grad)."""
    device = torch.device(device)

    @torch.no_grad()
    def fn(x: torch.Tensor) -> np.ndarray:
        model.eval()
        return model(x.to(device)).float().cpu().numpy()

    return fn


def _accuracy(logits_fn, images: np.ndarray, labels: np.ndarray, transform, batch_size: int) -> float:
    correct = 0
    for s in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[s:s + batch_size])).permute(0, 3, 1, 2)
        correct += int((np.asarray(logits_fn(transform(x))).argmax(1) == labels[s:s + batch_size]).sum())
    return correct / max(len(images), 1)


def robustness(logits_fn: Callable[[torch.Tensor], np.ndarray], images: np.ndarray, labels: np.ndarray, preprocess,
               opts: RobustnessOptions = RobustnessOptions(), *, rows: np.ndarray | None = None) -> dict:
    """Accuracy of a model on clean and corrupted copies of ``images`` (uint8 ``NxSxSxC`` at the cache size).

    Args:
        logits_fn: normalised batch -> logits (e.g. :func:`model_logits_fn`, or an ONNX session wrapper).
        images: decoded square images with their ``labels``; or, with ``rows``, the whole decoded array
            (``DecodedImages.array``, possibly memory-mapped) of which only the sampled ``rows`` are read.
        preprocess: the bundle's :class:`~nextclass.data.transforms.Preprocess` (eval crop + normalisation).
        opts: the split's name, the cap on images, the time budget, the seed and the batch size.

    Returns:
        ``{"split", "n", "clean_accuracy", "corruptions": {name: {"parameter", "levels", "accuracy"}},
        "mean_corrupted_accuracy", "seconds"}``.

    Example:
        >>> r = robustness(model_logits_fn(model), imgs, y, pp, RobustnessOptions(max_images=200))  # doctest: +SKIP
        >>> r["corruptions"]["blur"]["accuracy"]  # doctest: +SKIP
        [0.91, 0.84, 0.62]
    """
    from nextclass.data.transforms import eval_transform

    t0 = time.time()
    seed, batch_size = opts.seed, opts.batch_size
    labels = np.asarray(labels, dtype=int)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))[:opts.max_images]
    tf = eval_transform(preprocess)
    passes = sum(len(v[1]) for v in CORRUPTIONS.values())
    t1 = time.time()
    pick = (lambda i: images[np.asarray(rows)[i]]) if rows is not None else (lambda i: images[i])  # noqa: E731
    probe = np.sort(order[:32])  # cost per image from a small first batch (a big model on a CPU: ~0.1 s each)
    _accuracy(logits_fn, pick(probe), labels[probe], tf, batch_size)
    per_image = (time.time() - t1) / max(len(probe), 1)
    # corruption itself (JPEG, blur) costs about as much as a small model's forward: count it twice
    affordable = int(opts.time_budget_s / max(2 * (passes + 1) * per_image, 1e-9))
    if affordable < len(order):
        order = order[:max(affordable, min(len(order), 20))]
    idx = np.sort(order)
    x, y = pick(idx), labels[idx]
    clean = _accuracy(logits_fn, x, y, tf, batch_size)
    table = {}
    for name, (what, levels) in CORRUPTIONS.items():
        accs = [_accuracy(logits_fn, corrupt(x, name, s + 1, seed), y, tf, batch_size) for s in range(len(levels))]
        table[name] = {"parameter": what, "levels": list(levels), "accuracy": accs}
    all_acc = [a for v in table.values() for a in v["accuracy"]]
    return {"split": opts.split, "n": int(len(idx)), "of": int(len(labels)), "clean_accuracy": clean, "severities": 3,
            "corruptions": table, "mean_corrupted_accuracy": float(np.mean(all_acc)) if all_acc else float("nan"),
            "seconds": round(time.time() - t0, 2)}
