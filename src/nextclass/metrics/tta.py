"""Test-time augmentation: average the logits of a few views of each (preprocessed) image.

Views work on the model's normalised input batch (``N x C x H x W``), so the same code serves
``evaluate --tta``, ``predict --tta`` and any backend that maps a batch to logits (torch or ONNX
Runtime: pass its ``logits`` function to :func:`tta_logits`).

* ``identity`` - the plain eval view;
* ``hflip`` / ``vflip`` - mirrored;
* ``crop_c``, ``crop_tl``, ``crop_tr``, ``crop_bl``, ``crop_br`` - multi-crop: a ``ZOOM`` (87.5 %)
  crop at the centre or a corner, resized back to the input size (the classic 5-crop of
  Krizhevsky et al., taken inside the eval crop so the input size never changes).
* ``shift_l``, ``shift_r``, ``shift_u``, ``shift_d`` - the image moved by one pixel (reflected border),
  for models trained with ``augment: translate``; views compose with ``+`` (``hflip+shift_l``).

Only views that match what the model saw in training are used by default
(:func:`views_from_config`): no flip for a model trained without flips (digits, text), no crops
for a model trained without random-resized crops. The choice is stored in the bundle
(``model.json`` -> ``tta.views``). Logits are averaged (not probabilities) so that the bundle's
temperature applies to the TTA prediction exactly as to the plain one.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["VIEWS", "ZOOM", "make_view", "tta_logits", "views_from_config", "views_for", "tta_predict_logits",
           "TTAModel"]

#: Every view name :func:`make_view` understands.
VIEWS = ("identity", "hflip", "vflip", "crop_c", "crop_tl", "crop_tr", "crop_bl", "crop_br",
         "shift_l", "shift_r", "shift_u", "shift_d")
_SHIFTS = {"shift_l": (0, -1), "shift_r": (0, 1), "shift_u": (-1, 0), "shift_d": (1, 0)}  # (rows, cols) moved
#: Side of a multi-crop view as a fraction of the input side.
ZOOM = 0.875
_DEFAULT = ["identity", "hflip", "crop_c", "crop_tl", "crop_tr", "crop_bl", "crop_br"]


def make_view(batch: torch.Tensor, name: str, zoom: float = ZOOM) -> torch.Tensor:
    """One TTA view of a normalised ``NxCxHxW`` batch (same shape out).

    Example:
        >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> make_view(x, "hflip")[0, 0, 0].tolist()
        [3.0, 2.0, 1.0, 0.0]
        >>> make_view(x, "shift_r")[0, 0, 0].tolist()
        [1.0, 0.0, 1.0, 2.0]
    """
    if "+" in name:
        for part in name.split("+"):
            batch = make_view(batch, part, zoom)
        return batch
    if name in _SHIFTS:
        return _shift(batch, *_SHIFTS[name])
    if name == "identity":
        return batch
    if name == "hflip":
        return torch.flip(batch, dims=[3])
    if name == "vflip":
        return torch.flip(batch, dims=[2])
    if not name.startswith("crop_") or name not in VIEWS:
        raise ValueError(f"unknown TTA view {name!r}; choose from {', '.join(VIEWS)}")
    h, w = batch.shape[-2:]
    ch, cw = max(1, round(h * zoom)), max(1, round(w * zoom))
    where = name[5:]
    top = {"c": (h - ch) // 2, "tl": 0, "tr": 0, "bl": h - ch, "br": h - ch}[where]
    left = {"c": (w - cw) // 2, "tl": 0, "tr": w - cw, "bl": 0, "br": w - cw}[where]
    crop = batch[..., top:top + ch, left:left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


def _shift(batch: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move the image content by (dy, dx) pixels; the uncovered border is a reflection."""
    h, w = batch.shape[-2:]
    if min(h, w) < 2:
        return batch
    padded = F.pad(batch, (1, 1, 1, 1), mode="reflect")
    return padded[..., 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


def tta_logits(logits_fn: Callable[[torch.Tensor], np.ndarray], batch: torch.Tensor,
               views: Sequence[str] | None = None) -> np.ndarray:
    """Mean of ``logits_fn(view)`` over ``views`` (default: flip + 5 crops + identity).

    Example:
        >>> fn = lambda x: x.mean(dim=(2, 3)).numpy()
        >>> tta_logits(fn, torch.ones(2, 3, 8, 8), ["identity", "hflip"]).shape
        (2, 3)
    """
    views = list(views or _DEFAULT)
    total = None
    for v in views:
        out = np.asarray(logits_fn(make_view(batch, v)), dtype=np.float64)
        total = out if total is None else total + out
    return (total / len(views)).astype(np.float32)


def views_from_config(cfg) -> list[str]:
    """The TTA views that match a run's training augmentation (a ``TrainConfig`` or its dict).

    Example:
        >>> views_from_config({"augment": "standard", "hflip": False, "vflip": False, "scale_min": 0.75})
        ['identity', 'crop_c', 'crop_tl', 'crop_tr', 'crop_bl', 'crop_br']
    """
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    augmented = get("augment", "standard") != "none"
    views = ["identity"]
    if augmented and get("hflip", True):
        views.append("hflip")
    if augmented and get("vflip", False):
        views.append("vflip")
    if augmented and (get("scale_min", 1.0) or 1.0) < 1.0:
        views += ["crop_c", "crop_tl", "crop_tr", "crop_bl", "crop_br"]
    if get("augment", "standard") == "translate":  # one-pixel shifts, mirrored too when flips were trained
        views += [f"{f}shift_{d}" for f in ([""] + (["hflip+"] if "hflip" in views else [])) for d in "lr"]
    # NOTE: a model trained without augmentation gets only the identity view: TTA then changes nothing
    # (evaluate reports a gain of 0) rather than feeding it views it never saw.
    return views


def views_for(meta: dict) -> list[str]:
    """TTA views recorded in a bundle's ``model.json`` (older bundles: flip + 5 crops).

    Example:
        >>> views_for({"tta": {"views": ["identity", "hflip"]}})
        ['identity', 'hflip']
    """
    views = (meta.get("tta") or {}).get("views")
    return list(views) if views else list(_DEFAULT)


@torch.no_grad()
def tta_predict_logits(model: torch.nn.Module, loader, views: Sequence[str], device: torch.device | str = "cpu"
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`nextclass.engine.loop.predict_logits`, with the logits of each batch averaged over ``views``."""
    model.eval()
    device = torch.device(device)
    fn = lambda x: model(x.to(device)).float().cpu().numpy()  # noqa: E731
    outs, ys = [], []
    for x, y in loader:
        outs.append(tta_logits(fn, x, views))
        ys.append(np.asarray(y))
    k = outs[0].shape[1] if outs else 0
    return (np.concatenate(outs) if outs else np.zeros((0, k), np.float32),
            np.concatenate(ys) if ys else np.zeros(0, int))


class TTAModel(torch.nn.Module):
    """``model`` whose logits are the mean over ``views`` of each batch (for loops that call a module).

    Example:
        >>> m = TTAModel(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2)), ["identity", "hflip"])
        >>> m(torch.zeros(3, 1, 4, 4)).shape
        torch.Size([3, 2])
    """

    def __init__(self, model: torch.nn.Module, views: Sequence[str]):
        super().__init__()
        self.model, self.views = model, list(views)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(make_view(x, v)) for v in self.views]).mean(0)
