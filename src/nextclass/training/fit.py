"""``nextclass.train(config)``: the whole run, from data to bundle and report.

Order of work: :func:`~nextclass.training.setup.prepare` (run dir, splits, decode once, defaults,
the model) → :func:`~nextclass.training.recipes.run_recipe` (epochs with checkpoints, history, early
stopping, time budget) → best weights → :func:`~nextclass.training.finish.finish_run` (evaluation on
val and test, bundle, report). A run killed at any point resumes from
``checkpoints/last.safetensors`` with ``--resume`` and ends where an uninterrupted run would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from torch import nn

from nextclass.config import TrainConfig
from nextclass.dist import broadcast_object, finish_training
from nextclass.engine.checkpoint import load_checkpoint
from nextclass.training.context import Context
from nextclass.training.defaults import PLANNED_RECIPES, epochs_cap
from nextclass.training.finish import finish_run
from nextclass.training.budget_fit import plan_to_fit
from nextclass.training.plan import save_plan
from nextclass.training.recipes import run_recipe
from nextclass.training.setup import discard_if_unstarted, prepare
from nextclass.utils import log

__all__ = ["fit"]


def fit(cfg: TrainConfig | None = None, *, resume: str | Path | None = None, progress: bool = True,
        callbacks: tuple = ()) -> Path:
    """Train, evaluate, bundle and report. Returns the run directory.

    ``callbacks`` are called after every epoch as ``callback(history_row, state)``; raising stops the run.

    Example:
        >>> from nextclass.config import make_config
        >>> run = fit(make_config(data="digits", epochs=3))  # doctest: +SKIP
    """
    started = time.time()
    ctx = prepare(cfg, resume=resume, progress=progress)
    with discard_if_unstarted(ctx.run_dir, new=not ctx.resumed):  # e.g. a budget too small for one epoch
        _apply_budget(ctx, started)
        return _run(ctx, progress, callbacks)


def _run(ctx: Context, progress: bool, callbacks: tuple) -> Path:
    """The epochs, the finish step and the tracker around them."""
    from nextclass.training.tracking import start_tracker

    ctx.callbacks.extend(callbacks)
    last = ctx.run.last_checkpoint
    state = load_checkpoint(last) if last.exists() else {}
    state = broadcast_object(state)  # DDP: rank 0's checkpoint state, so every rank resumes at the same epoch
    tracker = start_tracker(ctx)  # None unless cfg.track (rank 0 only)
    if tracker is not None:
        ctx.callbacks.insert(0, tracker)  # log the epoch before a callback (e.g. pruning) stops the run
    try:
        model = _train_and_finish(ctx, state, progress)
    except BaseException as e:
        if tracker is not None:
            tracker.fail(f"{type(e).__name__}: {e}")
        raise
    if tracker is not None and model is not None:
        tracker.finish(ctx.run_dir)
    return ctx.run_dir


def _apply_budget(ctx: Context, started: float) -> None:
    """``--max-minutes``: plan the epochs (new scratch/finetune/two-phase runs; a linear probe is planned for its cost
    only, which may shrink a pretrained backbone's side: training.budget_fit), or reload the plan (resume)."""
    cfg = ctx.cfg
    if cfg.max_minutes is None:
        return
    path = ctx.run.plan
    if ctx.resumed or cfg.recipe not in (*PLANNED_RECIPES, "linear-probe"):  # a probe: checked, its epochs kept
        saved = json.loads(path.read_text()) if path.exists() else None
        ctx.train_seconds = saved["train_end_s"] - saved["spent_s"] if saved else 60.0 * cfg.max_minutes
        ctx.last_steps = saved.get("last_steps") if saved else None
        return
    plan = plan_to_fit(ctx, started, cfg.max_minutes, max_epochs=epochs_cap(cfg))
    plan = broadcast_object(plan)  # DDP: every rank trains rank 0's plan
    ctx.plan, ctx.started = plan, started
    ctx.train_seconds, ctx.last_steps = plan.train_end_s - plan.spent_s, plan.last_steps
    if plan.strategy and plan.strategy != ctx.cfg.recipe:  # recipe auto: the budget keeps the probe alone
        ctx.cfg = ctx.cfg.model_copy(update={"recipe": plan.strategy, "tta_views": plan.probe_views})
        log(f"[dim]auto[/] recipe = {plan.strategy} ({plan.why})")
    save_plan(ctx, plan)
    log(f"[bold]plan[/] {plan.describe()}")


def _train_and_finish(ctx: Context, state: dict, progress: bool) -> nn.Module | None:
    """Training phases, then (rank 0 only) best weights, evaluation, bundle and report."""
    model = run_recipe(ctx, ctx.model, state, progress)
    if not finish_training():  # DDP: the group is gone; rank 0 finishes exactly like a single process
        return None
    best = ctx.run.best_checkpoint
    if best.exists():
        st = load_checkpoint(best, model)
        monitor = "val mAP" if ctx.source.multilabel and ctx.cfg.monitor == "val_acc" else ctx.cfg.monitor
        log(f"best checkpoint: epoch {st.get('best_epoch')} ({monitor} {st.get('best'):.4f})")
    finish_run(ctx, model, progress=progress)
    return model
