"""Evaluate a model on a split: ``metrics.json`` and ``predictions.csv`` in the run.

Used at the end of training (:func:`finish_run`) and by ``nextclass evaluate RUN [DATA]``
(:func:`evaluate`). Every metrics block names its split and size. The test split is only ever
measured here, after model selection on val.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..utils import atomic_write_json, atomic_write_text, log
from .metrics import classification_metrics, softmax

__all__ = ["finish_run", "evaluate", "write_predictions", "summary_line"]


def write_predictions(path: Path, paths: list[str], split: str, labels: np.ndarray, probs: np.ndarray,
                      classes: list[str], k: int = 5) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "split", "true", "predicted", "probability", "correct", "true_probability", "topk"])
    k = min(k, len(classes))
    for p, y, pr in zip(paths, labels, probs):
        order = np.argsort(-pr)[:k]
        top = ";".join(f"{classes[j]}:{pr[j]:.4f}" for j in order)
        w.writerow([p, split, classes[y], classes[order[0]], f"{pr[order[0]]:.5f}", int(order[0] == y), f"{pr[y]:.5f}", top])
    atomic_write_text(path, buf.getvalue())


def summary_line(m: dict) -> str:
    return (f"{m['split']} ({m['n']} images): top-1 {m['accuracy']:.4f}, top-5 {m['top5']:.4f}, "
            f"macro F1 {m['macro']['f1']:.4f}")


def _merge_metrics(path: Path, blocks: dict) -> dict:
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(blocks)
    atomic_write_json(path, data)
    return data


def finish_run(ctx, model: nn.Module, progress: bool = True) -> dict:
    """Evaluate the selected model on val and test, write metrics/predictions, the bundle and the report."""
    from ..bundle import save_bundle
    from ..train.fit import arch_kwargs, progress_bar, val_logits
    from .tta import views_from_config

    cfg = ctx.cfg
    blocks: dict = {}
    logits: dict = {}
    with progress_bar(progress) as bar:
        for split in ("val", "test"):
            if split == "test" and not cfg.evaluate_test:
                continue
            if len(ctx.rows[split]) == 0:
                continue
            lg, y = val_logits(ctx, model, split, bar)
            logits[split] = (lg, y)
    temperature = 1.0
    if "val" in logits:
        try:
            from .calibration import fit_temperature

            temperature = fit_temperature(*logits["val"])
        except ImportError:
            pass
    for split, (lg, y) in logits.items():
        probs = softmax(lg, temperature)
        m = classification_metrics(probs, y, ctx.classes, split)
        m["temperature"] = temperature
        try:
            from .calibration import calibration_block

            m.update(calibration_block(lg, y, temperature))
        except ImportError:
            pass
        blocks[split] = m
        paths = [ctx.source.samples[r].path for r in ctx.rows[split]]
        name = "predictions.csv" if split == "test" else f"predictions_{split}.csv"
        write_predictions(ctx.run_dir / name, paths, split, y, probs, ctx.classes)
        log(summary_line(m))
    last = "test" if "test" in blocks else ("val" if "val" in blocks else None)
    if cfg.report and last is not None:  # robustness is part of the report: skipped with --no-report (e.g. tune trials)
        from .robustness import model_logits_fn, robustness

        blocks[last]["robustness"] = robustness(model_logits_fn(model, ctx.device), ctx.images.array, ctx.labels[last],
                                                ctx.pp, rows=ctx.rows[last], split=last, seed=cfg.seed)
    blocks["skipped"] = len(ctx.images.errors)
    metrics = _merge_metrics(ctx.run_dir / "metrics.json", blocks)
    arch = {"name": cfg.model, "kwargs": arch_kwargs(ctx), "head": cfg.head,
            "head_kwargs": dict(getattr(model, "head_kwargs", {}) or {})}
    short = {s: {"accuracy": b["accuracy"], "top5": b["top5"], "macro_f1": b["macro"]["f1"], "n": b["n"], "split": s}
             for s, b in blocks.items() if isinstance(b, dict)}
    save_bundle(ctx.run_dir / "model", model.cpu(), arch=arch, classes=ctx.classes, preprocess=ctx.pp,
                metrics=short, data_hash=ctx.data_hash, temperature=temperature,
                extra={"recipe": cfg.recipe, "pretrained": cfg.pretrained, "run": str(ctx.run_dir.name),
                       "tta": {"views": views_from_config(cfg)}})
    model.to(ctx.device)
    from ..data.audit import attach_label_suspects

    attach_label_suspects(ctx.run_dir)  # confident-learning label suspects -> audit.json (never raises)
    if cfg.report:
        try:
            from ..report.html import build_report
        except ImportError:
            build_report = None
        if build_report is not None:
            try:  # the bundle is saved: a report failure must not cost the user the run
                out = build_report(ctx.run_dir, model=model, ctx=ctx)
                log(f"report: {out}")
            except Exception as e:  # noqa: BLE001
                log(f"[red]report failed[/]: {type(e).__name__}: {e} (rebuild with `nextclass report {ctx.run_dir}`)")
    return metrics


def _decode_for(meta: dict, source, positions, cache_dir, progress):
    from ..data.cache import decode_all
    from ..data.transforms import Preprocess

    pp = Preprocess.from_dict(meta["preprocess"])
    return pp, decode_all(source, positions, size=pp.size, channels=pp.channels, interpolation=pp.interpolation,
                          cache_dir=cache_dir, progress=progress)


def evaluate(run: str | os.PathLike, data: str | os.PathLike | None = None, *, split: str = "test",
             tta: bool = False, batch_size: int = 64, progress: bool = True, cache_dir: str | None = None,
             robustness: bool = True, report: bool = True) -> dict:
    """Evaluate a run's bundle on one of its splits, or on another dataset.

    Args:
        run: a run directory (its ``model/`` bundle, ``config.yaml`` and ``split.csv`` are used).
        data: another folder/CSV/built-in to evaluate on (all its images, or its ``test`` split if it has one).
        split: which split of the run's data (``train``, ``val``, ``test``) when ``data`` is None.
        tta: test-time augmentation: average the logits over the bundle's views (flip / multi-crop, see
            :mod:`nextclass.evaluate.tta`); the block then holds the TTA numbers and ``tta`` the plain
            accuracy and the gain.
        robustness: also measure accuracy under blur/noise/JPEG/brightness/contrast (capped to seconds).
        report: rebuild ``<run>/report.html`` afterwards.

    Returns:
        The metrics block (also merged into ``<run>/metrics.json``).

    Example:
        >>> m = evaluate("runs/demo-digits")  # doctest: +SKIP
        >>> m["accuracy"]                      # doctest: +SKIP
    """
    import yaml

    from ..data.loader import ArrayDataset, make_loader
    from ..data.sources import load_source
    from ..data.splits import read_split_csv
    from ..data.transforms import eval_transform
    from ..predictor import load
    from ..train.loop import predict_logits

    run = Path(run)
    pred = load(run)
    meta = pred.meta
    if data is None:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        cache_dir = cache_dir or cfg.get("cache_dir")
        source = load_source(cfg["data"], cache_dir=cache_dir)
        read_split_csv(run / "split.csv", source)
        positions = [i for i, s in enumerate(source.samples) if s.split == split]
        name = split
    else:
        source = load_source(data, cache_dir=cache_dir)
        if source.classes != pred.classes:
            unknown = sorted(set(source.classes) - set(pred.classes))
            if unknown:
                raise ValueError(f"{data}: classes {unknown[:5]} are not known to the model ({len(pred.classes)} classes)")
            remap = [pred.classes.index(c) for c in source.classes]
            for s in source.samples:
                s.label = remap[s.label]
            source.classes = list(pred.classes)
        has_test = any(s.split == "test" for s in source.samples)
        positions = [i for i, s in enumerate(source.samples) if (s.split == "test" or not has_test)]
        name = f"{Path(str(data)).name}" + (":test" if has_test else "")
    if not positions:
        raise ValueError(f"no images in split {split!r} of {run}")
    pp, images = _decode_for(meta, source, positions, cache_dir, progress)
    ok = np.flatnonzero(images.ok)
    labels = np.array([source.samples[positions[i]].label for i in ok])
    ds = ArrayDataset(images.array, ok, labels, eval_transform(pp))
    loader = make_loader(ds, batch_size, train=False)
    t0 = time.time()
    lg, y = predict_logits(pred.model, loader, device=pred.device)
    if tta:
        from .tta import tta_predict_logits, views_for

        views = views_for(meta)
        plain = classification_metrics(softmax(lg, pred.temperature), y, pred.classes, name)["accuracy"]
        others = [v for v in views if v != "identity"]
        if others:  # the identity view is the plain pass already computed
            lg_o, _ = tta_predict_logits(pred.model, loader, others, device=pred.device)
            lg = ((lg if "identity" in views else 0) + lg_o * len(others)) / len(views)
    probs = softmax(lg, pred.temperature)
    m = classification_metrics(probs, y, pred.classes, name)
    m["seconds"] = round(time.time() - t0, 3)
    m["skipped"] = [{"path": source.samples[positions[i]].path, "reason": r} for i, r in images.errors.items()]
    m["temperature"] = pred.temperature
    if tta:
        m["tta"] = {"views": views, "accuracy_without_tta": plain, "accuracy_with_tta": m["accuracy"],
                    "gain": m["accuracy"] - plain}
    try:
        from .calibration import calibration_block

        m.update(calibration_block(lg, y, pred.temperature))
    except ImportError:
        pass
    if robustness and len(ok):
        from .robustness import model_logits_fn
        from .robustness import robustness as _robustness

        m["robustness"] = _robustness(model_logits_fn(pred.model, pred.device), images.array, y, pp, rows=ok, split=name)
    _merge_metrics(run / "metrics.json", {name: m})
    paths = [source.samples[positions[i]].path for i in ok]
    fname = "predictions.csv" if name == "test" else f"predictions_{name.replace(':', '_').replace('/', '_')}.csv"
    write_predictions(run / fname, paths, name, y, probs, pred.classes)
    log(summary_line(m) + (f" (with TTA, {len(m['tta']['views'])} views; plain {m['tta']['accuracy_without_tta']:.4f}, "
                           f"gain {m['tta']['gain']:+.4f})" if tta else ""))
    if report and (run / "config.yaml").exists():
        from ..report.html import build_report

        log(f"report: {build_report(run, model=pred.model)}")
    return m
