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
import dataclasses
import itertools
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from nextclass.config import save_config
from nextclass.dist import is_main, world_size
from nextclass.engine.checkpoint import save_checkpoint
from nextclass.engine.loop import train_one_epoch
from nextclass.evaluation.scorer import predict_rows
from nextclass.training.batches import train_batches
from nextclass.training.context import Context
from nextclass.training.defaults import epochs_cap, settle_budget
from nextclass.training.probe_cost import PROBE_FIT_S, probe_fit_s
from nextclass.training.scoring import eval_images, scoring_of
from nextclass.training.step import Phase, build_parts, steps_per_epoch
from nextclass.utils import atomic_write_json, log

__all__ = ["Plan", "BudgetTooSmall", "plan_run", "save_plan", "measure_rates", "choose_strategy", "probe_views", "FINISH_OVERHEAD_S",
           "ROBUSTNESS_S", "MIN_FINETUNE_EPOCHS"]

FINISH_OVERHEAD_S = 10.0  # bundle + report (plots, Grad-CAM, speed figure): 2-6 s measured 2026-12-06 evening, 12 s at most before
ROBUSTNESS_S = 20.0  # the robustness pass is capped at ~20 s (metrics.robustness time_budget_s)
SAFETY = 0.01  # plan to end 1 % before the budget: the finish step's reserve is an upper estimate (bench/RESULTS.md)
MIN_LAST_FRACTION = 0.2  # a final partial epoch shorter than this is not worth its validation pass
#: recipe auto: the probe is kept alone when fewer fine-tuning epochs than this fit after it. One: the plan fits the
#: warm-up and decay into the epochs it plans, and fine-tuning replaces the probe only by beating it beyond val's
#: noise (training.phase.improves). Measured at 2 minutes on 600 photo-like images (it was 3, which kept the probe
#: alone with augmented views): one planned epoch took held-out accuracy 0.485 -> 0.545 on ``photo96``; on
#: ``upscaled96`` it did not beat the probe on val, which stayed the model (0.789, = the probe alone).
MIN_FINETUNE_EPOCHS = 1
MEASURE_S = 8.0  # the timed training steps stop after this long (at least two steps)
#: The most augmented views a probe kept alone may embed with the rest of its budget. Measured on 600 photo-like
#: images (2 min): 4 views took held-out accuracy 0.480 -> 0.510; each view embeds the training set once more.
MAX_PROBE_VIEWS = 8
VIEWS_SHARE = 0.8  # the share of the rest the views may take (an augmented pass costs a little more than eval's)


class BudgetTooSmall(ValueError):
    """The budget cannot fit the run as configured (the message has the numbers; ``needed_s``: the least it would)."""

    def __init__(self, message: str, needed_s: float):
        super().__init__(message)
        self.needed_s = needed_s


