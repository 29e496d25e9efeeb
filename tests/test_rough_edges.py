"""Rough edges a new user saw (issue 23): the threshold predict chose, suggest's columns and reasons, audit --fix
on identical images with two labels, the store, file modes, the demo's model, a typo, and the interval next to
every headline accuracy (metrics, summary line, model card)."""

from __future__ import annotations

import csv
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_folder
from conftest import invoke as cli


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("rough") / "data", n=10, size=16)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data) -> Path:
    import nextclass

    out = tmp_path_factory.mktemp("rough-runs")
    return Path(nextclass.train(data=str(data), model="simple_cnn", epochs=1, output=str(out), name="r",
                                batch_size=8, report=False, progress=False))


def test_predict_prints_the_threshold_it_chose(run, data):
    r = cli("predict", run, next(data.glob("*/*.png")), "--target-accuracy", "0.9")
    assert r.exit_code == 0, r.output
    line = next(line for line in r.output.splitlines() if line.startswith("abstain threshold"))
    assert "below" in line and "0.9" in line and "of the validation images" in line


# --- suggest ----------------------------------------------------------------------------------------------------
def test_suggest_reasons_follow_the_probabilities():
    from nextclass.curation.selection import select

    rng = np.random.default_rng(0)
    confident = np.full((40, 3), 0.0005)
    confident[:, 0] = 0.999
    sel = select(confident, rng.normal(size=(40, 8)), rng.normal(size=(10, 8)), 10)
    assert not any("uncertain" in r for r in sel.reason), sel.reason  # p 0.999 is not uncertain
    unsure = np.full((40, 3), 1 / 3)
    sel = select(unsure, rng.normal(size=(40, 8)), rng.normal(size=(10, 8)), 10)
    assert all(r.startswith("uncertain") for r in sel.reason)


def test_suggest_explains_the_score_and_keeps_paths_whole(run, tmp_path):
    deep = tmp_path / ("a_rather_long_folder_name_for_the_unlabelled_pool_" * 2) / "batch_0001"
    make_folder(deep, classes=("x",), n=6, size=16, seed=3)
    r = cli("suggest", run, deep, "-n", "3", "-o", tmp_path / "next.csv", "-q", "--cache-dir", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    with open(tmp_path / "next.csv") as f:
        paths = [row["path"] for row in csv.DictReader(f)]
    assert paths and all(p in r.output for p in paths)  # every path on one line, not cut at 80 columns
    assert "score = " in r.output and "drawn" in r.output


def test_audit_lists_whole_paths(tmp_path):
    root = tmp_path / ("a_long_folder_name_that_pushes_the_paths_past_eighty_columns_" * 2) / "data"
    make_folder(root, n=6, size=16)
    shutil.copy(root / "circle" / "circle_000.png", root / "circle" / "circle_copy.png")
    r = cli("audit", root, "--cache-dir", tmp_path / "cache", "-q")
    assert r.exit_code == 0, r.output
    assert str(root / "circle" / "circle_copy.png") in r.output


def test_fix_drops_identical_images_with_two_labels(tmp_path):
    root = make_folder(tmp_path / "d", classes=("0", "1", "2", "3"), n=6, size=16)
    shutil.copy(root / "0" / "0_000.png", root / "3" / "3_copy_of_0.png")
    r = cli("audit", root, "--fix", tmp_path / "clean.csv", "--cache-dir", tmp_path / "cache", "-q")
    assert r.exit_code == 0, r.output
    kept = (tmp_path / "clean.csv").read_text()
    assert "0_000.png" not in kept and "3_copy_of_0.png" not in kept
    assert "0_001.png" in kept


# --- store, file modes, demo, typo --------------------------------------------------------------------------------
def test_models_add_twice_stores_one_version(run, tmp_path):
    from nextclass.deploy.store import add, list_models

    store = tmp_path / "store"
    assert add(run, "shapes", store=store).name == "v1"
    assert add(run, "shapes", store=store).name == "v1"
    r = cli("models", "add", run, "--name", "shapes", "--store", store)
    assert r.exit_code == 0 and "unchanged" in r.output and "shapes@v1" in r.output, r.output
    assert list_models(store=store)[0]["versions"] == 1


def test_bundle_files_share_one_mode(run, tmp_path):
    from nextclass.utils import atomic_write_text

    bundle = run / "model"
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in bundle.iterdir() if f.is_file()}
    assert len(set(modes.values())) == 1, modes
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(atomic_write_text(tmp_path / "atomic.txt", "x").stat().st_mode) == \
        stat.S_IMODE(plain.stat().st_mode)


def test_demo_trains_what_train_would(monkeypatch):
    import nextclass

    seen = {}

    def fake_train(config=None, **kwargs):
        seen.update(config)
        raise ValueError("stop here")

    monkeypatch.setattr(nextclass, "train", fake_train)
    r = cli("demo", "-q")
    assert r.exit_code == 2
    assert seen["data"] == "digits"
    assert not {"model", "lr", "batch_size", "augment", "img_size", "label_smoothing"} & set(seen), seen


def test_label_column_message_grammar():
    import datasets

    from nextclass.data.hf_columns import find_columns
    from nextclass.data.samples import DataError

    feats = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["a", "b"]),
                               "f": datasets.Value("float32")})
    with pytest.raises(DataError, match="not a label column"):
        find_columns(feats, label="f")


# --- the interval next to every headline accuracy -----------------------------------------------------------------
def test_metrics_and_summary_carry_a_wilson_interval():
    from nextclass.metrics.classification import classification_metrics, wilson_interval
    from nextclass.metrics.predictions import summary_line

    probs = np.eye(3)[[0, 1, 2, 0, 1, 2, 0, 1, 2, 1]]
    m = classification_metrics(probs, np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]), ["a", "b", "c"], "test")
    lo, hi = m["accuracy_ci"]
    assert lo < m["accuracy"] == 0.9 < hi <= 1.0
    assert wilson_interval(179, 179)[0] == pytest.approx(0.979, abs=1e-3)
    assert "95% CI" in summary_line(m)


def card(**over):
    from nextclass.card import card_text

    per = {c: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 20} for c in "abc"}
    per["c"] = {"precision": 0.8, "recall": 0.9, "f1": 0.847, "support": 20}
    block = {"split": "test", "n": 60, "accuracy": 0.95, "top5": 1.0, "macro": {"f1": 0.95}, "per_class": per,
             "most_confused": [], "selective": {"auroc": {"probability": None, "margin": None}}, **over}
    meta = {"classes": list("abc"), "arch": {"name": "simple_cnn"}, "pretrained": None, "recipe": "scratch"}
    return card_text(meta, {"test": block}, None, {"data": "digits"})


def test_model_card_reads_right():
    text = card()
    weak = text.split("### Weak spots")[1].split("Most confused")[0]
    assert "| c |" in weak and "| a |" not in weak  # classes at 1.000 are not weak spots
    assert "pretrained `None`" not in text and "from scratch" in text
    assert "n/a: the test predictions were all right or all wrong" in text
    assert "95% Wilson interval" in text.split("**test accuracy")[1].split("\n")[0]
    perfect = card(per_class={c: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 20} for c in "abc"})
    assert "every class scored F1 1.000" in perfect
