"""``OnnxPredictor``: the bundle's ONNX model behind the same surface as :class:`~nextclass.deploy.predictor.Predictor`.

Same inputs, same preprocessing (``Preprocess`` + ``image_to_tensor`` from ``model.json``), same
calibration (the temperature, or a multi-label bundle's per-label temperatures and thresholds), same
:class:`~nextclass.deploy.predictor.Prediction` outputs; only the logits come from an ONNX Runtime session
instead of PyTorch. ``nextclass.load(path, backend="onnx"|"auto")`` builds one.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from nextclass.deploy.predictor import Predictor
from nextclass.utils import log

__all__ = ["OnnxPredictor", "OnnxUnavailable"]


class OnnxUnavailable(FileNotFoundError):
    """The bundle has no usable ONNX model (never exported, or exported from other weights)."""


class OnnxPredictor(Predictor):
    """A bundle served by ONNX Runtime. Build it with :meth:`from_bundle`.

    Attributes:
        session: the ``onnxruntime.InferenceSession``.
        onnx_path: the ONNX file in use (``model.onnx`` or ``model.int8.onnx``).
        model: ``None`` (there is no PyTorch module; Grad-CAM needs the torch backend).
    """

    def __init__(self, session, meta: dict, path: str | None = None, onnx_path: str | None = None, int8: bool = False):
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.model = None
        self.device = torch.device("cpu")
        self._read_meta(meta)  # classes, preprocessing, task and calibration, as the torch predictor reads them
        self.path = path
        self.onnx_path = onnx_path
        self.backend = "onnx-int8" if int8 else "onnx"

    @classmethod
    def from_bundle(cls, path: str | os.PathLike, fallback_torch: bool = False, int8: bool = False,
                    threads: int | None = None, device: str = "cpu") -> Predictor:
        """Open ``model.onnx`` (or ``model.int8.onnx``) of a bundle.

        Args:
            path: a run directory or a bundle directory.
            fallback_torch: when the bundle has no ONNX model, or one exported from other weights,
                return the PyTorch :class:`Predictor` instead of raising (logged).
            int8: use the quantised model written by ``export --int8``.

        Raises:
            OnnxUnavailable: no usable ONNX file and ``fallback_torch`` is False.

        Example:
            >>> p = OnnxPredictor.from_bundle("runs/tiny")   # doctest: +SKIP
            >>> p.predict("a.png")[0].label                  # doctest: +SKIP
        """
        from nextclass.bundle import load_model, read_meta, resolve_bundle_dir
        from nextclass.deploy.onnx import INT8_NAME, ONNX_NAME, session
        from nextclass.utils import file_sha256

        folder = resolve_bundle_dir(path)
        meta = read_meta(folder)
        info = meta.get("onnx") or {}
        if int8:
            info = info.get("int8") or {}
        f = folder / (INT8_NAME if int8 else ONNX_NAME)
        problem = None
        if not f.is_file():
            problem = f"{folder} has no {f.name}; run `nextclass export {path} --format onnx{' --int8' if int8 else ''}`"
        elif info.get("weights_sha256") and info["weights_sha256"] != file_sha256(folder / "model.safetensors"):
            problem = f"{f} was exported from other weights than {folder / 'model.safetensors'}; export again"
        if problem:
            if not fallback_torch:
                raise OnnxUnavailable(problem)
            log(f"[yellow]NOTE[/]: {problem} - using the PyTorch backend")
            model, meta = load_model(folder)
            return Predictor(model, meta, device=device, path=str(folder))
        # No spin-waiting: between runs this process decodes images on the same cores.
        return cls(session(f, threads, spin=False), meta, path=str(folder), onnx_path=str(f), int8=int8)

    def logits(self, batch: torch.Tensor | np.ndarray) -> np.ndarray:
        x = batch.numpy() if isinstance(batch, torch.Tensor) else batch
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run(None, {self.input_name: x})[0].astype(np.float32, copy=False)
