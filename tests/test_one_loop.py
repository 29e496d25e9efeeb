"""One loop: the probe runs on the same TrainPhase as every phase, with the same checkpoint, early-stop and
tie-break rules (it had lost the val-loss tie-break while it had a loop of its own)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from conftest import make_folder


def _ctx(tmp_path, **kw):
    import timm
    from safetensors.torch import save_file

    from nextclass.config import make_config
    from nextclass.training.setup import prepare

    data = make_folder(tmp_path / "data", n=16)
    torch.manual_seed(0)
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("test_efficientnet", num_classes=5).state_dict().items()},
              str(weights))
    d = dict(data=str(data), model="test_efficientnet", pretrained=str(weights), recipe="linear-probe", epochs=6,
             img_size=32, output=str(tmp_path / "runs"), report=False, batch_size=8)
    d.update(kw)
    return prepare(make_config(**d), progress=False)


def test_probe_is_a_train_phase_with_the_shared_rules(tmp_path, monkeypatch):
    from nextclass.training import phase as phase_mod
    from nextclass.training.probe import ProbePhase, probe_phase

    assert issubclass(ProbePhase, phase_mod.TrainPhase)
    ctx = _ctx(tmp_path, patience=2, head="mlp")  # an MLP head trains epochs (a linear one: a logistic fit)
    losses = iter([1.0, 0.9, 0.8, 0.8, 0.8, 0.8])  # val accuracy stays equal; val loss improves twice, then ties
    monkeypatch.setattr("nextclass.training.probe.loss_and_acc", lambda *a: (next(losses), 0.5))
    state: dict = {}
    probe_phase(ctx, ctx.model, state, epochs=6, lr=1e-3, progress=False)
    rows = list(csv.DictReader(open(ctx.run_dir / "history.csv")))
    assert [r["phase"] for r in rows] == ["probe"] * 5  # epochs 4 and 5 did not improve: patience 2 stops after 5
    assert state["best_epoch"] == 3 and state["best_loss"] == 0.8  # equal accuracy, lower val loss: the tie-break
    assert "stopped" not in state and state["probe_done"]  # a probe's early stop does not stop a later phase
    assert (ctx.run_dir / "checkpoints" / "best.safetensors").exists()
    assert np.isfinite(float(rows[-1]["train_loss"]))


def test_one_step_builder_serves_every_phase_the_planner_and_benchmark():
    """The training step is built in one place (training/step.build_parts); the planner and `nextclass benchmark`
    time that step, not a plain cross-entropy stand-in. A second builder written elsewhere fails here."""
    import re
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "nextclass"
    builders = {str(p.relative_to(src)) for p in src.rglob("*.py") if re.search(r"\bStepParts\(", p.read_text())}
    assert builders == {"training/step.py", "training/probe.py"}, builders  # the probe: its head-only step
    for user in ("training/plan.py", "benchmark.py", "training/phase.py"):
        text = (src / user).read_text()
        assert "build_parts(" in text and "F.cross_entropy" not in text, user


def test_planner_times_the_runs_step_with_ema_and_label_smoothing(tmp_path, monkeypatch):
    from nextclass.config import make_config
    from nextclass.training import plan as plan_mod
    from nextclass.training.setup import prepare

    data = make_folder(tmp_path / "data", n=12, size=16)
    ctx = prepare(make_config(data=str(data), model="simple_cnn", epochs=2, ema=True, label_smoothing=0.2,
                              output=str(tmp_path / "runs"), batch_size=8, report=False), progress=False)
    seen = []
    real = plan_mod.build_parts
    monkeypatch.setattr(plan_mod, "build_parts", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    train_rate, eval_rate, ckpt_s = plan_mod.measure_rates(ctx, steps=2, warmup=1)
    assert train_rate > 0 and eval_rate > 0 and ckpt_s >= 0
    parts = seen[0]
    assert parts.ema is not None and parts.criterion.label_smoothing == 0.2  # the run's step, not a stand-in
    assert parts.model is not ctx.model  # timed on a copy: the run's weights are untouched


def test_one_model_builder_for_training_and_loading(tmp_path):
    """Training and loading a bundle build the model in one place (models/factory.build); a second builder that
    attaches heads elsewhere fails here, and a bundle with an MLP head rebuilds to the trained model exactly."""
    import re
    from pathlib import Path

    from nextclass.bundle import build_model as bundle_build
    from nextclass.config import make_config
    from nextclass.training.defaults import arch_of, build_model

    src = Path(__file__).resolve().parents[1] / "src" / "nextclass"
    attach = {str(p.relative_to(src)) for p in src.rglob("*.py") if re.search(r"\battach_head\(", p.read_text())}
    assert attach == {"models/factory.py", "models/heads.py"}, attach
    cfg = make_config(data="digits", model="test_efficientnet", head="mlp", in_chans=3, drop_rate=0.1, pretrained="none")
    torch.manual_seed(0)
    trained = build_model(cfg, 4).eval()
    again = bundle_build({"arch": arch_of(cfg, 4, trained)}).eval()
    again.load_state_dict(trained.state_dict())
    x = torch.rand(2, 3, 32, 32)
    assert type(again) is type(trained) and torch.equal(again(x), trained(x))


def test_only_the_run_handle_builds_run_paths():
    """Every module that reads or writes a run goes through nextclass.rundir.RunDir: no other module joins a run
    folder with one of its file names, and none reads a run's config as raw YAML."""
    import re
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "nextclass"
    names = r"config\.yaml|split\.csv|skipped\.csv|metrics\.json|history\.csv|plan\.json|report\.html|checkpoints|" \
            r"predictions\.csv|audit\.json|label_issues\.csv"
    joined = re.compile(rf'/ "({names})"|\b(run|run_dir|rd) / "model"')
    allowed = {"rundir.py", "curation/label_audit.py"}  # label_audit: `audit -o DIR` writes an audit folder, not a run
    offenders = {str(p.relative_to(src)): m.group(0) for p in src.rglob("*.py")
                 for m in [joined.search(p.read_text())] if m and str(p.relative_to(src)) not in allowed}
    assert not offenders, offenders
    raw_yaml = {str(p.relative_to(src)) for p in src.rglob("*.py") if "yaml.safe_load((" in p.read_text()}
    assert not raw_yaml, raw_yaml


