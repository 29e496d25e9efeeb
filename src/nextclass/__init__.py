"""nextclass: from a folder of labelled images to an audited, calibrated, deployable classifier.

Public API (imports are lazy: ``import nextclass`` does not import torch or timm)::

    import nextclass
    run = nextclass.train({"data": "digits", "epochs": 5})    # -> runs/simple_cnn-digits
    metrics = nextclass.evaluate(run)                          # test split, metrics.json
    model = nextclass.load(run)                                # bundle, no pickle
    model.predict(["img.png"])[0].label
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["train", "evaluate", "predict", "load", "export", "audit", "tune", "__version__"]


def train(config: Any = None, *, resume: str | None = None, progress: bool = True, **overrides: Any):
    """Train a model. ``config``: a :class:`~nextclass.config.TrainConfig`, a dict, or a YAML path.

    Keyword overrides are config fields (``data=``, ``model=``, ``epochs=``...). Returns the run directory.

    Example:
        >>> run = nextclass.train(data="digits", epochs=5)  # doctest: +SKIP
    """
    from .config import TrainConfig, load_config, make_config
    from .train.fit import fit

    if resume is not None:
        return fit(None, resume=resume, progress=progress)
    if isinstance(config, TrainConfig):
        cfg = config.model_copy(update=overrides) if overrides else config
        cfg = make_config(**cfg.model_dump())
    elif isinstance(config, dict):
        cfg = make_config(**{**config, **overrides})
    else:
        cfg = load_config(config, **overrides)
    return fit(cfg, progress=progress)


_train_function = train  # the subpackage nextclass.train calls this (see nextclass/train/__init__.py)


def evaluate(run: Any, data: Any = None, **kwargs: Any) -> dict:
    """Evaluate a run's bundle on its test split (or ``split=``), or on another dataset ``data``."""
    from .evaluate.run import evaluate as _evaluate

    return _evaluate(run, data, **kwargs)


_evaluate_function = evaluate


def load(model: Any, device: str = "cpu", backend: str = "torch"):
    """Load a bundle (run dir, bundle dir or model-store name) as a :class:`~nextclass.predictor.Predictor`."""
    from .predictor import load as _load

    return _load(model, device=device, backend=backend)


def predict(model: Any, images: Any, **kwargs: Any):
    """Shortcut for ``load(model).predict(images, **kwargs)``."""
    return load(model).predict(images, **kwargs)


def export(run: Any, **kwargs: Any):
    """Export a bundle to ONNX (optionally int8). See :mod:`nextclass.export`."""
    from .export.onnx import export_onnx

    return export_onnx(run, **kwargs)


def audit(data: Any, **kwargs: Any) -> dict:
    """Audit a dataset: unreadable files, duplicates, leakage across splits, imbalance."""
    from .data.audit import audit as _audit

    return _audit(data, **kwargs)


def tune(config: Any, trials: int = 20, **kwargs: Any):
    """Optuna search over the training config; returns a TuneResult (best config, value, params, output, study)."""
    from .tune import tune as _tune

    return _tune(config, trials=trials, **kwargs)
