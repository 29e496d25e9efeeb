"""The linear probe: the head of a model trained on cached backbone features, in seconds.

Every train/val image goes through the frozen backbone once (:mod:`nextclass.training.features`);
the head then trains on the cached tensors for ``epochs`` epochs with the config's optimiser,
schedule, label smoothing, balance and patience. It runs on the same loop as every phase
(:class:`ProbePhase` is a :class:`~nextclass.training.phase.TrainPhase` whose batches are cached features and
whose step is the head alone), so history rows (phase ``probe``), the best checkpoint on val (full model),
the val-loss tie-break, early stopping and the time budget follow the same rules. The backbone is never run
here, so its BatchNorm statistics cannot drift.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from nextclass.dist import rank
from nextclass.engine.checkpoint import save_checkpoint
from nextclass.engine.loop import Device, EpochResult, StepParts, loss_and_acc, train_one_epoch
from nextclass.engine.optim import build_optimizer, param_groups
from nextclass.models.freeze import freeze_backbone, unfreeze
from nextclass.models.heads import head_from_trunk, head_logits
from nextclass.training.context import Context
from nextclass.training.linear_probe import fit_linear_probe, is_linear_head
from nextclass.training.phase import Phase, TrainPhase
from nextclass.training.step import make_criterion, make_schedule
from nextclass.utils import log

__all__ = ["probe_phase", "ProbePhase"]


def _epoch_order(cfg, train_labels: np.ndarray, views: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample order and view per sample for one epoch; depends only on (seed, epoch), like make_loader."""
    n = len(train_labels)
    g = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)
    if cfg.balance == "sampler":
        counts = np.bincount(train_labels).astype(float)
        w = torch.as_tensor(1.0 / np.maximum(counts[train_labels], 1))
        order = torch.multinomial(w, n, replacement=True, generator=g)
    else:
        order = torch.randperm(n, generator=g)
    view = torch.randint(0, views, (n,), generator=g) if views > 1 else torch.zeros(n, dtype=torch.long)
    return order, view


