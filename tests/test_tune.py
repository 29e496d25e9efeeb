"""Optuna tuning: 3 trials with a pruned one, resumed from SQLite through the CLI, best config trains."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import cli, make_folder


@pytest.mark.slow
def test_tune_prunes_resumes_and_writes_a_config_that_trains(tmp_path):
    import optuna

    from nextclass.config import load_config
    from nextclass.training.fit import fit
    import nextclass
    from nextclass.tuning import TuneResult

    data = make_folder(tmp_path / "data", n=20)
    cache, out = str(tmp_path / "cache"), tmp_path / "tune"
    base = dict(data=str(data), model="simple_cnn", epochs=3, batch_size=8, cache_dir=cache, hflip=False)
    space = {"lr": (1e-6, 5e-3), "augment": ["light"], "drop_rate": (0.0, 0.1)}
    # two good learning rates first; a hopeless one (lr 1e-6) is queued for the resumed study
    res = nextclass.tune(base, trials=2, output=out, space=space, enqueue=[{"lr": 4e-3}, {"lr": 3e-3}, {"lr": 1e-6}])
    assert isinstance(res, TuneResult)  # the public API still works once nextclass.tune (the module) is imported
    study_dir = out / "simple_cnn-data"
    assert res.output == study_dir and (study_dir / "study.db").exists()
    states = [t.state.name for t in res.study.trials]
    assert states.count("WAITING") == 1 and states.count("COMPLETE") >= 1
    assert "batch_size" not in res.params  # set by the user: fixed, not searched

    # resume the same SQLite study from the CLI: 3 in total, so only the queued trial runs, and it is pruned
    p = cli("tune", str(data), "--trials", "3", "--model", "simple_cnn", "-e", "3", "-o", str(out),
            "--space", "lr=1e-6:5e-3", "--space", "augment=light", "--space", "drop_rate=0:0.1",
            "--set", "batch_size=8", "--set", f"cache_dir={cache}", "--set", "hflip=false", "-q")
    assert "pruned" in p.stdout and "best.yaml" in p.stdout
    study = optuna.load_study(study_name="simple_cnn-data", storage=f"sqlite:///{study_dir / 'study.db'}")
    trials = sorted(study.trials, key=lambda t: t.number)
    assert len(trials) == 3
    assert trials[2].params["lr"] == 1e-6 and trials[2].state.name == "PRUNED"
    assert len(trials[2].intermediate_values) < 3  # stopped before its last epoch
    assert all(len(t.intermediate_values) >= 2 for t in trials)  # per-epoch val accuracy reached Optuna
    with open(study_dir / "trials.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 3
    assert (study_dir / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["trials"]["pruned"] >= 1 and summary["best_value"] >= 0.8
    assert not (tmp_path / "tune" / "simple_cnn-data" / "trials" / "trial-002" / "metrics.json").exists()

    # the best config validates and trains as is (the test split is only measured here)
    cfg = load_config(study_dir / "best.yaml", output=str(tmp_path / "runs"), epochs=1)
    assert cfg.lr == summary["best_params"]["lr"] and cfg.batch_size == 8
    run = fit(cfg, progress=False)
    assert json.loads((run / "metrics.json").read_text())["test"]["n"] > 0
