"""``nextclass.load(model).predict(images)``: inference from a bundle, exactly as evaluated.

Inputs may be paths, PIL images, numpy arrays (HxW or HxWxC, uint8) or raw bytes. Unreadable
inputs do not stop a batch: their result carries ``error`` with the reason.

A single-label bundle answers one class (``label``, ``probability``, ``topk``); a multi-label bundle (``task:
multi-label`` in ``model.json``, :mod:`nextclass.deploy.multilabel`) answers the ``labels`` at or above their
thresholds and every label's calibrated probability (``probabilities``), and no single ``label``.
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
from nextclass.deploy.multilabel import MULTI_LABEL, SINGLE_LABEL, LabelCalibration, bundle_task, single_label_only
from nextclass.metrics.classification import softmax
from nextclass.metrics.conformal import prediction_sets, threshold_for, tie_breaks
from nextclass.metrics.selective import score_from_probs, threshold_from_curve

__all__ = ["Predictor", "Prediction"]


@dataclass
class Prediction:
    source: str
    label: str | None = None
    index: int | None = None
    probability: float | None = None
    topk: list[tuple[str, float]] | None = None
    error: str | None = None
    abstained: bool = False  # the score is below the abstain threshold: ``label`` is only the best guess
    neighbors: list | None = None  # nextclass.neighbors.Neighbor list, nearest first (only when asked for)
    #: Farther from every training image than 95% of the validation images were: maybe a class or a kind of
    #: image the model never saw. None: not checked (the bundle has no threshold, or ``unfamiliar=False``).
    unfamiliar: bool | None = None
    #: The prediction set: the classes (most probable first) that hold the true class with the promised coverage
    #: (split conformal, fitted on validation); may be empty when the model is more accurate than the coverage
    #: asks for. None: no set asked for (the bundle was trained without ``coverage`` and none was given).
    set: list[str] | None = None
    task: str = SINGLE_LABEL  # multi-label: ``labels`` and ``probabilities`` answer; label/index/topk stay None
    #: Multi-label: the labels at or above their threshold, most probable first, with their calibrated probability
    #: (empty: no label). None for a single-label bundle and for an unreadable input.
    labels: list[tuple[str, float]] | None = None
    #: Multi-label: every label's calibrated probability (``sigmoid(z / T_label)``), in the bundle's label order.
    probabilities: dict[str, float] | None = None

    def to_dict(self) -> dict:
        """JSON-ready. Single-label: ``source, label, index, probability, abstained, unfamiliar, topk`` (+ ``set``,
        ``neighbors``, ``error``). Multi-label: ``source, task, labels: [{label, probability}], probabilities:
        {label: p}, unfamiliar`` (+ ``neighbors``, ``error``; ``labels``/``probabilities`` None when unreadable)."""
        if self.task == MULTI_LABEL:
            return self._multilabel_dict()
        d = {"source": self.source, "label": self.label, "index": self.index, "probability": self.probability,
             "abstained": self.abstained, "unfamiliar": self.unfamiliar,
             "topk": [{"label": l, "probability": p} for l, p in (self.topk or [])]}
        if self.set is not None:
            d["set"] = list(self.set)
        if self.neighbors is not None:
            d["neighbors"] = [n.to_dict() for n in self.neighbors]
        if self.error:
            d["error"] = self.error
        return d

    def _multilabel_dict(self) -> dict:
        d = {"source": self.source, "task": self.task,
             "labels": None if self.labels is None else [{"label": l, "probability": p} for l, p in self.labels],
             "probabilities": None if self.probabilities is None else dict(self.probabilities),
             "unfamiliar": self.unfamiliar}
        if self.neighbors is not None:
            d["neighbors"] = [n.to_dict() for n in self.neighbors]
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
        classes: class names (label names of a multi-label bundle), in the model's output order.
        preprocess: the bundle's eval preprocessing.
        temperature: calibration temperature applied to logits (1.0 = uncalibrated; single-label).
        task: ``single-label`` or ``multi-label`` (``model.json`` -> ``task``).
        label_calibration: a multi-label bundle's per-label temperatures and thresholds
            (:class:`~nextclass.deploy.multilabel.LabelCalibration`); None for single-label.
    """

    def __init__(self, model: torch.nn.Module, meta: dict, device: str = "cpu", path: str | None = None):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.path = path
        self.backend = "torch"
        self._read_meta(meta)

    def _read_meta(self, meta: dict) -> None:
        """What every backend takes from ``model.json``: classes, preprocessing, task and calibration."""
        self.meta = meta
        self.classes: list[str] = list(meta["classes"])
        self.preprocess = Preprocess.from_dict(meta["preprocess"])
        self.temperature = float(meta.get("temperature", 1.0))
        self.task = bundle_task(meta)
        self.label_calibration = LabelCalibration.from_meta(meta) if self.task == MULTI_LABEL else None

    @property
    def multilabel(self) -> bool:
        """True for a multi-label bundle (one sigmoid output per label)."""
        return self.label_calibration is not None

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

    def predict_proba(self, batch: torch.Tensor, tta: bool | None = None) -> np.ndarray:
        """Calibrated class probabilities for a preprocessed batch (NxCxHxW): softmax of ``logits / temperature``,
        or for a multi-label bundle each label's ``sigmoid(logit / T_label)`` (rows need not sum to 1).

        With ``tta``, logits are averaged over the bundle's TTA views (flip / multi-crop / shifts, those
        the model was trained with; see :mod:`nextclass.metrics.tta`) before the temperature. ``None``:
        as the bundle's numbers were measured (``model.json`` -> ``tta.default``; off for older bundles).
        """
        if tta is None:
            tta = bool((self.meta.get("tta") or {}).get("default", False))
        if tta:
            from nextclass.metrics.tta import tta_logits, views_for

            logits = tta_logits(self.logits, batch, views_for(self.meta))
        else:
            logits = self.logits(batch)
        if self.label_calibration is not None:
            return self.label_calibration.probs(logits)
        return softmax(logits, self.temperature)

    # --- trust: abstain and nearest training images ----------------------------------------------
    def abstain_threshold(self, target_accuracy: float | None = None) -> float | None:
        """The score below which predictions abstain: the bundle's (chosen at training with ``target_accuracy``),
        or one for ``target_accuracy`` from the validation curve the bundle keeps. None: never abstain.

        Raises:
            ValueError: ``target_accuracy`` is given but the bundle has no validation curve (written before
                nextclass kept one, or trained without a validation split), or is multi-label (never abstains).
        """
        if self.multilabel:
            if target_accuracy is not None:
                raise single_label_only("abstain thresholds (target accuracy)")
            return None
        entry = self.meta.get("abstain") or {}
        if target_accuracy is None:
            return entry.get("threshold")
        if not 0 < target_accuracy <= 1:
            raise ValueError(f"target_accuracy {target_accuracy}: give a number in (0, 1], e.g. 0.99")
        if not entry.get("curve"):
            raise ValueError(f"{self.path or 'this bundle'} keeps no validation curve to choose a threshold from "
                             "(trained before nextclass 'abstain' or without a validation split): retrain it")
        return threshold_from_curve(entry["curve"], target_accuracy)[0]

    def abstains(self, probs: np.ndarray, threshold: float | None) -> np.ndarray:
        """True for each row of calibrated probabilities whose abstain score is below ``threshold``."""
        if threshold is None:
            return np.zeros(len(probs), bool)
        return score_from_probs(probs, (self.meta.get("abstain") or {}).get("score", "probability")) < threshold

    def set_threshold(self, coverage: float | None = None) -> float | None:
        """The prediction-set threshold: the bundle's (fitted at training with ``coverage``), or one for ``coverage``
        from the validation scores the bundle keeps (split conformal, :mod:`nextclass.metrics.conformal`). None: no
        sets; ``inf``: validation is too small for that coverage (every set is every class).

        Raises:
            ValueError: a ``coverage`` outside (0, 1), a bundle that keeps no validation scores, or a ``coverage``
                for a multi-label bundle (no sets: each label has its own threshold).
        """
        if self.multilabel:
            if coverage is not None:
                raise single_label_only("prediction sets")
            return None
        entry = self.meta.get("sets") or {}
        if coverage is None:
            return threshold_for(entry) if entry.get("coverage") is not None else None
        if not entry.get("val_scores"):
            threshold_for({"val_scores": [0.0]}, coverage)  # a bad value is named first
            raise ValueError(f"coverage: {self.path or 'this bundle'} keeps no validation scores to fit a set "
                             "threshold on (trained before nextclass kept them, or without a validation split): "
                             "retrain it")
        return threshold_for(entry, coverage)

    def sets(self, probs: np.ndarray, threshold: float | None, u: np.ndarray | None = None) -> list[list[int] | None]:
        """Each row's prediction set as class indices, most probable first (None for every row without a threshold).

        ``u``: the rows' tie-breaks for a randomised entry (None: the first ``len(probs)`` of the bundle's seeded
        stream, :func:`nextclass.metrics.conformal.tie_breaks`, as one call of ``predict`` draws them).
        """
        if threshold is None:
            return [None] * len(probs)
        e = self.meta.get("sets") or {}
        u = tie_breaks(e, len(probs)) if u is None else u
        mask = prediction_sets(probs, threshold, penalty=e.get("penalty", 0.0), k_reg=e.get("k_reg", 1), u=u)
        return [[int(j) for j in np.argsort(-pr, kind="stable") if m[j]] for pr, m in zip(probs, mask)]

    def unfamiliar_distance(self) -> float | None:
        """The nearest-training-image distance above which an image is ``unfamiliar``, chosen on validation at
        training (:func:`nextclass.metrics.selective.distance_threshold`). None: the bundle has no neighbour
        index or was written before nextclass kept this threshold; nothing is flagged then.
        """
        entry = (self.meta.get("neighbors") or {}).get("unfamiliar") or {}
        d = entry.get("distance")
        return None if d is None else float(d)

    def nearest_distance(self, batch: torch.Tensor) -> np.ndarray:
        """Distance of each image of a preprocessed batch to its nearest training image in the bundle's index."""
        return self.neighbor_index().search(self.embed(batch), 1)[0][:, 0]

    def neighbor_index(self):
        """The bundle's :class:`~nextclass.neighbors.NeighborIndex` (loaded once); ValueError when it has none."""
        from nextclass.neighbors import NeighborIndex

        if getattr(self, "_index", None) is None:
            self._index = NeighborIndex.load(self.path) if self.path else None
            if self._index is None:
                raise ValueError(f"{self.path or 'this model'} has no nearest-neighbour index (neighbors.safetensors): "
                                 "it was trained before nextclass kept one, or with neighbor_index=0")
        return self._index

    @torch.no_grad()
    def embed(self, batch: torch.Tensor) -> np.ndarray:
        """L2-normalised trunk features of a preprocessed batch (the vectors the neighbour index holds).

        The ONNX backends have no PyTorch module: the bundle's weights are loaded once for this.
        """
        from nextclass.neighbors import Embedder

        model = self.model
        if model is None:
            if getattr(self, "_torch", None) is None:
                from nextclass.bundle import load_model

                self._torch = load_model(self.path)[0]
            model = self._torch
        return Embedder(model).eval()(batch.to(next(model.parameters()).device)).cpu().numpy()

    def find_neighbors(self, batch: torch.Tensor, k: int) -> list[list]:
        """The ``k`` nearest training images (:class:`~nextclass.neighbors.Neighbor`) of each image in ``batch``."""
        index = self.neighbor_index()
        return index.neighbors(self.embed(batch), k, self.classes)

    def _fill(self, results: list[Prediction], idx: list[int], probs: np.ndarray, k: int, threshold,
              sets: tuple[float | None, np.ndarray | None] = (None, None)) -> None:
        """Label, probability, top-k, ``abstained`` and the set of each row (``sets``: threshold and the rows'
        tie-breaks). A multi-label bundle fills ``labels`` and ``probabilities`` instead."""
        if self.label_calibration is not None:
            return self._fill_labels(results, idx, probs)
        abstained = self.abstains(probs, threshold)
        for i, pr, ab, st in zip(idx, probs, abstained, self.sets(probs, *sets)):
            order = np.argsort(-pr)[:k]
            r = results[i]
            r.index, r.label, r.probability = int(order[0]), self.classes[order[0]], float(pr[order[0]])
            r.topk = [(self.classes[j], float(pr[j])) for j in order]
            r.abstained = bool(ab)
            r.set = None if st is None else [self.classes[j] for j in st]

    def label_answers(self, probs: np.ndarray) -> list[dict]:
        """Multi-label, per row of calibrated probabilities: ``{"labels": [{"label", "probability"}] (at or above
        their thresholds, most probable first), "probabilities": {label: p}}`` (rounded to 6 decimals)."""
        answers = self.label_calibration.answers(probs, self.classes)
        return [{"labels": a, "probabilities": {c: round(float(p), 6) for c, p in zip(self.classes, pr)}}
                for a, pr in zip(answers, probs)]

    def _fill_labels(self, results: list[Prediction], idx: list[int], probs: np.ndarray) -> None:
        """Multi-label: the labels at or above their thresholds (most probable first) and every probability."""
        for i, answer in zip(idx, self.label_answers(probs)):
            results[i].labels = [(a["label"], a["probability"]) for a in answer["labels"]]
            results[i].probabilities = answer["probabilities"]

    def _check_unfamiliar(self, unfamiliar: bool | None) -> float | None:
        """The distance threshold ``predict`` flags with (None: no check); ValueError when asked for but absent."""
        th = self.unfamiliar_distance() if unfamiliar is not False else None
        if unfamiliar is None and th is not None:
            try:
                self.neighbor_index()
            except ValueError:  # the threshold without its index (a hand-copied bundle): no check by default
                th = None
        if unfamiliar and th is None:
            raise ValueError(f"{self.path or 'this bundle'} keeps no 'unfamiliar' distance threshold (no neighbour "
                             "index, no validation split, or trained before nextclass kept one): retrain it")
        return th

    def _trust(self, results: list[Prediction], idx: list[int], batch: torch.Tensor, neighbors: int,
               unfamiliar: float | None) -> None:
        """Neighbours (when asked for) and the ``unfamiliar`` flag (with a threshold) from one embedding pass."""
        if neighbors:
            nbs = self.find_neighbors(batch, neighbors)
            for i, nb in zip(idx, nbs):
                results[i].neighbors = nb
            dist = [nb[0].distance for nb in nbs]
        elif unfamiliar is not None:
            dist = self.nearest_distance(batch)
        else:
            return
        if unfamiliar is not None:
            for i, d in zip(idx, dist):
                results[i].unfamiliar = bool(d > unfamiliar)

    def _batches(self, images: list, batch_size: int, results: list[Prediction]):
        """Yield ``(indices, batch)`` of the usable inputs, ``batch_size`` at a time; an unusable input gets its
        ``error`` in ``results``. Decoding and resizing run in threads (PIL releases the GIL), one batch ahead of
        the model."""
        chunks = [range(a, min(a + batch_size, len(images))) for a in range(0, len(images), batch_size)]
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
                if tensors:
                    yield idx, torch.stack(tensors)

    def predict(self, images: Any | Sequence[Any], topk: int = 5, batch_size: int = 32, tta: bool | None = None,
                target_accuracy: float | None = None, neighbors: int = 0,
                unfamiliar: bool | None = None, coverage: float | None = None) -> list[Prediction]:
        """Predict one input or a list of inputs.

        A multi-label bundle answers each input's ``labels`` (those at or above their threshold, most probable
        first) and ``probabilities`` (every label's); ``topk`` does not apply, and ``target_accuracy`` and
        ``coverage`` are ValueErrors (single-label features).

        Args:
            target_accuracy: abstain (``Prediction.abstained``; the label stays as the best guess) below the
                threshold that reached this accuracy of the accepted predictions on validation. Default: the
                bundle's own threshold (set at training with ``--target-accuracy``), else never abstain.
            neighbors: also return this many nearest training images per input (``Prediction.neighbors``).
            unfamiliar: flag inputs farther from every training image than the bundle's threshold
                (``Prediction.unfamiliar``). None: when the bundle keeps one; True: require it; False: skip the
                check (it costs one more pass of the network's trunk per batch, unless ``neighbors`` is asked for).
            coverage: also return each input's prediction set (``Prediction.set``): the classes that hold the true
                class with this probability, by split conformal prediction on the validation scores the bundle
                keeps (randomised APS: the tie-breaks are the bundle's seeded stream in input order, so the same
                call gives the same sets). Default: the bundle's coverage (set at training with ``--coverage``),
                else no sets.

        Example:
            >>> p = load("runs/digits")            # doctest: +SKIP
            >>> p.predict(["a.png"])[0].label      # doctest: +SKIP
            '7'
            >>> p.predict(["a.png"], coverage=0.95)[0].set   # doctest: +SKIP
            ['7', '1']
            >>> load("runs/tags").predict(["b.png"])[0].labels   # doctest: +SKIP
            [('cat', 0.93), ('dog', 0.71)]
        """
        if isinstance(images, (str, os.PathLike, bytes, np.ndarray)) or not isinstance(images, Iterable):
            images = [images]
        images = list(images)
        results: list[Prediction] = [Prediction(_name(x, i), task=self.task) for i, x in enumerate(images)]
        k = max(1, min(topk, len(self.classes)))
        threshold = self.abstain_threshold(target_accuracy)
        set_threshold = self.set_threshold(coverage)
        ties = tie_breaks(self.meta.get("sets") or {}, len(images)) if set_threshold is not None else None
        far = self._check_unfamiliar(unfamiliar)
        if neighbors or far is not None:
            self.neighbor_index()  # fail before any work when the bundle has no index
        for idx, batch in self._batches(images, batch_size, results):
            self._fill(results, idx, self.predict_proba(batch, tta=tta), k, threshold,
                       (set_threshold, None if ties is None else ties[idx]))
            self._trust(results, idx, batch, neighbors, far)
        return results
