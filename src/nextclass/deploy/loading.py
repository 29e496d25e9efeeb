"""``nextclass.load``: a run directory, bundle directory or model-store name → a predictor.

The torch backend is :class:`~nextclass.deploy.predictor.Predictor`; ``onnx``/``auto`` use
:class:`~nextclass.deploy.runtime.OnnxPredictor` (``auto`` falls back to torch when the bundle has no
valid ONNX model).
"""

from __future__ import annotations

import os
from pathlib import Path

from nextclass.deploy.predictor import Predictor

__all__ = ["load", "resolve_model"]


def load(path: str | os.PathLike, device: str = "cpu", backend: str = "torch") -> Predictor:
    """Load a bundle (run directory, bundle directory, or model store name) for prediction."""
    from nextclass.bundle import load_model, resolve_bundle_dir

    if backend not in ("torch", "onnx", "auto"):
        raise ValueError(f"backend {backend!r}: choose torch, onnx or auto")
    p = resolve_model(path)
    if backend in ("onnx", "auto"):
        try:
            from nextclass.deploy.runtime import OnnxPredictor

            return OnnxPredictor.from_bundle(p, fallback_torch=(backend == "auto"))
        except ImportError:
            if backend == "onnx":
                raise
    model, meta = load_model(p)
    return Predictor(model, meta, device=device, path=str(resolve_bundle_dir(p)))


def resolve_model(path: str | os.PathLike) -> Path:
    """An existing path as it is, else a model-store reference (``NAME`` or ``NAME@vN``) resolved."""
    p = Path(path).expanduser()
    if p.exists():
        return p
    from nextclass.deploy.store import resolve as store_resolve

    return store_resolve(str(path))  # a model store name (NAME or NAME@vN)
