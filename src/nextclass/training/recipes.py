"""Transfer-learning recipes: ``linear-probe``, ``finetune`` and ``two-phase`` (``scratch`` is one plain phase).

Each recipe is a named preset; every number it uses comes from the (resolved, saved) config, so
a config can override any of them:

* ``linear-probe``: backbone frozen; every train/val image embedded **once** (plus ``tta_views``
  augmented views per training image) into a feature cache keyed by model, weights,
  preprocessing and data (:mod:`nextclass.training.features`); the head (linear, MLP or attention
  block) trains for ``epochs`` epochs on the cached tensors at ``lr`` (default 1e-3), with the
  config's optimizer, schedule, label smoothing, balance and patience. History rows have phase
  ``probe``; the best epoch on val is checkpointed (full model) like any other epoch.
* ``scratch``: one plain phase; for ``fast_resnet`` (the small-image default) the whitening layer is first
  set from the training images (:meth:`~nextclass.models.fast_resnet.FastResNet.init_whitening`).
* ``finetune``: every weight trains, at a low ``lr`` (default 1e-4) with layer-wise lr decay
  (``layer_decay``; default chosen so the stem learns at 1/10 of the head's rate, fastai's
  "discriminative rates"), through the normal epoch loop (augmentation, mixup/cutmix, EMA,
  accumulation, channels_last, balance all apply). With pretrained weights every BatchNorm keeps
  normalising by its pretrained running statistics (its affine weights train): in ``train()``
  mode batch statistics of the new domain would shift every feature the probed head was fitted on
  (measured: loss 1.24 -> 5.56 on the same batch), and small CPU batches make them noisy.
* ``two-phase``: ``probe_epochs`` of ``linear-probe`` at 10x ``lr`` (head only), then ``epochs``
  of ``finetune`` starting from the best probed head (LP-FT: a random head would send large
  gradients into the pretrained backbone). Model selection runs across both phases: the finetune
  phase only replaces the best checkpoint if it beats the probe on val by more than one standard error of val
  (:func:`nextclass.training.phase.improves`). Both phases are in
  ``history.csv`` (probe epochs 1..P, finetune epochs P+1..P+E).

While the backbone is frozen its BatchNorm layers cannot drift: the probe never runs the
backbone in train mode (features come from one eval-mode pass), and
:func:`nextclass.models.freeze.frozen_backbone` is there for loops that do.
"""

from __future__ import annotations

from torch import nn

from nextclass.engine.checkpoint import load_checkpoint
from nextclass.models.freeze import bn_stats_frozen
from nextclass.training.context import Context
from nextclass.training.defaults import whitening_batch
from nextclass.training.phase import Phase, TrainPhase
from nextclass.training.probe import probe_phase
from nextclass.utils import log

__all__ = ["run_recipe", "RECIPES", "PROBE_LR_FACTOR"]

RECIPES = ("scratch", "linear-probe", "finetune", "two-phase")
PROBE_LR_FACTOR = 10.0  # two-phase: head-only lr = 10 x the finetune lr (1e-3 with the default 1e-4)


def _ignored_in_probe(ctx) -> None:
    cfg = ctx.cfg
    off = [k for k, on in (("mixup", cfg.mixup > 0), ("cutmix", cfg.cutmix > 0), ("ema", cfg.ema),
                          ("accumulate", cfg.accumulate > 1)) if on]
    if off:
        log(f"[dim]note[/] probe phase on cached features ignores {', '.join(off)} (they apply to image epochs)")


def _finetune(ctx, model: nn.Module, phase: Phase, state: dict, progress: bool) -> nn.Module:
    """The image-epoch loop with BatchNorm kept on the pretrained statistics (see ``bn_stats_frozen``)."""
    if not ctx.cfg.pretrained:
        return TrainPhase(ctx, model, phase, state).run(progress)
    log("[dim]note[/] fine-tuning keeps BatchNorm on the pretrained running statistics (its affine weights train)")
    with bn_stats_frozen(model):
        return TrainPhase(ctx, model, phase, state).run(progress)


def _init_from_data(ctx: Context, model: nn.Module, state: dict) -> None:
    """fast_resnet: its first layer whitens 2x2 patches of the training images (a new run only; a resumed
    run takes the layer from its checkpoint). Every DDP rank computes the same layer from the same images."""
    if state.get("epoch") or not hasattr(model, "init_whitening"):
        return
    x = whitening_batch(ctx.images.array, ctx.rows["train"], ctx.pp, ctx.cfg.seed)
    model.init_whitening(x)
    log(f"[dim]auto[/] whitening layer from the 2x2 patches of {len(x)} training images")


def run_recipe(ctx: Context, model: nn.Module, state: dict, progress: bool = True) -> nn.Module:
    """Run ``ctx.cfg.recipe`` on ``model``; returns the model to evaluate (fit then loads the best checkpoint).

    Example:
        >>> model = run_recipe(ctx, ctx.model, {})  # doctest: +SKIP
    """
    cfg = ctx.cfg
    if cfg.recipe == "scratch":
        _init_from_data(ctx, model, state)
        return TrainPhase(ctx, model, Phase("scratch", cfg.epochs, cfg.lr), state).run(progress)
    if cfg.recipe == "linear-probe":
        _ignored_in_probe(ctx)
        return probe_phase(ctx, model, state, cfg.epochs, cfg.lr, progress)
    if cfg.recipe == "finetune":
        return _finetune(ctx, model, Phase("finetune", cfg.epochs, cfg.lr, 0, cfg.layer_decay), state, progress)
    if cfg.recipe == "two-phase":
        probe_epochs = cfg.probe_epochs or 1
        if state.get("phase") != "finetune":
            if not state.get("probe_done"):
                _ignored_in_probe(ctx)
                probe_phase(ctx, model, state, probe_epochs, cfg.lr * PROBE_LR_FACTOR, progress)
            best = ctx.run.best_checkpoint
            if best.exists():  # finetune starts from the best probed head, not the last one
                load_checkpoint(best, model)
            state["bad_epochs"] = 0
        offset = int(state.get("probe_rows", probe_epochs))  # the probe's history rows (a logistic fit: one per C)
        phase = Phase("finetune", cfg.epochs, cfg.lr, epoch_offset=offset, layer_decay=cfg.layer_decay)
        return _finetune(ctx, model, phase, state, progress)
    raise ValueError(f"Invalid recipe {cfg.recipe!r}. Only {', '.join(RECIPES)} are supported.")
