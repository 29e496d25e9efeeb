"""A training phase: a stretch of epochs with one optimiser setup (``scratch``, ``finetune`` or ``probe``).

:func:`nextclass.training.step.build_parts` makes every part of the step in one place (optimiser, schedule, loss,
EMA, mixup, grad scaler, DDP wrapper, torch.compile); :class:`TrainPhase` runs the epochs: resume from
``checkpoints/last``, one epoch, validation, history row, best/last checkpoints, early stopping and
the time budget. ``state`` is the run's JSON state (``epoch``, ``best``, ``best_epoch``, ``stopped``...)
that lives in the checkpoint, so a killed run resumes at the next epoch and ends where an
uninterrupted one would: each epoch's data order and augmentation depend only on ``(seed, epoch)``.
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import torch
from torch import nn

from nextclass.dist import broadcast_object, is_main, rank, world_size
from nextclass.engine.budget import Budget
from nextclass.engine.checkpoint import load_checkpoint, save_checkpoint
from nextclass.engine.loop import EpochResult, StepParts, loss_and_acc, reduce_epoch, train_one_epoch
from nextclass.training.batches import split_logits, train_batches
from nextclass.training.context import Context
from nextclass.training.defaults import ema_decay_for
from nextclass.training.history import epoch_row, read_history, write_history
from nextclass.training.plan import save_plan
from nextclass.training.replan import replan
from nextclass.training.step import Phase, build_parts, make_criterion, make_schedule, steps_per_epoch
from nextclass.utils import log, progress_bar

__all__ = ["Phase", "TrainPhase", "build_parts", "make_criterion", "make_schedule", "is_better", "within_noise", "improves",
           "pick_within_noise", "steps_per_epoch"]


def is_better(monitor: str, new: float, best: float | None) -> bool:
    """Whether ``new`` improves on ``best`` for ``monitor`` (val_acc: higher; val_loss: lower)."""
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return not math.isnan(new)
    return new > best if monitor == "val_acc" else new < best


def _se(acc: float, n_val: int) -> float:
    """One standard error of a val accuracy ``acc`` measured on ``n_val`` images (0 without images)."""
    return math.sqrt(max(acc * (1 - acc), 0.0) / n_val) if n_val else 0.0


def improves(monitor: str, metric: float, loss: float, state: dict, n_val: int, crossing: bool = False) -> bool:
    """Whether this epoch becomes the best checkpoint: a better ``monitor``, or (val_acc) :func:`within_noise` of the
    best with a lower loss. ``crossing``: the best comes from an earlier phase (a two-phase run's probe, the cheap
    strong baseline), which a later phase replaces only by beating its val accuracy by more than one standard error.

    Measured (photo-like ``upscaled`` set, 120 val images): the first fine-tuning epoch beat the probe by one val image
    (0.833 vs 0.825) and became the model, 0.781 held-out against the probe's 0.794; on ``photo96`` fine-tuning beat
    the probe by 5.8 val points and kept its +3.8 held-out.

    Example:
        >>> improves("val_acc", 0.833, 0.5, {"best": 0.825, "best_loss": 0.8}, 120, crossing=True)
        False
        >>> improves("val_acc", 0.533, 1.6, {"best": 0.475, "best_loss": 1.6}, 120, crossing=True)
        True
    """
    best = state.get("best")
    if crossing and monitor == "val_acc" and best is not None and not math.isnan(best):
        return metric > best + _se(best, n_val)
    tie = monitor == "val_acc" and within_noise(metric, loss, best, state.get("best_loss"), n_val)
    return is_better(monitor, metric, best) or tie


def within_noise(acc: float, loss: float, best: float | None, best_loss: float | None, n_val: int) -> bool:
    """Whether a later epoch with val accuracy ``acc`` and val loss ``loss`` takes the best checkpoint's place though
    its accuracy is not higher: its loss is lower and its accuracy is below the best's by less than one standard
    error of a val accuracy (``sqrt(p (1 - p) / n_val)``; 0 when ``n_val`` is 0: an exact tie only).

    Measured (Fashion-MNIST, 10 minutes, 5,000 val images): the best epoch by accuracy alone was epoch 20 of 24
    (0.9482 vs 0.9480, one image), whose test accuracy was 0.9430; the last epoch, lower in val loss, scored 0.9455.
    A decaying schedule's later epochs are not worse for a difference val cannot resolve.

    Example:
        >>> within_noise(0.9480, 0.2275, 0.9482, 0.2281, 5000), within_noise(0.9400, 0.2275, 0.9482, 0.2281, 5000)
        (True, False)
    """
    if best is None or best_loss is None or math.isnan(acc) or math.isnan(best):
        return False
    return acc >= best - _se(best, n_val) and loss < best_loss


def pick_within_noise(accs: list[float], losses: list[float], n_val: int) -> int:
    """Which of several settings fitted on the same data val picks (a probe's L2 strengths): the lowest val loss
    among those whose accuracy is within one standard error of the best accuracy (the rule :func:`within_noise`
    applies to epochs, made order-free). On 5,000 val images the accuracy decides; on 120 it rarely can.

    Measured (photo-like sets, 120 val images, 1,000 held-out): held-out accuracy is flat across C = 1e-3 .. 100
    (0.78-0.79 on ``upscaled``, 0.48-0.49 on ``photo96``) while val accuracy wanders by 1-4 images and picked
    C = 1e-3 or 10 by chance; val loss is smooth in C and its minimum (C = 0.01 on both sets) sits where held-out
    loss is lowest too.

    Example:
        >>> pick_within_noise([0.82, 0.80, 0.79], [0.81, 0.56, 0.71], 120)  # one SE of 0.82 on 120 images: 3.5 points
        1
        >>> pick_within_noise([0.95, 0.94, 0.93], [0.30, 0.20, 0.10], 5000)
        0
    """
    ok = [i for i, a in enumerate(accs) if not math.isnan(a)]
    if not ok:
        return -1
    top = max(accs[i] for i in ok)
    near = [i for i in ok if accs[i] >= top - _se(top, n_val) and not math.isnan(losses[i])]
    return min(near, key=lambda i: (losses[i], -accs[i])) if near else max(ok, key=lambda i: accs[i])


class _First:
    """The first ``n`` batches of a loader (the final partial epoch of a budgeted run)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, min(n, len(loader))

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)


