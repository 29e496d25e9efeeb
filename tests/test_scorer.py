"""One scorer: the finish step of a run and ``nextclass evaluate`` write the same blocks; the end-of-run label
check judges the exact probabilities; another dataset never overwrites the run's own blocks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SIX_CLASSES, make_folder

CLASSES = SIX_CLASSES


def _roundtrip(block: dict) -> dict:
    return json.loads(json.dumps(block))


@pytest.mark.parametrize("split", ["test", "val"])
def test_finish_and_evaluate_write_the_same_block(six_class_run, tmp_path, split):
    from nextclass.evaluation.run import evaluate

    run = tmp_path / "run"
    shutil.copytree(six_class_run, run)
    trained = json.loads((run / "metrics.json").read_text())[split]
    pred_csv = (run / ("predictions.csv" if split == "test" else f"predictions_{split}.csv")).read_text()
    again = _roundtrip(evaluate(run, split=split, progress=False))
    assert set(again) == set(trained), set(again) ^ set(trained)
    for key in trained:
        assert again[key] == trained[key], key
    if split == "test":  # the headline block carries the trust and robustness numbers, TTA on both paths
        assert {"neighbors", "robustness", "tta", "selective", "calibration"} <= set(trained)
    else:
        assert "robustness" not in trained and "selective" in trained
    assert (run / ("predictions.csv" if split == "test" else f"predictions_{split}.csv")).read_text() == pred_csv


def test_end_of_run_label_check_uses_the_exact_probabilities(six_class_run):
    """With more than five classes predictions.csv is an approximation; the flagged set must be cleanlab's on
    the exact probabilities the finish step had in memory."""
    import csv

    from nextclass.bundle import load_model
    from nextclass.data.label_issues import find_label_issues
    from nextclass.evaluation.scorer import score
    from nextclass.evaluation.targets import bundle_scoring, run_split
    from nextclass.rundir import RunDir

    rd = RunDir(six_class_run)
    cfg = rd.read_config()
    model, meta = load_model(rd.bundle)
    s = bundle_scoring(rd, meta, cfg, tta=None, batch_size=None, robustness=False, cache_dir=cfg.cache_dir)
    probs, labels, ids = [], [], []
    for split in ("val", "test"):
        images, _ = run_split(rd, cfg, split, s.pp, cfg.cache_dir, progress=False)
        _, p = score(model, images, s, headline=False)
        probs.append(p), labels.append(images.labels), ids.extend(images.ids)
    probs, labels = np.concatenate(probs), np.concatenate(labels)
    assert probs.shape[1] == 6 and (np.sort(probs, axis=1)[:, 0] > 0).all()  # mass beyond the top 5 exists
    want = {ids[i.position] for i in find_label_issues(probs, labels)}
    with open(rd.label_issues, newline="") as fh:
        got = {row["path"] for row in csv.DictReader(fh)}
    assert want, "the planted flips should be found (the test would prove nothing otherwise)"
    assert got == want
    assert all("flip_" in Path(p).name for p in got)


def test_other_data_gets_its_own_block_and_never_overwrites_the_run(six_class_run, tmp_path):
    from nextclass.evaluation.run import evaluate

    run = tmp_path / "run"
    shutil.copytree(six_class_run, run)
    before = json.loads((run / "metrics.json").read_text())
    test_csv = (run / "predictions.csv").read_text()
    other = make_folder(tmp_path / "other" / "test", classes=CLASSES[:3], n=5, size=24, seed=7)  # a folder named test
    m = evaluate(run, other, progress=False)
    after = json.loads((run / "metrics.json").read_text())
    assert m["split"] == "data:test" and m["n"] == 15
    assert after["test"] == before["test"] and after["val"] == before["val"]
    assert after["data:test"] == _roundtrip(m)
    assert (run / "predictions.csv").read_text() == test_csv
    assert (run / "predictions_data_test.csv").exists()


def test_evaluate_on_an_unfinished_run_says_resume(six_class_run, tmp_path):
    from nextclass.evaluation.run import evaluate
    from nextclass.rundir import UnfinishedRunError

    run = tmp_path / "run"
    shutil.copytree(six_class_run, run)
    shutil.rmtree(run / "model")
    with pytest.raises(UnfinishedRunError, match="train --resume"):
        evaluate(run, progress=False)
