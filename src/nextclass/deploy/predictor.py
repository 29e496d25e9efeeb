"""``nextclass.load(model).predict(images)``: inference from a bundle, exactly as evaluated.

Inputs may be paths, PIL images, numpy arrays (HxW or HxWxC, uint8) or raw bytes. Unreadable
inputs do not stop a batch: their result carries ``error`` with the reason.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from nextclass.data.decode import DecodeError, open_image
from nextclass.data.transforms import Preprocess, image_to_tensor
from nextclass.metrics.classification import softmax

__all__ = ["Predictor", "Prediction"]


@dataclass
class Prediction:
    source: str
    label: str | None = None
    index: int | None = None
    probability: float | None = None
    topk: list[tuple[str, float]] | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        d = {"source": self.source, "label": self.label, "index": self.index, "probability": self.probability,
             "topk": [{"label": l, "probability": p} for l, p in (self.topk or [])]}
        if self.error:
            d["error"] = self.error
        return d


def _name(x: Any, i: int) -> str:
    if isinstance(x, (str, os.PathLike)):
        return str(x)
    return f"<{type(x).__name__} #{i}>"


class Predictor:
    """A loaded bundle ready to predict. Use :func:`load` to make one.

    Attributes:
        classes: class names, in the model's output order.
        preprocess: the bundle's eval preprocessing.
        temperature: calibration temperature applied to logits (1.0 = uncalibrated).
    """

    def __init__(self, model: torch.nn.Module, meta: dict, device: str = "cpu", path: str | None = None):
        self.model = model.to(device).eval()
        self.meta = meta
        self.device = torch.device(device)
        self.classes: list[str] = list(meta["classes"])
        self.preprocess = Preprocess.from_dict(meta["preprocess"])
        self.temperature = float(meta.get("temperature", 1.0))
        self.path = path
        self.backend = "torch"

    # --- inputs ---------------------------------------------------------------------------------
    def to_tensor(self, x: Any) -> torch.Tensor:
        """One input → normalised CxHxW tensor (raises DecodeError for unusable input)."""
        from PIL import Image

        ch = self.preprocess.channels
        if isinstance(x, np.ndarray):
            a = x
            if a.dtype != np.uint8:
                a = np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
            if a.ndim == 3 and a.shape[2] == 1:
                a = a[:, :, 0]
            if a.ndim not in (2, 3):
                raise DecodeError(f"array of shape {x.shape} is not an image (HxW or HxWxC)")
            x = Image.fromarray(a)
        img = open_image(x, ch)
        return image_to_tensor(img, self.preprocess)

    def _safe_tensor(self, x: Any) -> tuple[torch.Tensor | None, str | None]:
        try:
            return self.to_tensor(x), None
        except DecodeError as e:
            return None, str(e)
        except Exception as e:  # one bad input never stops the others
            return None, f"cannot use input: {type(e).__name__}: {e}"

    # --- outputs --------------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> np.ndarray:
        return self.model(batch.to(self.device)).float().cpu().numpy()

    def predict_proba(self, batch: torch.Tensor, tta: bool = False) -> np.ndarray:
        """Calibrated class probabilities for a preprocessed batch (NxCxHxW).

        With ``tta``, logits are averaged over the bundle's TTA views (flip / multi-crop, those the
        model was trained with; see :mod:`nextclass.metrics.tta`) before the temperature.
        """
        if tta:
            from nextclass.metrics.tta import tta_logits, views_for

            logits = tta_logits(self.logits, batch, views_for(self.meta))
        else:
            logits = self.logits(batch)
        return softmax(logits, self.temperature)

    def predict(self, images: Any | Sequence[Any], topk: int = 5, batch_size: int = 32, tta: bool = False) -> list[Prediction]:
        """Predict one input or a list of inputs.

        Example:
            >>> p = load("runs/digits")            # doctest: +SKIP
            >>> p.predict(["a.png"])[0].label      # doctest: +SKIP
            '7'
        """
        if isinstance(images, (str, os.PathLike, bytes, np.ndarray)) or not isinstance(images, Iterable):
            images = [images]
        images = list(images)
        results: list[Prediction] = [Prediction(_name(x, i)) for i, x in enumerate(images)]
        k = max(1, min(topk, len(self.classes)))
        chunks = [range(a, min(a + batch_size, len(images))) for a in range(0, len(images), batch_size)]
        # Decoding and resizing run in threads (PIL releases the GIL), one batch ahead of the model.
        with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as ex:
            pending = [ex.map(self._safe_tensor, [images[i] for i in chunks[0]])] if chunks else []
            for c, chunk in enumerate(chunks):
                done = list(pending.pop(0))
                if c + 1 < len(chunks):
                    pending.append(ex.map(self._safe_tensor, [images[i] for i in chunks[c + 1]]))
                idx, tensors = [], []
                for i, (t, err) in zip(chunk, done):
                    if err is not None:
                        results[i].error = err
                    else:
                        idx.append(i)
                        tensors.append(t)
                if not tensors:
                    continue
                probs = self.predict_proba(torch.stack(tensors), tta=tta)
                for i, pr in zip(idx, probs):
                    order = np.argsort(-pr)[:k]
                    results[i].index = int(order[0])
                    results[i].label = self.classes[order[0]]
                    results[i].probability = float(pr[order[0]])
                    results[i].topk = [(self.classes[j], float(pr[j])) for j in order]
        return results