@pytest.mark.parametrize("name", ["fast_resnet", "simple_cnn", "test_efficientnet"])
def test_head_on_trunk_features_is_the_model(name):
    """head_from_trunk(trunk_features(x)) == model(x) for every kind of model, so one pass can give the logits and the
    neighbour vectors (fast_resnet scales its logits after the classifier: that scale is part of the head)."""
    from nextclass.models.factory import create
    from nextclass.models.heads import head_from_trunk, trunk_features

    torch.manual_seed(0)
    m = create(name, num_classes=5, in_chans=3).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(head_from_trunk(m, trunk_features(m, x)), m(x))


def test_a_later_epoch_within_val_noise_and_lower_loss_takes_the_best_place():
    """Model selection does not trust val-accuracy differences smaller than one standard error: the 10-minute
    Fashion-MNIST run kept epoch 20 (val 0.9482, test 0.9430) over epoch 24 (0.9480 and a lower loss, test 0.9455)."""
    from nextclass.training.phase import within_noise

    assert within_noise(0.9480, 0.2275, 0.9482, 0.2281, 5000)  # one image down, lower loss: the later epoch
    assert not within_noise(0.9480, 0.2290, 0.9482, 0.2281, 5000)  # higher loss: the earlier one stays
    assert not within_noise(0.9440, 0.2200, 0.9482, 0.2281, 5000)  # 0.42 points down: beyond one SE (0.31)
    assert within_noise(0.5, 0.7, 0.5, 0.8, 0) and not within_noise(0.49, 0.7, 0.5, 0.8, 0)  # n = 0: exact ties
    assert not within_noise(0.5, 0.7, None, None, 100)  # nothing to replace yet


def test_fine_tuning_replaces_the_probe_only_beyond_val_noise():
    """Across phases the probe is the incumbent: a fine-tuning epoch must beat its val accuracy by more than one
    standard error (upscaled photo set: 0.833 vs 0.825 on 120 val images is one image); within a phase the rules stay."""
    from nextclass.training.phase import improves

    probe = {"best": 0.825, "best_loss": 0.81}
    assert not improves("val_acc", 0.833, 0.54, probe, 120, crossing=True)  # +1 image: the probe stays
    assert improves("val_acc", 0.870, 0.54, probe, 120, crossing=True)  # +4.5 points > one SE (3.5)
    assert improves("val_acc", 0.833, 0.54, probe, 120, crossing=False)  # the same epoch inside one phase
    assert improves("val_loss", 0.5, 0.5, {"best": 0.6, "best_loss": 0.6}, 120, crossing=True)  # loss: plain rule


def test_the_probes_strength_is_the_lowest_val_loss_val_accuracy_cannot_tell_apart():
    """A probe's C: on 120 val images every C's accuracy is within one standard error (3.5 points) of the best, so
    the lowest val loss picks (the measured upscaled photo set's sweep: accuracy alone took C = 1e-3, loss 0.81);
    on 5,000 the accuracy decides; NaN accuracies (no val) pick nothing."""
    from nextclass.training.phase import pick_within_noise

    acc = [0.8250, 0.8000, 0.8000, 0.7917, 0.7833, 0.7833]  # C = 1e-3 .. 100, history of the measured run
    loss = [0.810, 0.561, 0.589, 0.709, 0.890, 0.890]
    assert pick_within_noise(acc, loss, 120) == 1
    assert pick_within_noise(acc, loss, 5000) == 0  # one SE of 0.825 on 5,000 images is 0.54 points
    assert pick_within_noise([0.90, 0.95, 0.95], [0.3, 0.2, 0.1], 10**6) == 2  # exact ties: the lower loss
    assert pick_within_noise([float("nan")] * 3, [float("nan")] * 3, 0) == -1
