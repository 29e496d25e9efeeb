"""Experiment tracking through the real MLflow file store and TensorBoard event files."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import make_folder

pytestmark = pytest.mark.slow  # every test here trains a run with a tracker


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    base = tmp_path_factory.mktemp("trackdata")
    return make_folder(base / "data", n=12), str(base / "cache")


def _fit(tmp_path, small_data, **kw):
    from nextclass.config import make_config
    from nextclass.training.fit import fit

    data, cache = small_data
    cfg = make_config(data=str(data), model="simple_cnn", epochs=2, batch_size=8, lr=3e-3, cache_dir=cache,
                      output=str(tmp_path / "runs"), report=False, **kw)
    return fit(cfg, progress=False)


def test_mlflow_run_reads_back(tmp_path, small_data, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = _fit(tmp_path, small_data, track="mlflow", name="tracked")
    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")  # the default store lives in the run
    exp = client.get_experiment_by_name("nextclass")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    r = runs[0]
    assert r.info.status == "FINISHED" and r.info.run_name == "tracked"
    assert r.data.params["model"] == "simple_cnn" and r.data.params["epochs"] == "2" and r.data.params["lr"] == "0.003"
    with open(run / "history.csv", newline="") as f:
        hist = list(csv.DictReader(f))
    val = client.get_metric_history(r.info.run_id, "val_acc")
    assert [m.step for m in sorted(val, key=lambda m: m.step)] == [1, 2]
    assert [m.value for m in sorted(val, key=lambda m: m.step)] == pytest.approx([float(h["val_acc"]) for h in hist])
    test_acc = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    assert r.data.metrics["test_accuracy"] == pytest.approx(test_acc)
    top = {a.path for a in client.list_artifacts(r.info.run_id)}
    assert {"config.yaml", "history.csv", "metrics.json", "predictions.csv", "model"} <= top
    assert {"model/model.json", "model/model.safetensors"} <= {a.path for a in client.list_artifacts(r.info.run_id, "model")}
    assert (run / "mlartifacts").is_dir()  # artifacts stay in the run directory


def test_mlflow_marks_a_crashed_run_failed(tmp_path, small_data, monkeypatch):
    from mlflow.tracking import MlflowClient

    from nextclass.config import make_config
    from nextclass.training.fit import fit

    uri = f"sqlite:///{tmp_path / 'store.db'}"

    def boom(row, state):
        raise RuntimeError(f"stop after epoch {row['epoch']}")

    data, cache = small_data
    cfg = make_config(data=str(data), model="simple_cnn", epochs=2, batch_size=8, cache_dir=cache, track="mlflow",
                      tracking_uri=uri, output=str(tmp_path / "runs"), name="crash", report=False)
    with pytest.raises(RuntimeError, match="stop after epoch 1"):
        fit(cfg, progress=False, callbacks=(boom,))
    client = MlflowClient(tracking_uri=uri)
    r = client.search_runs([client.get_experiment_by_name("nextclass").experiment_id])[0]
    assert r.info.status == "FAILED" and "stop after epoch 1" in r.data.tags["nextclass.stopped"]
    assert [m.step for m in client.get_metric_history(r.info.run_id, "val_acc")] == [1]
    assert not (tmp_path / "runs" / "crash" / "mlflow.db").exists()  # the URI was honoured


def test_tensorboard_scalars_per_epoch(tmp_path, small_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _fit(tmp_path, small_data, track="tensorboard", name="tb")
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/train_loss", "val/val_acc", "speed/images_per_second"} <= set(tags)
    assert [e.step for e in acc.Scalars("val/val_acc")] == [1, 2]
