"""``nextclass evaluate RUN [DATA]``: a run's bundle on one of its splits, or on another dataset.

Every metrics block names its split and size and is merged into ``<run>/metrics.json`` (replacing the
block of that name); predictions go to ``predictions*.csv``. A block holds what training's finish step
measured too: the selective numbers (AUROC per score, risk-coverage, coverage at the bundle's abstain
threshold) and, when the bundle has a neighbour index, the kNN second opinion, the wrong predictions'
nearest training images and the share flagged ``unfamiliar``; so the re-rendered report keeps its trust
section. Evaluation produces numbers only: re-rendering the report is the caller's step
(:func:`nextclass.evaluate` does it after this returns). The bundle's model card is not rewritten: it
describes the bundle as trained and as stored with ``nextclass models add``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nextclass.data.samples import DataSource
from nextclass.metrics.calibration import calibration_block
from nextclass.metrics.classification import classification_metrics, softmax
from nextclass.metrics.predictions import merge_metrics, predictions_name, summary_line, write_predictions
from nextclass.neighbors import INDEX_FILE
from nextclass.utils import log

__all__ = ["evaluate"]


@dataclass
class _Target:
    """What to evaluate: a data source, the positions of its images to use, and the block's name."""

    source: DataSource
    positions: list[int]
    name: str


def _run_split(run: Path, split: str, cache_dir: str | None) -> tuple[_Target, str | None]:
    """One split of the run's own data (its saved config and split.csv)."""
    from nextclass.config import read_run_config
    from nextclass.data.sources import load_source
    from nextclass.data.splits import read_split_csv

    cfg = read_run_config(run)
    cache_dir = cache_dir or cfg.cache_dir
    source = load_source(cfg.data, cache_dir=cache_dir)
    read_split_csv(run / "split.csv", source)
    return _Target(source, [i for i, s in enumerate(source.samples) if s.split == split], split), cache_dir


def _other_data(data, classes: list[str], cache_dir: str | None) -> _Target:
    """Another dataset with the model's class names (its test split if it has one, else all of it)."""
    from nextclass.data.sources import load_source

    source = load_source(data, cache_dir=cache_dir)
    if source.classes != classes:
        unknown = sorted(set(source.classes) - set(classes))
        if unknown:
            raise ValueError(f"{data}: classes {unknown[:5]} are not known to the model ({len(classes)} classes)")
        remap = [classes.index(c) for c in source.classes]
        for s in source.samples:
            s.label = remap[s.label]
        source.classes = list(classes)
    has_test = any(s.split == "test" for s in source.samples)
    positions = [i for i, s in enumerate(source.samples) if (s.split == "test" or not has_test)]
    return _Target(source, positions, f"{Path(str(data)).name}" + (":test" if has_test else ""))


def _logits(model, loader, meta: dict, tta: bool | None):
    """Plain logits, or the TTA average with the plain logits' accuracy kept for the gain."""
    from nextclass.engine.loop import predict_logits

    lg, y = predict_logits(model, loader)
    if tta is None:  # as the bundle's own numbers were measured
        tta = bool((meta.get("tta") or {}).get("default", False))
    if not tta:
        return lg, y, None
    from nextclass.metrics.tta import tta_predict_logits, views_for

    views = views_for(meta)
    plain = float((lg.argmax(1) == y).mean()) if len(y) else float("nan")  # the temperature never changes argmax
    others = [v for v in views if v != "identity"]
    if others:  # the identity view is the plain pass already computed
        lg_o, _ = tta_predict_logits(model, loader, others)
        lg = ((lg if "identity" in views else 0) + lg_o * len(others)) / len(views)
    return lg, y, {"views": views, "accuracy_without_tta": plain}