@dataclass
class Plan:
    """What the planner measured and chose (saved in ``plan.json`` and logged)."""

    budget_s: float
    spent_s: float  # before training: decode, audit, model build, this measurement
    train_images_per_s: float
    eval_images_per_s: float
    epoch_s: float  # one training epoch plus its validation pass and checkpoints
    reserve_s: float  # the finish step: final evaluation, robustness, bundle, report
    epochs: int
    train_end_s: float  # seconds after the job started at which training must stop
    max_epochs: int | None = None  # the user's --epochs, a cap on the plan
    replanned: str | None = None  # set when the first real epoch corrected the estimate
    probe_s: float = 0.0  # a two-phase or probe run: embedding every image once + the logistic fit
    strategy: str = ""  # the recipe the plan runs (recipe auto: chosen here)
    candidates: list = field(default_factory=list)  # what each strategy costs and whether it fits
    why: str = ""
    steps: int = 0  # optimiser steps in a whole epoch
    fixed_s: float = 0.0  # the part of an epoch that does not shrink with its steps: validation and checkpoints
    last_steps: int | None = None  # the final epoch stops after this many steps (the budget's remainder)
    probe_views: int = 0  # a probe kept alone: augmented views of each training image its rest buys (tta_views)
    fitted: str = ""  # what was given up so the run fits the budget at all (training.budget_fit), in words

    def describe(self) -> str:
        views = f" with {self.probe_views} augmented view(s) of each training image" if self.probe_views else ""
        probe = f"probe {self.probe_s:.0f} s (embedding{views} + logistic fit), " if self.probe_s else ""
        what = (f"{self.strategy}: " if self.strategy else "") + (
            f"{probe}{self.epochs} epochs{self._last()} at {self.train_images_per_s:,.0f} img/s ({self.epoch_s:.1f} s each with "
            f"validation)" if self.strategy != "linear-probe" else f"{probe}no fine-tuning epoch")
        return (f"budget {self.budget_s / 60:g} min: {what}, {self.reserve_s:.0f} s reserved for the final "
                f"evaluation and report, {self.spent_s:.0f} s already spent on data and set-up"
                + (f" ({self.why})" if self.why else ""))

    def _last(self) -> str:
        return f" (the last one {self.last_steps} of {self.steps} steps)" if self.last_steps else ""

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Timed:
    """Batches for a measurement that stops after ``limit_s`` (at least one step): a pretrained backbone at 224 px
    takes seconds a step on a CPU, and the measurement is paid out of the user's budget."""

    def __init__(self, batches: list, limit_s: float):
        self.batches, self.limit_s = batches, limit_s

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        t0 = time.perf_counter()
        for i, b in enumerate(self.batches):
            if i >= 1 and time.perf_counter() - t0 > self.limit_s:
                return
            yield b


