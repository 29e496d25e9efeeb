"""--max-minutes: the planner measures the machine, plans epochs so the schedule completes inside the
budget, refuses a budget that cannot fit one epoch, and a budgeted run resumes to the planned end."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import yaml

import nextclass
from conftest import make_folder


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("plan") / "data", n=20, size=16)


def test_budget_too_small_fails_before_training(data, tmp_path):
    with pytest.raises(ValueError, match=r"max_minutes: a budget of 0.05 min cannot fit one epoch.*give at least"):
        nextclass.train(data=str(data), max_minutes=0.05, output=str(tmp_path), name="small", progress=False)
    assert not (tmp_path / "small" / "history.csv").exists()  # nothing trained


@pytest.mark.slow
def test_budget_plans_epochs_and_the_whole_job_fits(data, tmp_path):
    """The plan keeps the finish step's reserve out of training, and training keeps to the plan by the run's own
    clock. Not asserted: the wall time of the whole job, which a machine busier during training than during the
    planner's measurement can overrun (the hard stop itself is tested in test_engine)."""
    from nextclass.training.plan import SAFETY

    budget_min = 0.25
    run = Path(nextclass.train(data=str(data), max_minutes=budget_min, report=False, output=str(tmp_path),
                               name="fit", progress=False, lr=3e-3))
    plan = json.loads((run / "plan.json").read_text())
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    hist = _history(run)
    assert plan["epochs"] >= 2 and cfg["epochs"] == plan["epochs"] == len(hist)  # the plan ran to its end
    assert plan["budget_s"] == 60 * budget_min and plan["reserve_s"] > 0 and plan["train_images_per_s"] > 0
    # the finish step's reserve (and the safety margin) is kept out of the training time
    assert plan["train_end_s"] == pytest.approx(plan["budget_s"] * (1 - SAFETY) - plan["reserve_s"], abs=1e-2)
    if plan["replanned"] is None:  # the first estimate: the epochs (the last maybe partial) fit before the end
        last = plan["fixed_s"] + (plan["last_steps"] / plan["steps"]) * (plan["epoch_s"] - plan["fixed_s"]) \
            if plan["last_steps"] else plan["epoch_s"]
        assert plan["spent_s"] + (plan["epochs"] - 1) * plan["epoch_s"] + last <= plan["train_end_s"] + 1e-2
    # by the run's own clock, no epoch started after the training time (train_end_s - spent_s) was up: each epoch
    # but the first began when the one before it had been recorded (history rounds elapsed to 0.1 s)
    train_s = plan["train_end_s"] - plan["spent_s"]
    assert all(float(row["elapsed_seconds"]) < train_s + 0.05 for row in hist[:-1]), (train_s, hist)
    # the learning-rate schedule completed: the last epoch ran at the cosine floor
    assert float(hist[-1]["lr"]) <= 3e-3 * (cfg["min_lr_ratio"] + 0.05)
    assert json.loads((run / "metrics.json").read_text())["test"]["n"] > 0  # evaluation fitted in too


def test_epochs_cap_the_plan_and_a_budgeted_run_resumes(data, tmp_path):
    def stop_after_two(row, state):
        if int(row["epoch"]) == 2:
            raise KeyboardInterrupt  # as a user's Ctrl-C after the epoch's checkpoint

    from nextclass.config import make_config
    from nextclass.training.fit import fit

    cfg = make_config(data=str(data), max_minutes=5, epochs=4, report=False, output=str(tmp_path), name="cap", lr=3e-3)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, progress=False, callbacks=(stop_after_two,))
    run = tmp_path / "cap"
    plan = json.loads((run / "plan.json").read_text())
    assert plan["epochs"] == 4  # 5 minutes fit far more: --epochs caps the plan
    assert [r["epoch"] for r in _history(run)] == ["1", "2"]
    nextclass.train(resume=str(run), progress=False)
    assert [r["epoch"] for r in _history(run)] == ["1", "2", "3", "4"]
    assert json.loads((run / "plan.json").read_text()) == plan  # resume keeps the plan, does not re-plan
    assert (run / "model" / "model.safetensors").exists()


