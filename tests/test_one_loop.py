"""One loop: the probe runs on the same TrainPhase as every phase, with the same checkpoint, early-stop and
tie-break rules (it had lost the val-loss tie-break while it had a loop of its own)."""

from __future__ import annotations

import csv

import numpy as np
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
    ctx = _ctx(tmp_path, patience=2)
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
