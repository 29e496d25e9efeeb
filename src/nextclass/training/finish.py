"""The finish step of a training run: final numbers, the bundle, label issues and the report.

Order: logits of the selected model on val and test → temperature fitted on val only → metrics and
``predictions*.csv`` per split (the test split is measured here, once, after model selection) →
selective metrics and the abstain threshold (val), the nearest-neighbour index of the training images
(:mod:`nextclass.training.trust`) → robustness on the last split (part of the report) → ``metrics.json`` →
the bundle → label issues on val/test (cleanlab, :func:`nextclass.data.label_issues.attach_label_issues`)
into ``audit.json`` and ``label_issues.csv`` → the model card ``README.md`` → ``report.html``. The bundle
is saved before the report, so a report failure never costs the user the run.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from nextclass.bundle import save_bundle
from nextclass.card import write_card
from nextclass.metrics.calibration import calibration_block, fit_temperature
from nextclass.metrics.classification import classification_metrics, softmax
from nextclass.metrics.predictions import merge_metrics, predictions_name, summary_line, write_predictions
from nextclass.metrics.tta import TTAModel, views_from_config
from nextclass.training.batches import split_logits
from nextclass.training.context import Context
from nextclass.training.defaults import arch_kwargs
from nextclass.training.trust import build_neighbors, selective_results
from nextclass.utils import log, progress_bar

__all__ = ["finish_run", "score_splits"]


def _final_logits(ctx: Context, model: nn.Module, progress: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Logits and labels of val and (unless ``evaluate_test`` is off) test, for non-empty splits.

    After a linear probe the backbone never changed: the head runs on the cached features instead of
    passing every image through the backbone again.
    """
    from nextclass.training.probe import head_logits

    cached = ctx.features if ctx.cfg.recipe == "linear-probe" else None
    out = {}
    with progress_bar(progress) as bar:
        for split in ("val", "test"):
            if (split == "test" and not ctx.cfg.evaluate_test) or len(ctx.rows[split]) == 0:
                continue
            if cached is not None:
                out[split] = (head_logits(model, getattr(cached, split), ctx.device), ctx.labels[split])
            else:
                out[split] = split_logits(ctx, model, split, bar)
    if cached is not None:
        log("final val/test logits from the cached features (the frozen backbone is not run again)")
    return out


def _with_tta(ctx: Context, model: nn.Module, logits: dict, progress: bool) -> dict:
    """``tta``: replace each split's logits by their mean over the training-matched views; returns, per
    split, the views and the plain accuracy (kept in the metrics so the gain is visible)."""
    views = views_from_config(ctx.cfg)
    if not ctx.cfg.tta or len(views) < 2 or ctx.cfg.recipe == "linear-probe":
        return {}
    info = {}
    with progress_bar(progress) as bar:
        for split, (plain, y) in list(logits.items()):
            logits[split] = split_logits(ctx, TTAModel(model, views), split, bar)
            info[split] = {"views": views, "accuracy_without_tta": float((plain.argmax(1) == y).mean())}
    log(f"final numbers averaged over {len(views)} test-time views ({', '.join(views)})")
    return info


def score_splits(ctx: Context, logits: dict, temperature: float) -> dict:
    """Metrics blocks (with calibration) per split, and their ``predictions*.csv`` in the run."""
    blocks = {}
    for split, (lg, y) in logits.items():
        probs = softmax(lg, temperature)
        m = classification_metrics(probs, y, ctx.classes, split)
        m["temperature"] = temperature
        m.update(calibration_block(lg, y, temperature))
        blocks[split] = m
        paths = [ctx.source.samples[r].path for r in ctx.rows[split]]
        write_predictions(ctx.run_dir / predictions_name(split), paths, split, y, probs, ctx.classes)
        log(summary_line(m))
    return blocks


def _save_bundle(ctx: Context, model: nn.Module, blocks: dict, temperature: float, trust: dict) -> None:
    cfg = ctx.cfg
    arch = {"name": cfg.model, "kwargs": arch_kwargs(cfg, len(ctx.classes)), "head": cfg.head,
            "head_kwargs": dict(getattr(model, "head_kwargs", {}) or {})}
    short = {s: {"accuracy": b["accuracy"], "top5": b["top5"], "macro_f1": b["macro"]["f1"], "n": b["n"], "split": s}
             for s, b in blocks.items() if isinstance(b, dict)}
    save_bundle(ctx.run_dir / "model", model.cpu(), arch=arch, classes=ctx.classes, preprocess=ctx.pp,
                metrics=short, data_hash=ctx.data_hash, temperature=temperature,
                extra={"recipe": cfg.recipe, "pretrained": cfg.pretrained, "run": str(ctx.run_dir.name),
                       "tta": {"views": views_from_config(cfg), "default": bool(cfg.tta)}, **trust})
    model.to(ctx.device)


def _render_report(ctx: Context, model: nn.Module) -> None:
    from nextclass.report.html import build_report

    try:  # the bundle is saved: a report failure must not cost the user the run
        log(f"report: {build_report(ctx.run_dir, model=model, ctx=ctx)}")
    except Exception as e:  # noqa: BLE001
        log(f"[red]report failed[/]: {type(e).__name__}: {e} (rebuild with `nextclass report {ctx.run_dir}`)")


def finish_run(ctx: Context, model: nn.Module, progress: bool = True) -> dict:
    """Evaluate the selected model on val and test, write metrics/predictions, the bundle and the report.

    Returns:
        The whole ``metrics.json`` after the merge.
    """
    from nextclass.data.label_issues import attach_label_issues

    logits = _final_logits(ctx, model, progress)
    tta = _with_tta(ctx, model, logits, progress)
    temperature = fit_temperature(*logits["val"]) if "val" in logits else 1.0
    blocks = score_splits(ctx, logits, temperature)
    for split, info in tta.items():
        blocks[split]["tta"] = {**info, "gain": blocks[split]["accuracy"] - info["accuracy_without_tta"]}
    trust = {"abstain": selective_results(ctx, logits, temperature, blocks),  # threshold on val, AUROCs per split
             "neighbors": build_neighbors(ctx, model, logits, blocks, progress)}  # <run>/model/neighbors.safetensors
    last = "test" if "test" in blocks else ("val" if "val" in blocks else None)
    if ctx.cfg.report and last is not None:  # robustness is part of the report: skipped with --no-report (tune trials)
        from nextclass.training.robust import split_robustness

        blocks[last]["robustness"] = split_robustness(ctx, model, last)  # cached by weights + images + seed
    blocks["skipped"] = len(ctx.images.errors)
    metrics = merge_metrics(ctx.run_dir / "metrics.json", blocks)
    _save_bundle(ctx, model, blocks, temperature, trust)
    attach_label_issues(ctx.run_dir)  # cleanlab on val/test -> audit.json + label_issues.csv (never raises)
    write_card(ctx.run_dir)  # <run>/model/README.md, the model card (after audit.json: it quotes the findings)
    if ctx.cfg.report:
        _render_report(ctx, model)
    return metrics