class HeadOnly(nn.Module):
    """``model``'s head as a module of its own: trunk features in, logits out (the probe's step calls it)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return head_from_trunk(self.model, t)


class FeatureBatches:
    """An epoch of cached training features: batches of (features, labels) in the order of ``(seed, epoch)``,
    one augmented view per image (view 0: the eval view), drop_last as the image loader does."""

    def __init__(self, ctx: Context, feats: torch.Tensor, epoch: int, steps: int):
        self.ctx, self.feats, self.epoch, self.steps = ctx, feats, epoch, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        cfg, labels = self.ctx.cfg, self.ctx.labels["train"]
        order, view = _epoch_order(cfg, labels, self.feats.shape[0], self.epoch)
        y_all = torch.as_tensor(labels, dtype=torch.long if labels.ndim == 1 else torch.float32)
        for b in range(self.steps):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            yield self.feats[view[idx], idx].float(), y_all[idx]


class ProbePhase(TrainPhase):
    """The probe on the loop every phase runs on: only the batches and the step's parts differ."""

    save_last_every_epoch = False  # seconds in all: a killed probe is redone; last is written at its end

    def __init__(self, ctx: Context, model: nn.Module, phase: Phase, state: dict, feats):
        self.feats = feats
        super().__init__(ctx, model, phase, state)
        n, bs = len(ctx.rows["train"]), ctx.cfg.batch_size
        self.steps = n // bs if n > bs else 1  # no accumulation on features

    def _build_parts(self) -> StepParts:
        """Optimiser over the head's parameters, the config's schedule and loss; no EMA, mixup, DDP or compile
        (the inputs are feature vectors: fp32, no channels_last)."""
        cfg, ctx, lr = self.cfg, self.ctx, self.phase.lr
        n, bs = len(ctx.rows["train"]), cfg.batch_size
        optimizer = build_optimizer(cfg.optimizer, param_groups(self.model, cfg.weight_decay, lr), lr, cfg.momentum)
        schedule = make_schedule(cfg, self.phase.epochs, n // bs if n > bs else 1)
        criterion = make_criterion(cfg, ctx.labels["train"], len(ctx.classes), ctx.device)
        return StepParts(HeadOnly(self.model), optimizer, criterion, schedule, Device(ctx.device), 1, cfg.clip_grad,
                         budget=self.budget)

    def _epoch(self, epoch: int, bar) -> tuple[EpochResult, tuple[float, float]]:
        torch.manual_seed(self.cfg.seed * 1000 + epoch + 7919 * rank())  # dropout: (seed, epoch, rank) only
        batches = FeatureBatches(self.ctx, self.feats.train, epoch, self.steps)
        res = train_one_epoch(self.parts, batches, step0=(epoch - self.phase.epoch_offset) * self.steps, progress=bar,
                              desc=f"probe {epoch + 1}/{self.phase.epoch_offset + self.phase.epochs}")
        if not len(self.ctx.rows["val"]):
            return res, (float("nan"), float("nan"))
        return res, loss_and_acc(head_logits(self.model, self.feats.val, self.ctx.device), self.ctx.labels["val"])

    planned = False

    def _replan(self, done: int, epoch_s: float) -> None:
        """The --max-minutes plan is of image epochs; the probe's few seconds are part of its set-up time."""

    def _log(self, epoch: int, res: EpochResult, val: tuple[float, float], improved: bool) -> None:
        if self.state.get("stopped"):
            log(f"[yellow]probe: {self.state['stopped']}[/]")


def probe_phase(ctx: Context, model: nn.Module, state: dict, epochs: int, lr: float, progress: bool = True) -> nn.Module:
    """Train only the head of ``model`` on cached backbone features for ``epochs`` epochs.

    A linear head is fitted by logistic regression to convergence, its L2 strength chosen on val
    (:mod:`nextclass.training.linear_probe`: one history row per strength tried); an MLP or attention head trains
    ``epochs`` epochs on the loop every phase runs on (:class:`ProbePhase`). Either way the history rows have phase
    ``probe``, ``checkpoints/best.safetensors`` holds the best head on val, and ``last.safetensors`` is written at
    the end with ``state["probe_done"] = True``; ``state["epoch"]`` is the number of probe rows.

    Example:
        >>> model = probe_phase(ctx, model, {}, epochs=10, lr=1e-3)  # doctest: +SKIP
    """
    from nextclass.training.features import cached_features

    t_start, elapsed = time.time(), float(state.get("elapsed", 0.0))
    feats = cached_features(ctx, model, progress)
    ctx.features = feats  # the finish step scores val/test from these too (no second backbone pass)
    model.to(ctx.device)
    undo = freeze_backbone(model, bn=False)  # only head parameters reach the optimiser
    t0 = time.time()
    try:
        if is_linear_head(model):  # a convex fit to convergence, C chosen on val (training/linear_probe.py)
            fit_linear_probe(ctx, model, feats, state)
        else:  # mlp / attention heads: epochs on the loop every phase runs on
            ProbePhase(ctx, model, Phase("probe", epochs, lr), state, feats).run(progress)
    finally:
        unfreeze(model, undo)
    best = state.get("best")
    log(f"probe: {state.get('epoch')} rows on cached features in {time.time() - t0:.1f}s; best {ctx.cfg.monitor} "
        f"{best if best is None else round(best, 4)} at row {state.get('best_epoch')}")
    state.pop("stopped", None)  # an early stop of the probe ends the probe, not a two-phase run's fine-tuning
    state["elapsed"] = elapsed + time.time() - t_start  # embedding included: the budget counts the whole probe
    state.update(phase="probe", probe_done=True, probe_rows=int(state.get("epoch") or epochs),
                 feature_cache="hit" if feats.hit else "built",
                 feature_key=feats.key, feature_seconds=round(feats.seconds, 3))
    save_checkpoint(ctx.run.last_checkpoint, model, None, dict(state))
    return model