def test_replan_follows_the_machine_both_ways_and_fills_the_rest_with_a_partial_epoch():
    from nextclass.training.plan import Plan, fit_epochs
    from nextclass.training.replan import replan

    # 100 steps an epoch; 2 s of each epoch is validation and checkpoints
    assert fit_epochs(100, 30, 5, 10) == (4, 2)  # 3 whole epochs, then 10 s: 5 s of training = 2 of 10 steps
    assert fit_epochs(100, 30, 5, 10, max_epochs=3) == (3, None)  # --epochs caps it: whole epochs only
    assert fit_epochs(95, 30, 5, 10) == (3, None)  # 5 s left after 3 epochs: validation alone, not worth it
    assert fit_epochs(25, 30, 5, 10) == (1, 8)  # less than an epoch left: most of one
    # measured 30 s per epoch at the start (a busy machine), then epochs take 10 s
    plan = Plan(budget_s=600, spent_s=10, train_images_per_s=1.0, eval_images_per_s=1.0, epoch_s=30, reserve_s=50,
                epochs=17, train_end_s=532, steps=100, fixed_s=2)
    # a plan that still fits grows to what would fit at 10.5 s (GROW_MARGIN): 432 s -> 41 epochs, not 43
    assert (replan(plan, done=3, epoch_s=10, elapsed_s=100).epochs, plan.last_steps) == (3 + 41, None)
    grown = replan(plan, done=9, epoch_s=10, elapsed_s=95)  # mid-decay too: the schedule is re-timed, not cut
    assert (grown.epochs, grown.last_steps) == (9 + 42, 52)  # 437 s: 41 epochs of 10.5 s, then 6.5 s: 52 steps
    slow = replan(plan, done=5, epoch_s=60, elapsed_s=300)  # slower than planned: shrinks so the decay completes
    assert (slow.epochs, slow.last_steps) == (5 + 4, 86) and "after epoch 5" in slow.replanned
    capped = dataclasses.replace(plan, max_epochs=20)
    assert replan(capped, done=3, epoch_s=10, elapsed_s=100).epochs == 20  # --epochs caps it
    assert replan(plan, done=17, epoch_s=1, elapsed_s=100) is plan  # the schedule ran its course: no more epochs
    end = replan(plan, done=15, epoch_s=10, elapsed_s=524)  # 8 s left: not two more epochs, but most of one
    assert (end.epochs, end.last_steps) == (16, 75)
    # no flip-flop: a plan that still fits grows only by a quarter of an epoch or more; one that does not always shrinks
    tight = dataclasses.replace(plan, epochs=21, train_end_s=600)  # 21 epochs of 27 s planned
    assert replan(tight, done=5, epoch_s=27.5, elapsed_s=152.5) is tight  # 16 x 27.5 s of 447.5: +21 steps, kept
    grown = replan(tight, done=5, epoch_s=25.0, elapsed_s=150)  # 18 epochs fit at 25 s; grown to what fits at 26.25
    assert (grown.epochs, grown.last_steps) == (5 + 17, None)
    assert replan(grown, done=6, epoch_s=25.5, elapsed_s=175) is grown  # 2 % slower: the grown plan still fits
    shrunk = replan(tight, done=5, epoch_s=29.0, elapsed_s=150)  # 16 x 29 = 464 s > 450: shrinks
    assert _total(shrunk) < 21 * 100  # 20 epochs and half of one


def _total(p) -> int:
    return p.epochs * p.steps - (p.steps - p.last_steps if p.last_steps else 0)


@pytest.mark.parametrize("kind", ["cosine", "linear", "onecycle"])
def test_a_retimed_schedule_keeps_its_lr_and_ends_at_the_floor(kind):
    from nextclass.engine.optim import Schedule

    s = Schedule(kind, 100, 10, min_ratio=0.01)
    floor = s.multiplier(99)
    before = s.multiplier(60)
    s.retime(60, 160)  # a longer plan, mid-decay
    assert s.multiplier(60) == pytest.approx(before) and s.multiplier(159) == pytest.approx(floor)
    assert all(s.multiplier(i) >= s.multiplier(i + 1) for i in range(60, 159))  # still decaying, no jump
    at = s.multiplier(120)
    s.retime(120, 130)  # then a shorter one (steps before a re-timing are never run again)
    assert s.multiplier(120) == pytest.approx(at) and s.multiplier(129) == pytest.approx(floor)
    assert at > s.multiplier(125) > s.multiplier(129)


def test_a_probe_kept_alone_spends_its_rest_on_augmented_views(monkeypatch, tmp_path):
    """recipe auto, probe alone: the time left after it buys augmented views of the training images (tta_views), at
    most MAX_PROBE_VIEWS, only VIEWS_SHARE of the rest, each view paying its embedding and its rows in the logistic
    fit; a chosen recipe or tta_views, and cached features, are kept."""
    from types import SimpleNamespace

    from nextclass.training import features, plan
    from nextclass.training.probe_cost import probe_fit_s

    monkeypatch.setattr(features, "feature_cache_path", lambda ctx, model: tmp_path / "absent.safetensors")
    lite0 = SimpleNamespace(num_features=1280)

    def run(auto=True, views=0, classes=10):
        return SimpleNamespace(auto_recipe=auto, cfg=SimpleNamespace(tta_views=views), model=lite0, classes=[0] * classes)

    ctx = run()
    # 600 photos (420 train, 65.6 img/s): a view = 6.4 s of embedding + 420 rows x 3.5 ms of fit = 7.9 s; 0.8 x 36 s
    assert plan.probe_views(ctx, "linear-probe", rest_s=36.0, n_train=420, eval_rate=65.6) == 3
    assert plan.probe_views(ctx, "linear-probe", rest_s=600.0, n_train=420, eval_rate=65.6) == plan.MAX_PROBE_VIEWS
    assert plan.probe_views(ctx, "two-phase", rest_s=600.0, n_train=420, eval_rate=65.6) == 0  # fine-tuning spends it
    assert plan.probe_views(ctx, "linear-probe", rest_s=5.0, n_train=420, eval_rate=65.6) == 0
    # 5,000 photos at 128 px (3,500 train, 297 img/s): the fit's rows cost more than the embedding: one view, not two
    assert plan.probe_views(ctx, "linear-probe", rest_s=36.0, n_train=3500, eval_rate=297.0) == 1
    assert probe_fit_s(ctx, 7000) == pytest.approx(2.0 + 7000 * 3.5e-3)  # measured 27.9 s
    assert probe_fit_s(run(classes=100), 7000) > 9 * probe_fit_s(ctx, 7000)  # multinomial: x classes
    chosen, given = run(auto=False), run(views=2)
    assert plan.probe_views(chosen, "linear-probe", 600.0, 420, 65.6) == plan.probe_views(given, "linear-probe", 600.0, 420, 65.6) == 0
    (tmp_path / "absent.safetensors").write_bytes(b"")
    assert plan.probe_views(ctx, "linear-probe", 600.0, 420, 65.6) == 0  # cached features: their views were chosen then
