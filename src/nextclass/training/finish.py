"""The finish step of a training run: final numbers, the bundle, label issues and the report.

Order: logits of the selected model on val and test (:func:`nextclass.evaluation.scorer.split_logits`, TTA
views included) → temperature fitted on val only → the abstain and prediction-set thresholds (val) and the
nearest-neighbour index of the training images (:mod:`nextclass.training.trust`) → one block per split from the
one scorer (:func:`nextclass.evaluation.scorer.score`, the function ``nextclass evaluate`` calls; the test split is measured
here, once, after model selection) → ``metrics.json`` and ``predictions*.csv`` → the bundle → label issues on
val/test from the exact probabilities in memory (cleanlab, :mod:`nextclass.data.label_issues`) into
``audit.json`` and ``label_issues.csv`` → the model card ``README.md`` → ``report.html``. The bundle is saved
before the report, so a report failure never costs the user the run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from nextclass.bundle import save_bundle
from nextclass.card import write_card
from nextclass.data.label_issues import Judged, attach_label_issues
from nextclass.evaluation.record import record
from nextclass.evaluation.scorer import Scoring, score, split_logits
from nextclass.metrics.calibration import fit_temperature
from nextclass.metrics.multilabel import fit_on_val
from nextclass.metrics.tta import views_from_config
from nextclass.training.context import Context
from nextclass.training.defaults import arch_of
from nextclass.training.scoring import eval_images, scoring_of
from nextclass.training.step import positive_weights
from nextclass.training.trust import abstain_on_val, build_index, log_index, sets_on_val
from nextclass.utils import log, progress_bar

__all__ = ["finish_run", "final_splits"]


def final_splits(ctx: Context) -> list[str]:
    """The splits the final numbers are measured on: val, then test (unless ``evaluate_test`` is off); the last
    one is the headline block (neighbours, robustness, the report's main numbers)."""
    return [s for s in ("val", "test") if (s == "val" or ctx.cfg.evaluate_test) and len(ctx.rows[s])]


def _weights_name(spec: str | None) -> str | None:
    """The weights a bundle started from, without a local path (a bundle travels): a file's name, else the spec."""
    return Path(spec).name if spec and ("/" in spec or "\\" in spec) and not spec.startswith(("timm/", "hf-hub:", "hf_hub:")) \
        else spec


def _short(b: dict, split: str) -> dict:
    """A block's headline numbers as the bundle keeps them."""
    if b.get("task") == "multi-label":
        return {"map": b["map"], "macro_f1": b["macro"]["f1"], "micro_f1": b["micro"]["f1"],
                "exact_match": b["exact_match"], "n": b["n"], "split": split}
    return {"accuracy": b["accuracy"], "top5": b["top5"], "macro_f1": b["macro"]["f1"], "n": b["n"], "split": split}


def _save_bundle(ctx: Context, model: nn.Module, blocks: dict, s: Scoring, trust: dict) -> None:
    cfg = ctx.cfg
    arch = arch_of(cfg, len(ctx.classes), model)
    short = {sp: _short(b, sp) for sp, b in blocks.items() if isinstance(b, dict)}
    save_bundle(ctx.run.bundle, model.cpu(), arch=arch, classes=ctx.classes, preprocess=ctx.pp,
                metrics=short, data_hash=ctx.data_hash, temperature=s.temperature,
                extra={"recipe": cfg.recipe, "pretrained": _weights_name(cfg.pretrained), "run": str(ctx.run_dir.name),
                       "tta": {"views": views_from_config(cfg), "default": len(s.views) > 1},
                       "corrections": ctx.corrections, **trust})
    model.to(ctx.device)


def _render_report(ctx: Context, model: nn.Module) -> None:
    from nextclass.report.html import build_report

    try:  # the bundle is saved: a report failure must not cost the user the run
        log(f"report: {build_report(ctx.run_dir, model=model, ctx=ctx)}")
    except Exception as e:  # noqa: BLE001
        log(f"[red]report failed[/]: {type(e).__name__}: {e} (rebuild with `nextclass report {ctx.run_dir}`)")


def _fit_labels(ctx: Context, logits: dict, s: Scoring) -> dict:
    """Multi-label: per-label temperatures, then per-label thresholds, on val; the bundle's entries."""
    val = logits.get("val")
    z = val.logits if val is not None else np.zeros((0, len(ctx.classes)))
    y = val.labels if val is not None else np.zeros((0, len(ctx.classes)))
    offsets = np.log(positive_weights(ctx.labels["train"]))  # the loss's shift of each label's logit
    s.label_fit = fit_on_val(z, y, list(ctx.classes), ctx.cfg.target_precision, offsets)
    f = s.label_fit
    log(f"per-label temperature and threshold ({f['threshold_rule']}) fitted on {len(y)} val images: T "
        f"{min(f['temperatures']):.2f}..{max(f['temperatures']):.2f}, thresholds {min(f['thresholds']):.3f}.."
        f"{max(f['thresholds']):.3f}")
    return {"task": "multi-label", "offsets": f["offsets"], "temperatures": f["temperatures"], "thresholds": f["thresholds"],
            "threshold_rule": f["threshold_rule"], "label_fit": {"choice": f["choice"], "reasons": f["reasons"]}}


def _score_splits(ctx: Context, model: nn.Module, s: Scoring, progress: bool) -> tuple[dict, dict, dict]:
    """Fit the temperature, abstain threshold and index on val, then score every split: (blocks, probs, images)."""
    splits = final_splits(ctx)
    images = {sp: eval_images(ctx, sp) for sp in splits}
    with progress_bar(progress) as bar:
        index = ctx.cfg.neighbor_index > 0 and len(ctx.rows["train"]) > 0  # the headline block's vectors: same pass
        logits = {sp: split_logits(model, images[sp], s, bar, with_embeddings=index and sp == splits[-1])
                  for sp in splits}
    if len(s.views) > 1:
        log(f"final numbers averaged over {len(s.views)} test-time views ({', '.join(s.views)})")
    elif ctx.features is not None and ctx.cfg.recipe == "linear-probe":
        log("final val/test logits from the cached features (the frozen backbone is not run again)")
    if ctx.source.multilabel:
        trust = _fit_labels(ctx, logits, s)
    else:
        s.temperature = fit_temperature(logits["val"].logits, logits["val"].labels) if "val" in logits else 1.0
        trust = {"abstain": abstain_on_val(ctx, logits, s), "sets": sets_on_val(ctx, logits, s),
                 "neighbors": build_index(ctx, model, s, progress)}
    blocks, probs = {}, {}
    with progress_bar(progress) as bar:
        for sp in splits:
            blocks[sp], probs[sp] = score(model, images[sp], s, logits[sp], headline=sp == splits[-1], progress=bar)
    log_index(trust.get("neighbors"), blocks, splits[-1] if splits else None)
    return blocks, probs, {"images": images, "trust": trust}


def finish_run(ctx: Context, model: nn.Module, progress: bool = True) -> dict:
    """Evaluate the selected model on val and test, write metrics/predictions, the bundle and the report.

    Returns:
        The whole ``metrics.json`` after the merge.
    """
    s = scoring_of(ctx)
    blocks, probs, rest = _score_splits(ctx, model, s, progress)
    images = rest["images"]
    metrics = record(ctx.run, {sp: (blocks[sp], probs[sp], images[sp]) for sp in blocks}, ctx.classes,
                     extra={"skipped": len(ctx.images.errors)})
    _save_bundle(ctx, model, blocks, s, rest["trust"])
    judged = Judged.of({sp: (probs[sp], images[sp].labels, images[sp].ids) for sp in blocks}, ctx.classes)
    attach_label_issues(ctx.run_dir, judged)  # cleanlab on the exact val/test probabilities, per label when multi-label
    write_card(ctx.run_dir)  # <run>/model/README.md, the model card (after audit.json: it quotes the findings)
    if ctx.cfg.report:
        _render_report(ctx, model)
    return metrics
