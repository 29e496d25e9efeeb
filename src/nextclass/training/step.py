"""The one builder of the training step: optimiser, schedule, loss (label smoothing, class weights, soft targets),
EMA, mixup/cutmix, grad scaler, DDP wrapper and torch.compile, from the resolved config.

Every phase (:class:`nextclass.training.phase.TrainPhase`), the budget planner (:mod:`nextclass.training.plan`, which
times this very step on a copy of the model) and ``nextclass benchmark`` build their step here, so the step that is
timed is the step that runs. The probe (:class:`nextclass.training.probe.ProbePhase`) takes the schedule and the
loss from here and trains the head alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nextclass.config import TrainConfig
from nextclass.dist import is_main, world_size, wrap_ddp
from nextclass.engine.budget import Budget
from nextclass.engine.loop import StepParts
from nextclass.engine.optim import Schedule, build_optimizer, param_groups
from nextclass.training.context import Context
from nextclass.training.defaults import ema_decay_for
from nextclass.utils import log

__all__ = ["Phase", "build_parts", "make_criterion", "make_schedule", "steps_per_epoch", "positive_weights",
           "multilabel_criterion"]


@dataclass
class Phase:
    """A stretch of epochs with one optimiser setup (``scratch``, ``finetune`` or ``probe``)."""

    name: str
    epochs: int
    lr: float
    epoch_offset: int = 0  # global epoch index of this phase's first epoch
    layer_decay: float | None = None
    last_steps: int | None = None  # --max-minutes: the final epoch stops after this many steps (None: whole)


def make_criterion(cfg: TrainConfig, train_labels: np.ndarray, num_classes: int, device, soft_targets: bool = False):
    """Cross-entropy with the config's label smoothing and (``balance: loss``) class weights.

    With ``soft_targets`` (mixup/cutmix) 2-d targets go through timm's soft-target cross-entropy. Multi-label
    targets (``train_labels`` a 0/1 matrix) get :func:`multilabel_criterion`.
    """
    if train_labels.ndim == 2:
        return multilabel_criterion(train_labels, device)
    weight = None
    if cfg.balance == "loss":
        counts = np.bincount(train_labels, minlength=num_classes).astype(np.float32)
        weight = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(counts), device=device)
    ce = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    if not soft_targets:
        return ce
    from timm.loss import SoftTargetCrossEntropy

    soft = SoftTargetCrossEntropy()
    return lambda out, y: soft(out, y) if y.ndim == 2 else ce(out, y)


#: The largest positive weight of a label (a label on 1 image in 10,000 would otherwise weigh 10,000 times).
MAX_POS_WEIGHT = 100.0


def positive_weights(train_labels: np.ndarray) -> np.ndarray:
    """Each label's positive weight for binary cross-entropy: its negatives over its positives among the training
    images (PyTorch's ``pos_weight``), so a rare label's few positives weigh as much as its many negatives; clipped
    to ``[1 / MAX_POS_WEIGHT, MAX_POS_WEIGHT]`` (a label on no training image: the cap).

    Example:
        >>> positive_weights(np.array([[1, 1], [0, 1], [0, 1], [0, 0]])).tolist()
        [3.0, 0.3333333432674408]
    """
    y = np.asarray(train_labels, np.float64)
    pos = y.sum(0)
    w = (len(y) - pos) / np.maximum(pos, 1e-12)
    return np.clip(w, 1 / MAX_POS_WEIGHT, MAX_POS_WEIGHT).astype(np.float32)


def multilabel_criterion(train_labels: np.ndarray, device) -> nn.Module:
    """Binary cross-entropy on one logit per label, with :func:`positive_weights` against label imbalance."""
    w = positive_weights(train_labels)
    if is_main():
        log(f"[dim]auto[/] loss = binary cross-entropy per label, positive weights from the training labels "
            f"(negatives / positives: {w.min():.2f} .. {w.max():.2f})")
    return nn.BCEWithLogitsLoss(pos_weight=torch.tensor(w, device=device))


def make_schedule(cfg: TrainConfig, epochs: int, steps_per_epoch: int, last_steps: int | None = None) -> Schedule:
    """The config's lr schedule over ``epochs`` epochs (warm-up in epochs, converted to steps), the last one
    ``last_steps`` long when given (a budget's final partial epoch)."""
    total = epochs * steps_per_epoch - (steps_per_epoch - last_steps if last_steps and epochs else 0)
    warm = int(cfg.warmup_epochs * steps_per_epoch) if cfg.scheduler in ("cosine", "plateau", "none") else 0
    if cfg.scheduler == "linear":  # the fast recipe's warm-up: the first 20% of the steps
        warm = int(0.2 * total)
    return Schedule(cfg.scheduler, total, warm, cfg.min_lr_ratio)


def steps_per_epoch(cfg: TrainConfig, n_train: int) -> int:
    """Optimiser steps in an epoch of ``n_train`` images (per rank under DDP; drop_last batches)."""
    n = -(-n_train // world_size())
    return math.ceil(max(1, n // cfg.batch_size if n > cfg.batch_size else 1) / cfg.accumulate)


def build_parts(ctx: Context, model: nn.Module, phase: Phase, budget: Budget | None, *, ddp: bool = True,
                compile: bool | None = None) -> StepParts:
    """Every part of the training step for ``phase``, built once.

    Args:
        ddp: wrap the model for DistributedDataParallel when the process group is up (the planner times one
            process's step on a copy of the model: False).
        compile: ``torch.compile`` the step (None: the config's ``compile``; the planner: False, its steady-state
            gain is what ``nextclass benchmark --compile`` measures).
    """
    cfg = ctx.cfg
    optimizer = build_optimizer(cfg.optimizer, param_groups(model, cfg.weight_decay, phase.lr, phase.layer_decay),
                                phase.lr, cfg.momentum)
    ema = mixup = None
    schedule = make_schedule(cfg, phase.epochs, steps_per_epoch(cfg, len(ctx.rows["train"])), phase.last_steps)
    if cfg.ema:  # weights and BatchNorm statistics averaged
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=ema_decay_for(cfg, schedule.total), device=ctx.device)
    if cfg.mixup > 0 or cfg.cutmix > 0:
        from timm.data import Mixup

        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                      num_classes=len(ctx.classes))
    criterion = make_criterion(cfg, ctx.labels["train"], len(ctx.classes), ctx.device, soft_targets=mixup is not None)
    net = wrap_ddp(model, ctx.device) if ddp else model  # DDP all-reduces gradients; `model` stays the plain module
    if cfg.compile if compile is None else compile:  # the training step only; evaluation and checkpoints use the plain module (shared weights)
        if is_main():
            log("torch.compile: the first training step compiles (10-50 s on a CPU); `nextclass benchmark --compile` "
                "measures whether it pays back")
        net = torch.compile(net)
    scaler = torch.amp.GradScaler("cuda") if ctx.amp_dtype == torch.float16 else None
    return StepParts(net, optimizer, criterion, schedule, ctx.runtime, cfg.accumulate, cfg.clip_grad, scaler, mixup,
                     ema, budget)