def evaluate(run: str | os.PathLike, data: str | os.PathLike | None = None, *, split: str = "test",
             tta: bool | None = None, batch_size: int = 64, progress: bool = True, cache_dir: str | None = None,
             robustness: bool = True) -> dict:
    """Evaluate a run's bundle on one of its splits, or on another dataset.

    Args:
        run: a run directory (its ``model/`` bundle, ``config.yaml`` and ``split.csv`` are used).
        data: another folder/CSV/built-in to evaluate on (all its images, or its ``test`` split if it has one).
        split: which split of the run's data (``train``, ``val``, ``test``) when ``data`` is None.
        tta: average the logits over the bundle's views (flip / multi-crop / shifts, :mod:`nextclass.metrics.tta`);
            the block then holds the TTA numbers and ``tta`` the plain accuracy and the gain. None: as the
            bundle's numbers were measured at training (``model.json`` -> ``tta.default``).
        robustness: also measure accuracy under blur/noise/JPEG/brightness/contrast (capped to seconds).

    Returns:
        The metrics block (also merged into ``<run>/metrics.json``).

    Example:
        >>> m = evaluate("runs/demo-digits")  # doctest: +SKIP
        >>> m["accuracy"]                      # doctest: +SKIP
    """
    from nextclass.bundle import load_model, resolve_bundle_dir
    from nextclass.data.cache import decode_all
    from nextclass.data.loader import ArrayDataset, make_loader
    from nextclass.data.transforms import Preprocess, eval_transform

    run = Path(run)
    model, meta = load_model(resolve_bundle_dir(run))
    classes, temperature = list(meta["classes"]), float(meta.get("temperature", 1.0))
    target, cache_dir = _run_split(run, split, cache_dir) if data is None else (_other_data(data, classes, cache_dir), cache_dir)
    if not target.positions:
        raise ValueError(f"no images in split {split!r} of {run}")
    pp = Preprocess.from_dict(meta["preprocess"])
    images = decode_all(target.source, target.positions, size=pp.size, channels=pp.channels,
                        interpolation=pp.interpolation, cache_dir=cache_dir, progress=progress)
    ok = np.flatnonzero(images.ok)
    labels = np.array([target.source.samples[target.positions[i]].label for i in ok])
    loader = make_loader(ArrayDataset(images.array, ok, labels, eval_transform(pp)), batch_size, train=False)
    t0 = time.time()
    lg, y, tta_info = _logits(model, loader, meta, tta)
    m = _block((lg, y), meta, target, images, tta_info)
    paths = [target.source.samples[target.positions[i]].path for i in ok]
    m.update(_trust(model, loader, (lg, y), meta, resolve_bundle_dir(run), paths))
    m["seconds"] = round(time.time() - t0, 3)
    if robustness and len(ok):
        from nextclass.metrics.robustness import model_logits_fn
        from nextclass.metrics.robustness import robustness as _robustness

        m["robustness"] = _robustness(model_logits_fn(model, "cpu"), images.array, y, pp, rows=ok, split=target.name)
    merge_metrics(run / "metrics.json", {target.name: m})
    write_predictions(run / predictions_name(target.name), paths, target.name, y, softmax(lg, temperature), classes)
    log(summary_line(m) + (f" (with TTA, {len(m['tta']['views'])} views; plain {m['tta']['accuracy_without_tta']:.4f}, "
                           f"gain {m['tta']['gain']:+.4f})" if "tta" in m else ""))
    return m


def _trust(model, loader, logits: tuple, meta: dict, bundle: Path, paths: list[str]) -> dict:
    """``selective`` and (with the bundle's neighbour index) ``neighbors``, as training's finish step writes them."""
    from nextclass.engine.loop import predict_logits
    from nextclass.metrics.selective import selective_block
    from nextclass.neighbors import Embedder, NeighborIndex, second_opinion

    (lg, y), temperature = logits, float(meta.get("temperature", 1.0))
    out = {"selective": selective_block(lg, y, temperature, meta.get("abstain"))} if len(y) else {}
    index = NeighborIndex.load(bundle)
    if index is None or not len(y):
        return out
    emb, _ = predict_logits(Embedder(model), loader)
    far = ((meta.get("neighbors") or {}).get("unfamiliar") or {}).get("distance")
    out["neighbors"] = {**second_opinion(index, emb, lg, y, paths, list(meta["classes"]), far),
                        "index_n": len(index), "index_bytes": (bundle / INDEX_FILE).stat().st_size}
    return out


def _block(logits: tuple, meta: dict, target: _Target, images, tta_info: dict | None) -> dict:
    """The metrics block: classification metrics, calibration, skipped files and the TTA gain."""
    (lg, y), temperature = logits, float(meta.get("temperature", 1.0))
    m = classification_metrics(softmax(lg, temperature), y, list(meta["classes"]), target.name)
    m["skipped"] = [{"path": target.source.samples[target.positions[i]].path, "reason": r} for i, r in images.errors.items()]
    m["temperature"] = temperature
    if tta_info is not None:
        m["tta"] = {**tta_info, "accuracy_with_tta": m["accuracy"], "gain": m["accuracy"] - tta_info["accuracy_without_tta"]}
    m.update(calibration_block(lg, y, temperature))
    return m
