"""Transfer-learning recipes: ``linear-probe``, ``finetune`` and ``two-phase`` (``scratch`` lives in fit).

Each recipe is a named preset; every number it uses comes from the (resolved, saved) config, so
a config can override any of them:

* ``linear-probe``: backbone frozen; every train/val image embedded **once** (plus ``tta_views``
  augmented views per training image) into a feature cache keyed by model, weights,
  preprocessing and data (:mod:`nextclass.train.features`); the head (linear, MLP or attention
  block) trains for ``epochs`` epochs on the cached tensors at ``lr`` (default 1e-3), with the
  config's optimizer, schedule, label smoothing, balance and patience. History rows have phase
  ``probe``; the best epoch on val is checkpointed (full model) like any other epoch.
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
  phase only replaces the best checkpoint if it beats the probe on val. Both phases are in
  ``history.csv`` (probe epochs 1..P, finetune epochs P+1..P+E).

While the backbone is frozen its BatchNorm layers cannot drift: the probe never runs the
backbone in train mode (features come from one eval-mode pass), and
:func:`nextclass.models.freeze.frozen_backbone` is there for loops that do.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from ..models.freeze import bn_stats_frozen, freeze_backbone, unfreeze
from ..models.heads import head_from_trunk
from ..utils import log
from .checkpoint import load_checkpoint, save_checkpoint
from .fit import Phase, _better, run_phase, write_history
from .loop import Budget, loss_and_acc
from .optim import Schedule, build_optimizer, param_groups

__all__ = ["run_recipe", "probe_phase", "default_layer_decay", "RECIPES", "PROBE_LR_FACTOR"]

RECIPES = ("scratch", "linear-probe", "finetune", "two-phase")
PROBE_LR_FACTOR = 10.0  # two-phase: head-only lr = 10 x the finetune lr (1e-3 with the default 1e-4)


def default_layer_decay(model: nn.Module, stem_ratio: float = 0.1) -> float | None:
    """Layer-wise lr decay that gives the first layer group ``stem_ratio`` x the head's rate.

    Uses timm's ``group_matcher`` (the grouping timm's ``param_groups_layer_decay`` uses).
    ``None`` for a model without one.

    Example:
        >>> import timm
        >>> 0 < default_layer_decay(timm.create_model("test_resnet")) < 1
        True
    """
    if not hasattr(model, "group_matcher"):
        return None
    from timm.models import group_parameters

    layer_map = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    layer_max = max(layer_map.values())  # the head (unmatched names) is the last group, at scale 1
    if layer_max < 1:
        return None
    return float(f"{stem_ratio ** (1 / layer_max):.3f}")


def _criterion(ctx) -> nn.Module:
    cfg = ctx.cfg
    weight = None
    if cfg.balance == "loss":
        counts = np.bincount(ctx.labels["train"], minlength=len(ctx.classes)).astype(np.float32)
        weight = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(counts), device=ctx.device)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)


def _epoch_order(ctx, n: int, views: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample order and view per sample for one epoch; depends only on (seed, epoch), like make_loader."""
    g = torch.Generator().manual_seed(ctx.cfg.seed * 100003 + epoch)
    if ctx.cfg.balance == "sampler":
        counts = np.bincount(ctx.labels["train"]).astype(float)
        w = torch.as_tensor(1.0 / np.maximum(counts[ctx.labels["train"]], 1))
        order = torch.multinomial(w, n, replacement=True, generator=g)
    else:
        order = torch.randperm(n, generator=g)
    view = torch.randint(0, views, (n,), generator=g) if views > 1 else torch.zeros(n, dtype=torch.long)
    return order, view


