"""The linear probe: the head of a model trained on cached backbone features, in seconds.

Every train/val image goes through the frozen backbone once (:mod:`nextclass.training.features`);
the head then trains on the cached tensors for ``epochs`` epochs with the config's optimiser,
schedule, label smoothing, balance and patience. History rows have phase ``probe``; the best epoch
on val is checkpointed (full model) like any other epoch. The backbone is never run here, so its
BatchNorm statistics cannot drift.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from nextclass.engine.budget import Budget
from nextclass.engine.checkpoint import save_checkpoint
from nextclass.engine.loop import EpochResult, loss_and_acc
from nextclass.engine.optim import build_optimizer, param_groups
from nextclass.models.freeze import freeze_backbone, unfreeze
from nextclass.models.heads import head_from_trunk, head_logits
from nextclass.training.context import Context
from nextclass.training.history import epoch_row, write_history
from nextclass.training.phase import is_better, make_criterion, make_schedule
from nextclass.utils import log

__all__ = ["probe_phase", "Probe"]


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


class Probe:
    """The head-only training loop on cached features (optimiser, schedule and loss built once)."""

    def __init__(self, ctx: Context, model: nn.Module, feats, epochs: int, lr: float):
        cfg = ctx.cfg
        self.ctx, self.model, self.feats, self.epochs = ctx, model, feats, epochs
        self.optimizer = build_optimizer(cfg.optimizer, param_groups(model, cfg.weight_decay, lr), lr, cfg.momentum)
        n = len(ctx.rows["train"])
        self.steps = n // cfg.batch_size if n > cfg.batch_size else 1  # drop_last, as the image loop does
        self.schedule = make_schedule(cfg, epochs, self.steps)
        self.criterion = make_criterion(cfg, ctx.labels["train"], len(ctx.classes), ctx.device)
        self.budget = Budget(None if ctx.train_seconds is None else ctx.train_seconds / 60)

    def epoch(self, epoch: int) -> tuple[float, float, int, float]:
        """One pass over the cached training features: (loss, accuracy, images, seconds)."""
        cfg, device = self.ctx.cfg, self.ctx.device
        y_all = torch.as_tensor(self.ctx.labels["train"], dtype=torch.long)
        order, view = _epoch_order(cfg, self.ctx.labels["train"], self.feats.train.shape[0], epoch)
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout depends only on (seed, epoch), as in image epochs
        self.model.train()
        total, correct, seen, t0 = 0.0, 0, 0, time.time()
        self.optimizer.zero_grad(set_to_none=True)
        for b in range(self.steps):
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x, y = self.feats.train[view[idx], idx].to(device).float(), y_all[idx].to(device)
            self.schedule.apply(self.optimizer, epoch * self.steps + b)
            out = head_from_trunk(self.model, x)
            loss = self.criterion(out, y)
            loss.backward()
            if cfg.clip_grad:
                nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.clip_grad)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            total, seen = total + float(loss.detach()) * len(y), seen + len(y)
            correct += int((out.detach().argmax(1) == y).sum())
            if self.budget.exceeded():
                break
        return total / max(seen, 1), correct / max(seen, 1), seen, time.time() - t0

    def validate(self) -> tuple[float, float]:
        if not len(self.ctx.rows["val"]):
            return float("nan"), float("nan")
        return loss_and_acc(head_logits(self.model, self.feats.val, self.ctx.device), self.ctx.labels["val"])

    def run(self, state: dict) -> None:
        """All epochs: history rows, best checkpoint on val, early stopping, time budget."""
        cfg, ctx = self.ctx.cfg, self.ctx
        history: list[dict] = []  # the probe is always a run's first phase (a resumed probe is simply redone: seconds)
        state.update(best=None, best_epoch=None, bad_epochs=0, stopped=None)
        t_run0 = time.time()
        for epoch in range(self.epochs):
            loss, acc, seen, secs = self.epoch(epoch)
            val = self.validate()
            metric = val[1] if cfg.monitor == "val_acc" else val[0]
            self.schedule.epoch_end(metric, cfg.monitor == "val_acc")
            res = EpochResult(loss, acc, seen, secs)
            history.append(epoch_row(epoch + 1, "probe", res, val, self.optimizer.param_groups[0]["lr"], time.time() - t_run0))
            state.update(epoch=epoch + 1, phase="probe", elapsed=float(state.get("elapsed", 0.0)) + secs)
            if is_better(cfg.monitor, metric, state.get("best")) or not len(ctx.rows["val"]):
                state.update(best=metric, best_epoch=epoch + 1, bad_epochs=0)
                save_checkpoint(ctx.run_dir / "checkpoints" / "best.safetensors", self.model, None, dict(state))
            else:
                state["bad_epochs"] = state.get("bad_epochs", 0) + 1
            write_history(ctx.run_dir / "history.csv", history)
            if self._should_stop(state):
                break
        best = state.get("best")
        log(f"probe: {epoch + 1} epochs on cached features in {time.time() - t_run0:.1f}s; best {cfg.monitor} "
            f"{best if best is None else round(best, 4)} at epoch {state.get('best_epoch')}")

    def _should_stop(self, state: dict) -> bool:
        cfg = self.ctx.cfg
        if cfg.patience and state["bad_epochs"] >= cfg.patience:
            log(f"[yellow]probe: early stop, no {cfg.monitor} improvement for {cfg.patience} epochs[/]")
            return True
        if self.budget.exceeded():
            log(f"[yellow]probe: time budget of {cfg.max_minutes} min reached[/]")
            return True
        return False


def probe_phase(ctx: Context, model: nn.Module, state: dict, epochs: int, lr: float, progress: bool = True) -> nn.Module:
    """Train only the head of ``model`` on cached backbone features for ``epochs`` epochs.

    Writes history rows (phase ``probe``, epochs ``1..epochs``), ``checkpoints/best.safetensors``
    (full model) whenever val improves, and ``last.safetensors`` at the end with
    ``state["probe_done"] = True``.

    Example:
        >>> model = probe_phase(ctx, model, {}, epochs=10, lr=1e-3)  # doctest: +SKIP
    """
    from nextclass.training.features import cached_features

    feats = cached_features(ctx, model, progress)
    ctx.features = feats  # the finish step scores val/test from these too (no second backbone pass)
    model.to(ctx.device)
    undo = freeze_backbone(model, bn=False)  # only head parameters reach the optimiser
    try:
        Probe(ctx, model, feats, epochs, lr).run(state)
    finally:
        unfreeze(model, undo)
    state.update(phase="probe", epoch=epochs, probe_done=True, feature_cache="hit" if feats.hit else "built",
                 feature_key=feats.key, feature_seconds=round(feats.seconds, 3))
    save_checkpoint(ctx.run_dir / "checkpoints" / "last.safetensors", model, None, dict(state))
    return model