def _train_rate(ctx: Context, steps: int, warmup: int) -> tuple[float, float]:
    """img/s of the real training step (loader, augmentation, forward, backward, optimiser) on a model copy,
    and the seconds an epoch's two checkpoints (last, best) take to write."""
    cfg = ctx.cfg
    model = copy.deepcopy(ctx.model).to(ctx.device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # the run's own step (loss with label smoothing, EMA, mixup, accumulation, clipping), on a copy of the model
    parts = build_parts(ctx, model, Phase(cfg.recipe, max(1, epochs_cap(cfg) or 1), cfg.lr), None, ddp=False, compile=False)
    opt = parts.optimizer
    take, epoch = [], 0
    while len(take) < warmup + steps:  # a small training set: several (cheap) passes of its loader
        loader, tf = train_batches(ctx, epoch=epoch)
        take += list(itertools.islice(iter(loader), warmup + steps - len(take)))
        epoch += 1
    train_one_epoch(parts, take[:warmup], step0=0, batch_transform=tf)  # first-call allocations: paid, not timed
    _sync(ctx.device)
    res = train_one_epoch(parts, _Timed(take[warmup:], MEASURE_S), step0=0, batch_transform=tf)
    _sync(ctx.device)
    tmp = ctx.run.checkpoints / ".plan-timing.safetensors"
    t = time.perf_counter()
    save_checkpoint(tmp, model, opt, {})
    save_checkpoint(tmp, model, None, {})
    ckpt_s = time.perf_counter() - t
    tmp.unlink(missing_ok=True)
    return res.images / max(res.seconds, 1e-9), ckpt_s


def _eval_rate(ctx: Context, batches: int = 2) -> float:
    """img/s of the scorer's evaluation pass (batched eval preprocessing + forward) on training images."""
    model = copy.deepcopy(ctx.model).to(ctx.device)
    s = scoring_of(ctx)
    images = eval_images(ctx, "train", keep=np.arange(min(len(ctx.rows["train"]), s.batch_size * (batches + 1))))
    warm = dataclasses.replace(images, rows=images.rows[:s.batch_size], labels=images.labels[:s.batch_size])
    predict_rows(model, warm, s)  # warm-up
    _sync(ctx.device)
    t = time.perf_counter()
    lg, _ = predict_rows(model, images, s)
    _sync(ctx.device)
    return len(lg) / max(time.perf_counter() - t, 1e-9)


def measure_rates(ctx: Context, steps: int = 8, warmup: int = 1) -> tuple[float, float, float]:
    """(training img/s, evaluation img/s, checkpoint seconds per epoch) on this machine for this run."""
    rng = torch.get_rng_state()
    try:
        if ctx.cfg.recipe == "linear-probe":  # a chosen probe trains no image epoch: its step is not timed (the
            evaluation = _eval_rate(ctx)      # rate stands at a third of evaluation's, forward + backward)
            return evaluation / 3, evaluation, 0.0
        train, ckpt = _train_rate(ctx, steps, warmup)
        return train, _eval_rate(ctx), ckpt
    finally:
        torch.set_rng_state(rng)  # measuring must not change what the run draws afterwards


def _finish_eval_s(ctx: Context, n: dict, eval_rate: float) -> float:
    """Final val/test passes (x (1 + views) with TTA); with a neighbour index, its pass over training images and
    one embedding pass over val (the ``unfamiliar`` threshold) and over the last split (the kNN second opinion)."""
    from nextclass.metrics.tta import views_from_config

    cfg = ctx.cfg
    passes = 1 + (len(views_from_config(cfg)) if cfg.tta else 0)
    scored = n["val"] + (n["test"] if cfg.evaluate_test else 0)
    index = min(cfg.neighbor_index, n["train"])
    return (passes * scored + (index + scored if index else 0)) / eval_rate


def _reserve(ctx: Context, n: dict, eval_rate: float, probe: bool) -> float:
    """The finish step's time: final evaluation, robustness, bundle and report. After a probe kept alone the final
    val/test logits and the neighbour index come from the cached features (no backbone pass, no TTA views:
    :func:`nextclass.training.scoring.final_views`); measured on 5,000 photos, 136 s reserved for them went unused."""
    evaluation = 0.0 if probe else _finish_eval_s(ctx, n, eval_rate)
    return evaluation + _robustness_s(ctx, n, eval_rate) + (FINISH_OVERHEAD_S if ctx.cfg.report else 2.0)


def _robustness_s(ctx: Context, n: dict, eval_rate: float) -> float:
    """The robustness pass on the headline split: clean + every corrupted copy of at most ``max_images`` images, the
    corruption itself counted as much as the forward (as :func:`nextclass.metrics.robustness.robustness` budgets
    it), and never more than its cap."""
    from nextclass.metrics.robustness import CORRUPTIONS

    if not ctx.cfg.robustness:
        return 0.0
    last = n["test"] if ctx.cfg.evaluate_test and n["test"] else n["val"]
    passes = 1 + sum(len(levels) for _, levels in CORRUPTIONS.values())
    return min(ROBUSTNESS_S, 2 * passes * min(last, 500) / eval_rate)


def _probe_s(ctx: Context, n: dict, eval_rate: float) -> float:
    """A probe's cost: every image through the frozen backbone once, then the logistic fit (:func:`probe_fit_s`);
    on cached features only reading the kept fit back."""
    from nextclass.training.features import feature_cache_path

    if ctx.cfg.recipe not in ("two-phase", "linear-probe"):
        return 0.0
    if feature_cache_path(ctx, ctx.model).exists():
        return PROBE_FIT_S
    train_rows = n["train"] * (1 + ctx.cfg.tta_views)
    return (train_rows + n["val"] + n["test"]) / eval_rate + probe_fit_s(ctx, train_rows)


def fit_epochs(left_s: float, epoch_s: float, fixed_s: float, steps: int,
               max_epochs: int | None = None) -> tuple[int, int | None]:
    """``(epochs, last_steps)`` that fill ``left_s``: whole epochs of ``epoch_s``, then a final partial epoch of
    ``last_steps`` steps when the remainder buys at least :data:`MIN_LAST_FRACTION` of an epoch's training after its
    fixed part (validation, checkpoints). ``last_steps`` is None when the last epoch is whole."""
    whole = max(0, int(left_s // max(epoch_s, 1e-9)))
    if max_epochs is not None and whole >= max_epochs:
        return max_epochs, None
    rest, train_s = left_s - whole * epoch_s, max(epoch_s - fixed_s, 1e-9)
    fraction = (rest - fixed_s) / train_s
    if steps < 2 or fraction < MIN_LAST_FRACTION:  # (a first plan needs one whole epoch: plan_run checks)
        return whole, None
    last = min(steps - 1, int(fraction * steps))
    return whole + 1, last if last >= 1 else None


def _candidates(ctx: Context, probe_s: float, epoch_s: float, left_s: float) -> list[dict]:
    """What each strategy costs and whether it finishes in ``left_s`` (plan.json, the log)."""
    epochs = int((left_s - probe_s) // epoch_s) if left_s > probe_s else 0
    out = [{"strategy": "linear-probe", "seconds": round(probe_s, 1), "fits": probe_s <= left_s}] if probe_s else []
    if ctx.cfg.recipe != "linear-probe":
        out.append({"strategy": ctx.cfg.recipe, "epochs": epochs, "epoch_s": round(epoch_s, 2),
                    "seconds": round(probe_s + epochs * epoch_s, 1), "fits": epochs >= 1})
    if probe_s:
        out.append({"strategy": "scratch", "measured": False, "why": "pretrained weights are on this machine: the "
                    "probe is the cheap strong baseline (from scratch at the data's size landed near chance on 600 "
                    "photo-like images, bench/RESULTS.md)"})
    return out


def choose_strategy(ctx: Context, probe_s: float, epoch_s: float, left_s: float) -> tuple[str, int, str]:
    """``(recipe, epochs, why)`` for the time left. The recipe stays what was asked, except ``recipe: auto`` with
    pretrained weights (planned as two-phase), which keeps the probe alone when fewer than
    :data:`MIN_FINETUNE_EPOCHS` fine-tuning epochs would fit after it."""
    recipe = ctx.cfg.recipe
    if recipe == "linear-probe":  # chosen: its (head) epochs are the config's, the plan checks that it fits
        return recipe, int(ctx.cfg.epochs), ""
    epochs = int((left_s - probe_s) // epoch_s) if left_s > probe_s else 0
    if recipe == "two-phase" and ctx.auto_recipe and epochs < MIN_FINETUNE_EPOCHS:  # epochs: the probe's (MLP head)
        return "linear-probe", max(1, ctx.cfg.probe_epochs or 10), (f"not one fine-tuning epoch of {epoch_s:.0f} s fits after the "
                                   f"{probe_s:.0f} s probe: the probe alone")
    if recipe == "two-phase" and ctx.auto_recipe:
        return recipe, epochs, f"the probe, then {epochs} fine-tuning epochs fit"
    return recipe, epochs, ""


def plan_run(ctx: Context, started: float, minutes: float, max_epochs: int | None = None,
             rates: tuple[float, float, float] | None = None) -> Plan:
    """The strategy and epochs that fit ``minutes`` of wall time counted from ``started`` (module docstring).
    ``rates``: (training img/s, evaluation img/s, checkpoint s) when already known (measured here otherwise).

    Raises:
        BudgetTooSmall: the budget cannot fit one epoch (or, for a probe, the probe) plus the finish step.

    Example:
        >>> plan = plan_run(ctx, started=t0, minutes=10)  # doctest: +SKIP
        >>> plan.describe()                                # doctest: +SKIP
        'budget 10 min: 19 epochs at 2,700 img/s (...)'
    """
    train_rate, eval_rate, ckpt_s = rates or measure_rates(ctx)
    n = {s: len(r) for s, r in ctx.rows.items()}
    per_rank, bs = math.ceil(n["train"] / world_size()), ctx.cfg.batch_size
    images = (per_rank // bs) * bs if per_rank > bs else per_rank  # drop_last, as the training loader
    fixed_s = n["val"] / eval_rate + ckpt_s
    epoch_s = images / train_rate + fixed_s
    reserve = _reserve(ctx, n, eval_rate, probe=ctx.cfg.recipe == "linear-probe")
    budget, spent, probe_s = 60.0 * minutes, time.time() - started, _probe_s(ctx, n, eval_rate)
    train_end = budget * (1 - SAFETY) - reserve
    strategy, epochs, why = choose_strategy(ctx, probe_s, epoch_s, train_end - spent)
    if strategy == "linear-probe" and ctx.cfg.recipe != strategy:  # kept alone: its finish reads cached features
        reserve = _reserve(ctx, n, eval_rate, probe=True)
        train_end = budget * (1 - SAFETY) - reserve
    if (epochs < 1 and strategy != "linear-probe") or probe_s > train_end - spent:
        _too_small(minutes, spent, probe_s, 0.0 if strategy == "linear-probe" else epoch_s, train_rate, reserve)
    steps, last = steps_per_epoch(ctx.cfg, n["train"]), None
    if strategy != "linear-probe":
        epochs, last = fit_epochs(train_end - spent - probe_s, epoch_s, fixed_s, steps, max_epochs)
    cands = _candidates(ctx, probe_s, epoch_s, train_end - spent)
    views = probe_views(ctx, strategy, train_end - spent - probe_s, n["train"], eval_rate)
    if views:
        probe_s += views * n["train"] / eval_rate + probe_fit_s(ctx, n["train"] * (1 + views)) - probe_fit_s(
            ctx, n["train"])
        why += f"; the rest buys {views} augmented view(s) of each training image for it"
    return Plan(budget, spent, train_rate, eval_rate, epoch_s, reserve, epochs, train_end, max_epochs, None, probe_s,
                strategy, cands, why, steps, fixed_s, last, views)


def _too_small(minutes: float, spent: float, probe_s: float, epoch_s: float, train_rate: float, reserve: float):
    """Raise :class:`BudgetTooSmall` with the numbers (``epoch_s`` 0: a probe kept alone needs no epoch)."""
    needed = (spent + probe_s + epoch_s + reserve) / (1 - SAFETY)
    epoch = f"one epoch takes ~{epoch_s:.0f} s at {train_rate:,.0f} img/s and " if epoch_s else ""
    what = "one epoch" if epoch_s else "the probe"
    raise BudgetTooSmall(f"max_minutes: a budget of {minutes:g} min cannot fit {what}: {spent:.0f} s already spent "
                         f"on data and set-up, " + (f"the probe takes ~{probe_s:.0f} s, " if probe_s else "")
                         + f"{epoch}the final evaluation and report need ~{reserve:.0f} s; give at least "
                         f"{math.ceil(needed / 60 * 10) / 10:g} min, a smaller --img-size or a smaller model", needed)


def probe_views(ctx: Context, strategy: str, rest_s: float, n_train: int, eval_rate: float) -> int:
    """How many augmented views of each training image (``tta_views``) a probe the plan keeps alone embeds with the
    time left after it: as many as their embedding and the larger fit take in :data:`VIEWS_SHARE` of the rest, at
    most :data:`MAX_PROBE_VIEWS`; 0 unless the recipe was ``auto`` (a recipe or ``tta_views`` the user chose is
    kept) and the features are not cached."""
    from nextclass.training.features import feature_cache_path

    if strategy != "linear-probe" or not ctx.auto_recipe or ctx.cfg.tta_views or eval_rate <= 0 or rest_s <= 0:
        return 0
    if feature_cache_path(ctx, ctx.model).exists():  # a rerun on cached features: its views were chosen then
        return 0
    base = probe_fit_s(ctx, n_train)
    cost = [v * n_train / eval_rate + probe_fit_s(ctx, n_train * (1 + v)) - base for v in range(MAX_PROBE_VIEWS + 1)]
    return max(v for v in range(MAX_PROBE_VIEWS + 1) if cost[v] <= rest_s * VIEWS_SHARE)


def save_plan(ctx: Context, plan: Plan) -> None:
    """Record the plan: ``plan.json`` and the planned epochs in ``config.yaml`` (it says what ran).

    The first plan also settles what waited for the epochs (``random_erasing``: on for a long schedule);
    :func:`nextclass.training.defaults.settle_budget` decides both, so config.yaml holds no ``auto`` from here on.
    """
    ctx.cfg, notes = settle_budget(ctx.cfg, plan.epochs)
    for n in notes:
        log(f"[dim]auto[/] {n}")
    if is_main():
        save_config(ctx.cfg, ctx.run.config)
        atomic_write_json(ctx.run.plan, plan.to_dict())
