"""``--max-minutes``: plan a run so that the whole job fits a wall-clock budget.

The budget covers everything the user waits for: data preparation (already spent when planning
starts), the training epochs with their validation passes, and the finish step (final val/test
evaluation, robustness, bundle and report). Before the first epoch, :func:`plan_run` measures this
machine's training and evaluation rates on the run's real model, loader and batch size (a few steps
on a throw-away copy of the model), reserves the time the finish step needs, and picks the number of
epochs whose learning-rate schedule *completes* inside what is left. A budget that cannot fit one
epoch fails before training, with the numbers. The budget also stays a hard stop for the training
loop (at the planned end of training), so a slower-than-measured machine still finishes on time.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from nextclass.data.batch_aug import BatchEval
from nextclass.data.loader import BatchLoader
from nextclass.engine.loop import StepParts, predict_logits, train_one_epoch
from nextclass.engine.optim import Schedule, build_optimizer, param_groups
from nextclass.training.batches import train_batches
from nextclass.training.context import Context

__all__ = ["Plan", "plan_run", "measure_rates", "FINISH_OVERHEAD_S", "ROBUSTNESS_S"]

FINISH_OVERHEAD_S = 15.0  # bundle + report rendering (plots, Grad-CAM, speed figure): measured 3-12 s on 2 cores
ROBUSTNESS_S = 20.0  # the robustness pass is capped at ~20 s (metrics.robustness time_budget_s)
SAFETY = 0.03  # plan to end 3 % before the budget: rates measured on a few steps drift a little


@dataclass
class Plan:
    """What the planner measured and chose (saved in ``plan.json`` and logged)."""

    budget_s: float
    spent_s: float  # before training: decode, audit, model build, this measurement
    train_images_per_s: float
    eval_images_per_s: float
    epoch_s: float  # one training epoch plus its validation pass
    reserve_s: float  # the finish step: final evaluation, robustness, bundle, report
    epochs: int
    train_end_s: float  # seconds after the job started at which training must stop

    def describe(self) -> str:
        return (f"budget {self.budget_s / 60:g} min: {self.epochs} epochs at {self.train_images_per_s:,.0f} img/s "
                f"({self.epoch_s:.1f} s each with validation), {self.reserve_s:.0f} s reserved for the final "
                f"evaluation and report, {self.spent_s:.0f} s already spent on data and set-up")

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_rate(ctx: Context, steps: int, warmup: int) -> float:
    """img/s of the real training step (loader, augmentation, forward, backward, optimiser) on a model copy."""
    cfg = ctx.cfg
    model = copy.deepcopy(ctx.model).to(ctx.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(cfg.optimizer, param_groups(model, cfg.weight_decay, cfg.lr), cfg.lr, cfg.momentum)
    parts = StepParts(model, opt, lambda o, y: F.cross_entropy(o, y), Schedule("none", 1), ctx.runtime)
    loader, tf = train_batches(ctx, epoch=0)
    batches = iter(loader)
    take = [next(batches) for _ in range(min(len(loader), warmup + steps))]
    train_one_epoch(parts, take[:warmup], step0=0, batch_transform=tf)
    _sync(ctx.device)
    res = train_one_epoch(parts, take[warmup:], step0=0, batch_transform=tf)
    _sync(ctx.device)
    return res.images / max(res.seconds, 1e-9)


def _eval_rate(ctx: Context, batches: int = 4) -> float:
    """img/s of the evaluation pass (batched eval preprocessing + forward) on training images."""
    model = copy.deepcopy(ctx.model).to(ctx.device)
    bs = max(ctx.cfg.batch_size, 64)
    rows = ctx.rows["train"][: bs * (batches + 1)]
    loader = BatchLoader(ctx.images.array, rows, ctx.labels["train"][: len(rows)], bs, train=False)
    predict_logits(model, [next(iter(loader))], ctx.runtime, batch_transform=BatchEval(ctx.pp))  # warm-up
    _sync(ctx.device)
    t = time.perf_counter()
    lg, _ = predict_logits(model, loader, ctx.runtime, batch_transform=BatchEval(ctx.pp))
    _sync(ctx.device)
    return len(lg) / max(time.perf_counter() - t, 1e-9)


def measure_rates(ctx: Context, steps: int = 8, warmup: int = 2) -> tuple[float, float]:
    """(training img/s, evaluation img/s) on this machine for this run."""
    rng = torch.get_rng_state()
    try:
        return _train_rate(ctx, steps, warmup), _eval_rate(ctx)
    finally:
        torch.set_rng_state(rng)  # measuring must not change what the run draws afterwards


def plan_run(ctx: Context, started: float, minutes: float, max_epochs: int | None = None) -> Plan:
    """The epochs that fit ``minutes`` of wall time counted from ``started`` (see the module docstring).

    Raises:
        ValueError: the budget cannot fit one epoch plus the finish step.

    Example:
        >>> plan = plan_run(ctx, started=t0, minutes=10)  # doctest: +SKIP
        >>> plan.describe()                                # doctest: +SKIP
        'budget 10 min: 19 epochs at 2,700 img/s (...)'
    """
    train_rate, eval_rate = measure_rates(ctx)
    n = {s: len(r) for s, r in ctx.rows.items()}
    per_rank = math.ceil(n["train"] / max(1, ctx.cfg.batch_size)) * ctx.cfg.batch_size
    epoch_s = per_rank / train_rate + n["val"] / eval_rate
    finish_eval = (n["val"] + (n["test"] if ctx.cfg.evaluate_test else 0)) / eval_rate
    reserve = finish_eval + (ROBUSTNESS_S + FINISH_OVERHEAD_S if ctx.cfg.report else 2.0)
    budget = 60.0 * minutes
    spent = time.time() - started
    train_end = budget * (1 - SAFETY) - reserve
    epochs = int((train_end - spent) // epoch_s)
    if epochs < 1:
        raise ValueError(f"max_minutes: a budget of {minutes:g} min cannot fit one epoch: {spent:.0f} s already spent "
                         f"on data and set-up, one epoch takes ~{epoch_s:.0f} s at {train_rate:,.0f} img/s and the "
                         f"final evaluation and report need ~{reserve:.0f} s; give at least "
                         f"{math.ceil((spent + epoch_s + reserve) / 60 / (1 - SAFETY) * 10) / 10:g} min, "
                         f"a smaller --img-size or a smaller model")
    if max_epochs is not None:
        epochs = min(epochs, max_epochs)
    return Plan(budget, spent, train_rate, eval_rate, epoch_s, reserve, epochs, train_end)