class TrainPhase:
    """Runs one :class:`Phase` of a run on ``model`` (see the module docstring).

    Example:
        >>> best = TrainPhase(ctx, model, Phase("scratch", 10, 2e-3), state={}).run()  # doctest: +SKIP
    """

    def __init__(self, ctx: Context, model: nn.Module, phase: Phase, state: dict):
        self.ctx, self.model, self.phase, self.state = ctx, model, phase, state
        self.cfg = ctx.cfg
        model.to(ctx.device)
        if self.cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        left = None if ctx.train_seconds is None else (ctx.train_seconds - float(state.get("elapsed", 0.0))) / 60
        self.budget = Budget(left, synced=True)
        if self.planned and ctx.last_steps:  # --max-minutes: the plan's final partial epoch
            phase.last_steps = ctx.last_steps
        self.parts = self._build_parts()
        self.steps = steps_per_epoch(self.cfg, len(ctx.rows["train"]))
        self.last = ctx.run.last_checkpoint
        self.forward_model = self.parts.ema.module if self.parts.ema is not None else model  # what is evaluated

    # Every phase runs on this class; the probe (:class:`nextclass.training.probe.ProbePhase`) overrides only
    # where its batches come from (cached features) and what its step is built of (the head alone).
    save_last_every_epoch = True  # the probe's whole run takes seconds: it is redone rather than resumed
    planned = True  # --max-minutes plans this phase's epochs (the probe's cost is part of the plan's set-up)

    def _build_parts(self) -> StepParts:
        return build_parts(self.ctx, self.model, self.phase, self.budget)

    def _resume(self) -> int:
        """The epoch to start at: after the last checkpoint of this phase, else the phase's first."""
        start, st = self.phase.epoch_offset, self.state
        if st.get("phase") == self.phase.name and self.last.exists() and st.get("epoch", 0) > start:
            ema = self.parts.ema.module if self.parts.ema is not None else None
            saved = load_checkpoint(self.last, self.model, self.parts.optimizer, ema)
            self.parts.schedule.state.update(saved.get("schedule", {}))
            st.update(saved)
            start = saved["epoch"]
            log(f"resumed {self.phase.name} at epoch {start} from {self.last}")
        return start

    def run(self, progress: bool = True) -> nn.Module:
        """Train the phase's remaining epochs; returns the model to evaluate (the EMA copy when on)."""
        start = self._resume()
        hist_path = self.ctx.run.history
        self.history = [r for r in read_history(hist_path) if int(r["epoch"]) <= start]
        self.t0 = time.time() - float(self.state.get("elapsed", 0.0))
        epoch, walls = start, []
        with progress_bar(progress and is_main()) as bar:
            while epoch < self.phase.epoch_offset + self.phase.epochs and not self.state.get("stopped"):
                t_epoch = time.time()
                res, val = self._epoch(epoch, bar)
                self._record(epoch, res, val)
                if is_main():
                    write_history(hist_path, self.history)
                walls.append(time.time() - t_epoch)  # the whole epoch: training, validation, checkpoints, history
                if self.ctx.plan is not None:
                    self._replan(epoch + 1 - self.phase.epoch_offset, float(np.median(walls[-3:])))
                for callback in self.ctx.callbacks:  # tracking, Optuna pruning (may raise to stop the run)
                    callback(self.history[-1], self.state)
                epoch += 1
        return self.forward_model

    def _replan(self, done: int, epoch_s: float) -> None:
        """--max-minutes: correct the planned epochs with the measured time per epoch (see training.replan)."""
        plan = broadcast_object(replan(self.ctx.plan, done, epoch_s, time.time() - self.ctx.started))
        if plan == self.ctx.plan:  # (under DDP a broadcast copy)
            return
        changed = plan.epochs != self.ctx.plan.epochs
        self.ctx.plan, self.ctx.last_steps = plan, plan.last_steps
        self.phase.epochs, self.phase.last_steps = plan.epochs, plan.last_steps
        schedule, step = self.parts.schedule, done * self.steps
        fresh = make_schedule(self.cfg, plan.epochs, self.steps, plan.last_steps)  # a first plan of this length
        if done == 1 or step < schedule.warmup:  # the decay has barely started: the curve a first plan would draw
            schedule.total = fresh.total
            schedule.warmup = fresh.warmup if done == 1 else min(schedule.warmup, fresh.warmup)
            schedule.state.pop("anchor", None)
        else:  # the decay goes on from where it is to the floor at the new last step: no jump in the lr
            schedule.retime(step, fresh.total)
        if self.parts.ema is not None:
            self.parts.ema.decay = ema_decay_for(self.cfg, schedule.total)
        save_plan(self.ctx, plan)
        self.cfg = self.ctx.cfg
        if changed:
            log(f"[bold]plan[/] re-planned: {plan.replanned}")

    def _epoch(self, epoch: int, bar) -> tuple[EpochResult, tuple[float, float]]:
        """Train one epoch, then evaluate on val: (train result, (val loss, val accuracy))."""
        cfg, ctx = self.cfg, self.ctx
        torch.manual_seed(cfg.seed * 1000 + epoch + 7919 * rank())  # dropout etc.: (seed, epoch, rank) only
        loader, batch_tf = train_batches(ctx, epoch, shard=(rank(), world_size()))
        end = self.phase.epoch_offset + self.phase.epochs
        if epoch == end - 1 and self.phase.last_steps:  # the budget's remainder: the final epoch's first steps
            loader = _First(loader, self.phase.last_steps * cfg.accumulate)
        res = train_one_epoch(self.parts, loader, step0=(epoch - self.phase.epoch_offset) * self.steps,
                              batch_transform=batch_tf, progress=bar, desc=f"{self.phase.name} {epoch + 1}/{end}")
        res = reduce_epoch(res)  # DDP: global loss/acc/images over all ranks
        if not len(ctx.rows["val"]):
            return res, (float("nan"), float("nan"))
        return res, loss_and_acc(*split_logits(ctx, self.forward_model, "val", bar))

    def _record(self, epoch: int, res: EpochResult, val: tuple[float, float]) -> None:
        """Schedule, history, best/last checkpoints, early stopping and budget verdict for one epoch."""
        cfg, st = self.cfg, self.state
        metric = val[1] if cfg.monitor == "val_acc" else val[0]
        self.parts.schedule.epoch_end(metric, cfg.monitor == "val_acc")
        lr = self.parts.optimizer.param_groups[0]["lr"]
        self.history.append(epoch_row(epoch + 1, self.phase.name, res, val, lr, time.time() - self.t0))
        st.update(epoch=epoch + 1, phase=self.phase.name, schedule=dict(self.parts.schedule.state),
                  elapsed=time.time() - self.t0)
        n_noise = 0 if self.ctx.source.multilabel else len(self.ctx.rows["val"])  # mAP: exact ties only
        crossing = 0 < self.phase.epoch_offset and st.get("best_epoch", 0) <= self.phase.epoch_offset
        improved = improves(cfg.monitor, metric, val[0], st, n_noise, crossing) or not len(self.ctx.rows["val"])
        if improved:
            st.update(best=metric, best_loss=val[0], best_epoch=epoch + 1, bad_epochs=0)
            if is_main():
                save_checkpoint(self.ctx.run.best_checkpoint, self.forward_model, None, dict(st))
        else:
            st["bad_epochs"] = st.get("bad_epochs", 0) + 1
        if cfg.patience and st["bad_epochs"] >= cfg.patience:
            st["stopped"] = f"early stop: no {cfg.monitor} improvement for {cfg.patience} epochs"
        if res.stopped_early or self.budget.exceeded():
            st["stopped"] = f"time budget reached (--max-minutes {cfg.max_minutes:g}: training ends here to leave time for the evaluation)"
        if is_main():  # DDP: every rank holds the same state (metrics are reduced); rank 0 writes
            if self.save_last_every_epoch:
                ema = self.parts.ema.module if self.parts.ema is not None else None
                save_checkpoint(self.last, self.model, self.parts.optimizer, dict(st), ema)
            self._log(epoch, res, val, improved)

    def _log(self, epoch: int, res: EpochResult, val: tuple[float, float], improved: bool) -> None:
        end = self.phase.epoch_offset + self.phase.epochs
        acc, vacc = ("exact", "mAP") if self.ctx.source.multilabel else ("acc", "acc")  # multi-label: val_acc = mAP
        log(f"{self.phase.name} epoch {epoch + 1}/{end}: train loss {res.loss:.4f} {acc} {res.acc:.4f} | val loss "
            f"{val[0]:.4f} {vacc} {val[1]:.4f} | {self.history[-1]['images_per_second']} img/s, {res.seconds:.1f}s"
            + (" [green]*best*[/]" if improved else ""))
        if self.state.get("stopped"):
            log(f"[yellow]{self.state['stopped']}[/]")