@torch.no_grad()
def _head_logits(model: nn.Module, feats: torch.Tensor, device, batch: int = 1024) -> np.ndarray:
    model.eval()
    out = [head_from_trunk(model, feats[i:i + batch].to(device).float()).float().cpu() for i in range(0, len(feats), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def _probe_epoch(ctx, model, feats, optimizer, schedule, criterion, epoch: int, step0: int, budget: Budget):
    cfg, device = ctx.cfg, ctx.device
    y_all = torch.as_tensor(ctx.labels["train"], dtype=torch.long)
    n = len(y_all)
    bs = cfg.batch_size
    order, view = _epoch_order(ctx, n, feats.train.shape[0], epoch)
    nb = n // bs if n > bs else 1  # drop_last, as the image loop does
    torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout depends only on (seed, epoch), as in run_phase
    model.train()
    total, correct, seen, step, t0 = 0.0, 0, 0, step0, time.time()
    optimizer.zero_grad(set_to_none=True)
    for b in range(nb):
        idx = order[b * bs:(b + 1) * bs]
        x = feats.train[view[idx], idx].to(device).float()
        y = y_all[idx].to(device)
        schedule.apply(optimizer, step)
        out = head_from_trunk(model, x)
        loss = criterion(out, y)
        loss.backward()
        if cfg.clip_grad:
            nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        total += float(loss.detach()) * len(y)
        correct += int((out.detach().argmax(1) == y).sum())
        seen += len(y)
        if budget.exceeded():
            break
    return total / max(seen, 1), correct / max(seen, 1), seen, time.time() - t0


def probe_phase(ctx, model: nn.Module, state: dict, epochs: int, lr: float, progress: bool = True) -> nn.Module:
    """Train only the head of ``model`` on cached backbone features for ``epochs`` epochs.

    Writes history rows (phase ``probe``, epochs ``1..epochs``), ``checkpoints/best.safetensors``
    (full model) whenever val improves, and ``last.safetensors`` at the end with
    ``state["probe_done"] = True``.

    Example:
        >>> model = probe_phase(ctx, model, {}, epochs=10, lr=1e-3)  # doctest: +SKIP
    """
    from .features import cached_features

    feats = cached_features(ctx, model, progress)
    model.to(ctx.device)
    # only head parameters reach the optimizer; the backbone is never run here, so BN needs no swap
    undo = freeze_backbone(model, bn=False)
    try:
        _probe_loop(ctx, model, feats, state, epochs, lr)
    finally:
        unfreeze(model, undo)
    state.update(phase="probe", epoch=epochs, probe_done=True, feature_cache="hit" if feats.hit else "built",
                 feature_key=feats.key, feature_seconds=round(feats.seconds, 3))
    save_checkpoint(ctx.run_dir / "checkpoints" / "last.safetensors", model, None, dict(state))
    return model


def _probe_loop(ctx, model, feats, state: dict, epochs: int, lr: float) -> None:
    cfg = ctx.cfg
    ckpt = ctx.run_dir / "checkpoints"
    hist_path = ctx.run_dir / "history.csv"
    history: list[dict] = []  # the probe is always a run's first phase (a resumed probe is simply redone: seconds)
    optimizer = build_optimizer(cfg.optimizer, param_groups(model, cfg.weight_decay, lr), lr, cfg.momentum)
    n = len(ctx.rows["train"])
    steps = n // cfg.batch_size if n > cfg.batch_size else 1
    warm = int(cfg.warmup_epochs * steps) if cfg.scheduler in ("cosine", "plateau", "none") else 0
    schedule = Schedule(cfg.scheduler, epochs * steps, warm, cfg.min_lr_ratio)
    criterion = _criterion(ctx)
    state.update(best=None, best_epoch=None, bad_epochs=0, stopped=None)
    t_run0 = time.time()
    budget = Budget(cfg.max_minutes)
    has_val = len(ctx.rows["val"]) > 0
    hi = cfg.monitor == "val_acc"
    for epoch in range(epochs):
        loss, acc, seen, secs = _probe_epoch(ctx, model, feats, optimizer, schedule, criterion, epoch, epoch * steps, budget)
        val_loss, val_acc = loss_and_acc(_head_logits(model, feats.val, ctx.device), ctx.labels["val"]) if has_val \
            else (float("nan"), float("nan"))
        metric = val_acc if hi else val_loss
        schedule.epoch_end(metric, hi)
        history.append({"epoch": epoch + 1, "phase": "probe", "train_loss": f"{loss:.5f}", "train_acc": f"{acc:.5f}",
                        "val_loss": f"{val_loss:.5f}", "val_acc": f"{val_acc:.5f}",
                        "lr": f"{optimizer.param_groups[0]['lr']:.3e}", "epoch_seconds": f"{secs:.3f}",
                        "images_per_second": f"{seen / max(secs, 1e-9):.1f}",
                        "elapsed_seconds": f"{time.time() - t_run0:.1f}"})
        state.update(epoch=epoch + 1, phase="probe", elapsed=float(state.get("elapsed", 0.0)) + secs)
        improved = _better(cfg, metric, state.get("best"))
        if improved or not has_val:
            state.update(best=metric, best_epoch=epoch + 1, bad_epochs=0)
            save_checkpoint(ckpt / "best.safetensors", model, None, dict(state))
        else:
            state["bad_epochs"] = state.get("bad_epochs", 0) + 1
        write_history(hist_path, history)
        if cfg.patience and state["bad_epochs"] >= cfg.patience:
            log(f"[yellow]probe: early stop, no {cfg.monitor} improvement for {cfg.patience} epochs[/]")
            break
        if budget.exceeded():
            log(f"[yellow]probe: time budget of {cfg.max_minutes} min reached[/]")
            break
    best = state.get("best")
    log(f"probe: {epoch + 1} epochs on cached features in {time.time() - t_run0:.1f}s; best {cfg.monitor} "
        f"{best if best is None else round(best, 4)} at epoch {state.get('best_epoch')}")


def _ignored_in_probe(ctx) -> None:
    cfg = ctx.cfg
    off = [k for k, on in (("mixup", cfg.mixup > 0), ("cutmix", cfg.cutmix > 0), ("ema", cfg.ema),
                          ("accumulate", cfg.accumulate > 1)) if on]
    if off:
        log(f"[dim]note[/] probe phase on cached features ignores {', '.join(off)} (they apply to image epochs)")


def _finetune(ctx, model: nn.Module, phase: Phase, state: dict, progress: bool) -> nn.Module:
    """The image-epoch loop with BatchNorm kept on the pretrained statistics (see ``bn_stats_frozen``)."""
    if not ctx.cfg.pretrained:
        return run_phase(ctx, model, phase, state, progress)
    log("[dim]note[/] fine-tuning keeps BatchNorm on the pretrained running statistics (its affine weights train)")
    with bn_stats_frozen(model):
        return run_phase(ctx, model, phase, state, progress)


def run_recipe(ctx, model: nn.Module, state: dict, progress: bool = True) -> nn.Module:
    """Run ``ctx.cfg.recipe`` on ``model``; returns the model to evaluate (fit then loads the best checkpoint).

    Example:
        >>> model = run_recipe(ctx, build_model(ctx), {})  # doctest: +SKIP
    """
    cfg = ctx.cfg
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
            best = ctx.run_dir / "checkpoints" / "best.safetensors"
            if best.exists():  # finetune starts from the best probed head, not the last one
                load_checkpoint(best, model)
            state["bad_epochs"] = 0
        phase = Phase("finetune", cfg.epochs, cfg.lr, epoch_offset=probe_epochs, layer_decay=cfg.layer_decay)
        return _finetune(ctx, model, phase, state, progress)
    raise ValueError(f"Invalid recipe {cfg.recipe!r}. Only {', '.join(RECIPES)} are supported.")
