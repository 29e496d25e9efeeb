"""When ``--max-minutes`` cannot hold a run as resolved: a smaller input side for a pretrained backbone, if the
side was left to ``auto``, before refusing or before giving up fine-tuning.

A pretrained backbone runs at its own input side (224 px for EfficientNet-Lite0), whatever the photos' size. On
5,000 photos with a 2-minute budget the probe alone needs ~94 s at 224 px on 2 cores: the run was refused ("give at
least 10.1 min") although a probe at a smaller side fits. Before refusing, :func:`plan_to_fit` walks the sides of
:data:`SIDES` below the model's own, largest first (pixels, and so the backbone's cost, scale as the side squared).

The same walk runs when ``recipe: auto`` would keep the probe alone because not one fine-tuning epoch fits at the
model's side: the largest side at which one does is taken. Measured on those 5,000 photos at 5 minutes (1,000
held-out): the probe alone at 224 px (+ one augmented view) 0.625; the probe and 2.4 fine-tuning epochs at 128 px
0.677 (fine-tuning adapts the backbone to the data and to the smaller side, which a frozen probe cannot).

Each side is first estimated from the rates measured at the resolved side (scaled by the pixel ratio); only the
first one the estimate fits is applied (the decoded images resized in memory, the preprocessing, config and data
hash updated) and planned again on rates measured at that side. What a frozen probe loses at a smaller side
(600 images of 96 px, Lite0 probe, 1,000 held-out; ``photo96`` / ``upscaled96``): 224 px 0.485 / 0.789, 160 px
0.482 / 0.789, 128 px 0.437 / 0.764, 96 px 0.415 / 0.773: the side is never made smaller while the probe and some
fine-tuning fit at the model's own. The change is logged and lands in ``plan.json`` (``fitted``).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
import torch.nn.functional as F

from nextclass.config import save_config
from nextclass.data.cache import DecodedImages
from nextclass.dist import is_main, world_size
from nextclass.training.context import Context
from nextclass.training.plan import BudgetTooSmall, Plan, measure_rates, plan_run
from nextclass.utils import log, sha1_of

__all__ = ["plan_to_fit", "SIDES", "fit_options"]

SIDES = (192, 160, 128, 112, 96)  # the ladder below a pretrained model's own side (multiples of 16)
REMEASURE_S = 15.0  # the rates are measured again at the new side (training steps are capped at 8 s) + the resize


def plan_to_fit(ctx: Context, started: float, minutes: float, max_epochs: int | None = None) -> Plan:
    """:func:`~nextclass.training.plan.plan_run`, and a smaller side of :func:`fit_options` (applied to ``ctx``, the
    largest that fits: module docstring) when the budget cannot hold the run, or when ``recipe: auto`` would keep the
    probe alone because no fine-tuning epoch fits at the model's side but one fits at a smaller side. Raises the
    first refusal when no side fits.

    Example:
        >>> plan = plan_to_fit(ctx, started=t0, minutes=2)  # doctest: +SKIP
        >>> plan.fitted                                      # doctest: +SKIP
        'input side 224 -> 128 px (images resized in 4.3s)'
    """
    rates = measure_rates(ctx)
    plan, refused = None, None
    try:
        plan = plan_run(ctx, started, minutes, max_epochs, rates=rates)
    except BudgetTooSmall as e:
        refused = e
    tune = plan is not None and ctx.auto_recipe and plan.strategy == "linear-probe"  # no fine-tuning epoch fits
    if plan is not None and not tune:
        return plan
    original = (ctx.cfg, ctx.pp, ctx.images, ctx.data_hash)
    for side in fit_options(ctx):
        trial = _estimate(ctx, rates, side, started, minutes, max_epochs)
        if trial is None or (tune and trial.strategy == "linear-probe"):
            continue
        what = _apply(ctx, original, side)
        try:
            fitted = plan_run(ctx, started, minutes, max_epochs)
        except BudgetTooSmall:
            fitted = None
        if fitted is None or (tune and fitted.strategy == "linear-probe"):
            log(f"[yellow]budget[/]: {what} was estimated to fit but does not at the rates measured; next option")
            continue
        why = ("no fine-tuning epoch fits at the model's side, some do at a smaller one" if tune else
               "the budget cannot hold the run as resolved")
        log(f"[dim]auto[/] {why}: {what}")
        return dataclasses.replace(fitted, fitted=what)
    ctx.cfg, ctx.pp, ctx.images, ctx.data_hash = original
    if plan is not None:  # the probe alone at the model's side, planned again (trying cost time)
        return plan_run(ctx, started, minutes, max_epochs, rates=rates)
    if fit_options(ctx):
        raise BudgetTooSmall(f"{refused} (also tried: the input side down to {min(SIDES)} px)",
                             refused.needed_s) from None
    raise refused


def fit_options(ctx: Context) -> list[int]:
    """The input sides to try, largest first: those of :data:`SIDES` below the resolved one, when the side was
    ``auto``, the backbone pretrained and takes a smaller input (a model from scratch already runs at the data's own
    size; a user's ``--img-size`` is kept)."""
    cfg, side = ctx.cfg, int(ctx.cfg.img_size)
    if world_size() > 1:  # DDP: every rank must train the same side; ranks measure their own rates
        return []
    if not (ctx.auto_img_size and cfg.pretrained and cfg.pretrained != "none") or not _accepts(ctx, min(SIDES)):
        return []
    return [s for s in SIDES if s < side]


def _accepts(ctx: Context, side: int) -> bool:
    """Whether the model takes a smaller input at all (a ViT's position embeddings are fixed at its side)."""
    model, was = ctx.model, ctx.model.training
    try:
        with torch.no_grad():
            dev = next(model.parameters()).device
            model.eval()(torch.zeros(1, int(ctx.cfg.in_chans), side, side, device=dev))
        return True
    except Exception:  # any failure: the side stays
        return False
    finally:
        model.train(was)


def _estimate(ctx: Context, rates: tuple[float, float, float], side: int, started: float, minutes: float,
              max_epochs: int | None) -> Plan | None:
    """The plan at ``side`` on rates scaled from those measured at the resolved side (None: it does not fit)."""
    scale = (int(ctx.cfg.img_size) / side) ** 2
    trial = dataclasses.replace(ctx, cfg=ctx.cfg.model_copy(update={"img_size": side}))
    try:
        return plan_run(trial, started - REMEASURE_S / scale, minutes, max_epochs,
                        rates=(rates[0] * scale, rates[1] * scale, rates[2]))
    except BudgetTooSmall:
        return None


def _apply(ctx: Context, original: tuple, side: int) -> str:
    """Set ``ctx`` to ``side`` (from the resolved images, never resized twice); what changed, in words."""
    from nextclass.models.factory import data_config
    from nextclass.training.defaults import preprocess_for
    from nextclass.training.setup import data_hash

    cfg0, _, images0, _ = original
    t = time.time()
    ctx.cfg = cfg0.model_copy(update={"img_size": side})
    ctx.pp = preprocess_for(side, cfg0.in_chans, True, data_config(ctx.model))
    ctx.images = resized(images0, ctx.pp.size, ctx.pp.interpolation)
    ctx.data_hash = data_hash(ctx.images, ctx.rows["train"], ctx.labels["train"])
    if is_main():
        save_config(ctx.cfg, ctx.run.config)  # a resumed run prepares the same side
    return f"input side {cfg0.img_size} -> {side} px (images resized in {time.time() - t:.1f}s)"


def resized(images: DecodedImages, size: int, interpolation: str = "bilinear", chunk: int = 256) -> DecodedImages:
    """The decoded images at ``size`` x ``size`` (antialiased, in chunks; failed images stay zeros), keyed anew.

    Example:
        >>> im = DecodedImages(np.full((2, 8, 8, 3), 200, np.uint8), np.ones(2, bool), key="k")
        >>> r = resized(im, 4); r.array.shape, int(r.array.max()), r.key != "k"
        ((2, 4, 4, 3), 200, True)
    """
    a = images.array
    out = np.empty((len(a), size, size, a.shape[-1]), np.uint8)
    mode = "bicubic" if interpolation == "bicubic" else "bilinear"
    for i in range(0, len(a), chunk):
        x = torch.from_numpy(np.ascontiguousarray(a[i:i + chunk])).permute(0, 3, 1, 2).float()
        y = F.interpolate(x, size=(size, size), mode=mode, antialias=True, align_corners=False)
        out[i:i + chunk] = y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return dataclasses.replace(images, array=out, key=sha1_of([images.key, size, mode]), hit=False)
