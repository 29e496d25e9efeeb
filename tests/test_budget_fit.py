"""A budget too small for a run as resolved runs a pretrained backbone at a smaller input side, when the side was
left to auto, instead of refusing (issue 24: 5,000 photos, 2 minutes)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from test_one_loop import _ctx


def _rates_at(ctx, seconds_at_112: float):
    """Measured rates that fall with the input's pixels, as a backbone's do: the probe of every image takes
    ``seconds_at_112`` at 112 px (x (side / 112)^2 elsewhere)."""
    rows = sum(len(r) for r in ctx.rows.values())

    def measure(c, *a, **k):
        eval_rate = rows / seconds_at_112 * (112 / int(c.cfg.img_size)) ** 2
        return eval_rate / 3, eval_rate, 0.01
    return measure


def test_a_probe_too_slow_at_the_models_side_runs_at_the_largest_side_that_fits(tmp_path, monkeypatch):
    from nextclass.training import budget_fit, plan

    ctx = _ctx(tmp_path, img_size="auto", robustness=False, max_minutes=1.0)
    assert ctx.cfg.img_size == 160 and ctx.auto_img_size  # test_efficientnet's own side
    measure = _rates_at(ctx, 40.0)  # the probe: 81.6 s at 160 px, 52 s at 128 (+ re-measuring), 40 s at 112
    monkeypatch.setattr(budget_fit, "measure_rates", measure)
    monkeypatch.setattr(plan, "measure_rates", measure)
    before, hash0 = ctx.images.array.shape, ctx.data_hash
    with pytest.raises(plan.BudgetTooSmall):
        plan.plan_run(ctx, budget_fit.time.time(), 1.0)  # as resolved: refused
    p = budget_fit.plan_to_fit(ctx, budget_fit.time.time(), 1.0)
    assert ctx.cfg.img_size == 112 and ctx.pp.crop == 112 and p.strategy == "linear-probe"
    assert p.fitted.startswith("input side 160 -> 112 px")
    assert ctx.images.array.shape == (before[0], ctx.pp.size, ctx.pp.size, before[3]) and ctx.pp.size < before[1]
    assert ctx.data_hash != hash0
    assert yaml.safe_load(ctx.run.config.read_text())["img_size"] == 112  # a resumed run prepares the same side
    from nextclass.training.features import cached_features

    feats = cached_features(ctx, ctx.model, progress=False)  # the backbone takes the smaller side
    assert feats.train.shape[1] == len(ctx.rows["train"]) and np.isfinite(feats.val.numpy()).all()


def test_nothing_fits_refuses_with_what_was_tried_and_leaves_the_run_as_resolved(tmp_path, monkeypatch):
    from nextclass.training import budget_fit, plan

    ctx = _ctx(tmp_path, img_size="auto", robustness=False, max_minutes=1.0)
    measure = _rates_at(ctx, 500.0)  # even 96 px is too slow
    monkeypatch.setattr(budget_fit, "measure_rates", measure)
    monkeypatch.setattr(plan, "measure_rates", measure)
    cfg, images = ctx.cfg, ctx.images
    with pytest.raises(plan.BudgetTooSmall, match=r"cannot fit the probe.*also tried: the input side down to 96 px"):
        budget_fit.plan_to_fit(ctx, budget_fit.time.time(), 1.0)
    assert ctx.cfg is cfg and ctx.images is images


def test_a_side_the_user_chose_is_kept(tmp_path):
    from nextclass.training.budget_fit import fit_options

    assert fit_options(_ctx(tmp_path / "a", img_size="auto", max_minutes=1.0)) == [128, 112, 96]
    assert fit_options(_ctx(tmp_path / "b", img_size=64, max_minutes=1.0)) == []  # --img-size: the user's


def test_resized_images_keep_their_content():
    from nextclass.data.cache import DecodedImages
    from nextclass.training.budget_fit import resized

    a = np.zeros((3, 40, 40, 3), np.uint8)
    a[:, :20] = 255  # the top half white
    r = resized(DecodedImages(a, np.ones(3, bool), key="k"), 20)
    assert r.array.shape == (3, 20, 20, 3) and r.array[:, :9].min() == 255 and r.array[:, 11:].max() == 0
    assert r.key != "k" and not r.hit


def test_a_chosen_probe_is_planned_too(tmp_path):
    """--recipe linear-probe with --max-minutes: the plan checks its cost (5,000 photos at 2 minutes ran 32 s past
    the budget when a chosen probe was not planned) and keeps the probe's own epochs; its step is not timed."""
    import json

    import timm
    import torch
    from safetensors.torch import save_file

    import nextclass
    from conftest import make_folder

    data = make_folder(tmp_path / "data", n=16)
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_file(timm.create_model("test_efficientnet", num_classes=5).state_dict(), str(weights))
    run = nextclass.train(data=str(data), model="test_efficientnet", pretrained=str(weights), recipe="linear-probe",
                          img_size=32, max_minutes=1, report=False, robustness=False, output=str(tmp_path / "runs"),
                          progress=False)
    plan = json.loads((run / "plan.json").read_text())
    assert plan["strategy"] == "linear-probe" and plan["epochs"] == 10 and plan["probe_s"] > 0
    assert [c["strategy"] for c in plan["candidates"]][:1] == ["linear-probe"] and plan["fitted"] == ""
    assert plan["train_images_per_s"] == pytest.approx(plan["eval_images_per_s"] / 3, rel=1e-3)  # not timed
    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 10


def test_auto_fine_tunes_at_a_smaller_side_rather_than_keep_the_probe_alone(tmp_path, monkeypatch):
    """recipe auto: when not one fine-tuning epoch fits at the model's side but one fits at a smaller side, the side
    shrinks (5,000 photos, 5 minutes: the probe alone at 224 px 0.625 held-out, probe + fine-tuning at 128 px 0.677);
    when some fit at the model's side, it stays."""
    from nextclass.training import budget_fit, plan

    ctx = _ctx(tmp_path / "a", img_size="auto", recipe="auto", robustness=False, max_minutes=1.0)
    assert ctx.auto_recipe and ctx.cfg.recipe == "two-phase" and ctx.cfg.img_size == 160
    measure = _rates_at(ctx, 9.0)  # at 160 px the probe fits but no epoch after it; at 112 px both do
    monkeypatch.setattr(budget_fit, "measure_rates", measure)
    monkeypatch.setattr(plan, "measure_rates", measure)
    assert plan.plan_run(ctx, budget_fit.time.time(), 1.0).strategy == "linear-probe"  # as resolved: the probe alone
    p = budget_fit.plan_to_fit(ctx, budget_fit.time.time(), 1.0)
    assert p.strategy == "two-phase" and p.epochs >= 1 and ctx.cfg.img_size < 160 and p.fitted.startswith("input side")
    roomy = _ctx(tmp_path / "b", img_size="auto", recipe="auto", robustness=False, max_minutes=1.0)
    quick = _rates_at(roomy, 2.0)  # fine-tuning fits at the model's side: nothing shrinks
    monkeypatch.setattr(budget_fit, "measure_rates", quick)
    monkeypatch.setattr(plan, "measure_rates", quick)
    p = budget_fit.plan_to_fit(roomy, budget_fit.time.time(), 1.0)
    assert p.strategy == "two-phase" and roomy.cfg.img_size == 160 and p.fitted == ""
