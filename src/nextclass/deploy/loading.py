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

    from nextclass.dist import check_device

    if backend not in ("torch", "onnx", "auto"):
        raise ValueError(f"backend {backend!r}: choose torch, onnx or auto")
    check_device(device)
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


def resolve_model(path: str | os.PathLike, store: str | os.PathLike | None = None) -> Path:
    """An existing path as it is, else a model-store reference (``NAME`` or ``NAME@vN``) resolved.

    A path wins over a store name; when that path is not a bundle but the store holds a model of the same
    name (a folder ``digits/`` in the working directory hiding the stored ``digits``), the error says so.
    """
    from nextclass.bundle import BundleError, resolve_bundle_dir
    from nextclass.deploy.store import StoreError
    from nextclass.deploy.store import resolve as store_resolve

    p = Path(path).expanduser()
    if not p.exists():
        return store_resolve(str(path), store=store)  # a model store name (NAME or NAME@vN)
    try:
        resolve_bundle_dir(p)
    except BundleError as e:
        try:
            stored = store_resolve(str(path), store=store)
        except (StoreError, ValueError):
            raise e from None
        raise BundleError(f"{e}. The model store also has a model {str(path)!r} ({path}@{stored.name}), but the "
                          f"folder {p} in the working directory hides it: give {path}@{stored.name}, or run from "
                          "another folder") from None
    return p
