"""``--max-minutes`` after each epoch: the plan follows the machine (:func:`replan`), longer or shorter, without
flip-flopping. The first plan is :func:`nextclass.training.plan.plan_run`'s."""

from __future__ import annotations

import dataclasses

from nextclass.training.plan import Plan, fit_epochs

__all__ = ["replan", "MIN_GROWTH", "GROW_MARGIN"]

#: A re-plan grows a plan that still fits only by at least this share of an epoch: the 10-minute Fashion-MNIST run
#: re-planned 21 <-> 22 epochs five times as each epoch's time wobbled around the boundary (the schedule re-timed each
#: time); a plan that no longer fits always shrinks.
MIN_GROWTH = 0.25
#: ... and only to what would still fit were the epochs this much slower: the next 10-minute run still flipped
#: 22 <-> 23 seven times, its epochs wobbling 25.1-26.1 s (4 %) over 15 epochs left (0.6 of an epoch).
GROW_MARGIN = 0.05


def replan(plan: Plan, done: int, epoch_s: float, elapsed_s: float) -> Plan:
    """Correct the planned epochs with the measured wall time per epoch (every per-epoch cost included;
    the caller passes the median of the last three epochs, so one slow epoch does not swing the plan).

    Called after each epoch with ``done`` epochs finished; the epochs left and the final partial epoch are
    fitted again into the time left (:func:`fit_epochs`). The plan may grow as well as shrink at any epoch: the
    caller re-times the learning-rate schedule without a jump (:meth:`nextclass.engine.optim.Schedule.retime`),
    so a machine that was busy for a while gets its time back instead of ending early.
    """
    if done >= plan.epochs:  # the schedule has run its course: its lr is at the floor
        return plan
    cap = None if plan.max_epochs is None else max(0, plan.max_epochs - done)
    fixed_s = min(plan.fixed_s, 0.9 * epoch_s)
    left_s = plan.train_end_s - elapsed_s
    fits = _plan_s(plan.epochs - done, plan.last_steps, plan.steps, epoch_s, fixed_s) <= left_s
    # a plan that still fits grows only to what would fit were the epochs GROW_MARGIN slower (no flip-flop)
    left, last = fit_epochs(left_s, epoch_s * (1 + GROW_MARGIN) if fits else epoch_s, fixed_s, plan.steps, cap)
    epochs = done + left
    if epochs <= done:  # nothing more fits: stop after this epoch
        epochs, last = done, None
    if (epochs, last) == (plan.epochs, plan.last_steps):
        return plan
    gain = _steps(epochs - done, last, plan.steps) - _steps(plan.epochs - done, plan.last_steps, plan.steps)
    if fits and gain < MIN_GROWTH * plan.steps:
        return plan  # the plan still fits and growing it buys too little to re-time the schedule for
    note = plan.replanned
    if epochs != plan.epochs:
        note = f"after epoch {done} ({epoch_s:.1f} s per epoch, estimated {plan.epoch_s:.1f} s): {epochs} epochs"
    return dataclasses.replace(plan, epochs=epochs, last_steps=last, replanned=note)


def _steps(epochs: int, last: int | None, steps: int) -> int:
    """Optimiser steps in ``epochs`` epochs whose last one stops after ``last`` steps (None: whole)."""
    return epochs * steps - (steps - last if last else 0) if epochs > 0 else 0


def _plan_s(epochs: int, last: int | None, steps: int, epoch_s: float, fixed_s: float) -> float:
    """Seconds ``epochs`` epochs take, the last one cut to ``last`` steps (the model of :func:`fit_epochs`)."""
    if epochs <= 0:
        return 0.0
    if not last:
        return epochs * epoch_s
    return (epochs - 1) * epoch_s + fixed_s + last / max(steps, 1) * (epoch_s - fixed_s)
