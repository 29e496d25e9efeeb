"""The multi-label building blocks of issue 26 on small synthetic arrays (no model, no images): the metrics against
scikit-learn, per-label thresholds and temperatures, the ``path,labels[,split]`` manifest, task detection and
iterative stratification."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, hamming_loss

from nextclass.data import multilabel as dml
from nextclass.data import multilabel_splits as dms
from nextclass.data.multilabel import (
    check_task,
    conflicting_sets,
    cooccurrence,
    detect_csv_task,
    detect_task,
    label_stats,
    multi_hot,
    read_multilabel_csv,
    resolve_task,
)
from nextclass.data.multilabel_splits import assign_multilabel_splits, iterative_stratification, missing_labels
from nextclass.data.samples import DataError
from nextclass.metrics import multilabel as mml
from nextclass.metrics.multilabel import (
    binary_ece,
    calibrated_probs,
    choose_thresholds,
    fit_label_temperatures,
    label_calibration_block,
    labels_above,
    multilabel_metrics,
    sigmoid,
)

# ---------------------------------------------------------------------------------------------- metrics


def test_metrics_match_sklearn_on_a_hand_checkable_case():
    p = np.array([[0.9, 0.2, 0.6], [0.4, 0.7, 0.1], [0.8, 0.6, 0.3], [0.1, 0.3, 0.2]])
    y = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0]])  # label c: one positive; last image: no label
    m = multilabel_metrics(p, y, ["a", "b", "c"], "test")
    pred = (p >= 0.5).astype(int)  # [[1,0,1],[0,1,0],[1,1,0],[0,0,0]]: one false positive (image 2, label b)
    assert m["exact_match"] == accuracy_score(y, pred) == 0.75
    assert m["hamming_loss"] == round(hamming_loss(y, pred), 6) == round(1 / 12, 6)
    assert m["micro"]["f1"] == round(f1_score(y, pred, average="micro"), 6) == round(2 * 4 / (2 * 4 + 1), 6)
    assert m["macro"]["f1"] == round(f1_score(y, pred, average="macro"), 6)
    assert m["per_label"]["b"] == {"precision": 0.5, "recall": 1.0, "f1": round(2 / 3, 6), "support": 1,
                                   "predicted": 2, "threshold": 0.5, "ap": 1.0}
    aps = [average_precision_score(y[:, j], p[:, j]) for j in range(3)]
    assert m["map"] == round(np.mean(aps), 6)
    assert m["cardinality"] == {"true": 1.0, "predicted": 1.25} and m["no_label"] == {"true": 1, "predicted": 1}
    assert m["labels_without_positives"] == [] and m["thresholds"] == [0.5] * 3
    json.dumps(m, allow_nan=False)


def test_metrics_match_sklearn_on_random_arrays_and_one_label():
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(1)
    p = rng.uniform(size=(60, 6))
    y = (rng.uniform(size=(60, 6)) < p * 0.8).astype(int)
    thr = np.array([0.3, 0.4, 0.5, 0.6, 0.7, 0.5])
    m = multilabel_metrics(p, y, list("abcdef"), "test", thr)
    pred = (p >= thr).astype(int)
    for avg in ("micro", "macro"):
        ref = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)[:3]
        assert [m[avg][k] for k in ("precision", "recall", "f1")] == [round(v, 6) for v in ref]
    ref = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    assert [m["per_label"][c]["f1"] for c in "abcdef"] == [round(v, 6) for v in ref[2]]
    # one label: an (N, 1) matrix, which scikit-learn would read as two binary classes
    one = multilabel_metrics(p[:, :1], y[:, :1], ["a"], "test", 0.3)
    assert one["per_label"]["a"]["f1"] == round(f1_score(y[:, 0], (p[:, 0] >= 0.3).astype(int)), 6)


def test_labels_without_positives_are_left_out_of_map_and_macro_and_counted():
    p = np.array([[0.9, 0.8], [0.2, 0.1], [0.7, 0.4]])
    y = np.array([[1, 0], [0, 0], [0, 0]])  # label b: no positive in this split
    m = multilabel_metrics(p, y, ["a", "b"], "val", thresholds=[0.5, 0.5])
    assert m["labels_without_positives"] == ["b"] and m["labels_with_positives"] == 1
    assert m["per_label"]["b"]["ap"] is None
    assert m["map"] == round(average_precision_score(y[:, 0], p[:, 0]), 6) == 1.0
    pred = (p >= 0.5).astype(int)
    assert m["macro"]["f1"] == round(f1_score(y, pred, labels=[0], average="macro"), 6)
    assert m["micro"]["f1"] == round(f1_score(y, pred, average="micro"), 6)
    empty = multilabel_metrics(np.zeros((0, 2)), np.zeros((0, 2), int), ["a", "b"], "test")
    assert empty["n"] == 0 and empty["map"] is None and empty["exact_match"] is None
    json.dumps(empty, allow_nan=False)
    with pytest.raises(ValueError, match="0/1"):
        multilabel_metrics(p, y * 2, ["a", "b"], "val")


def test_max_f1_threshold_and_labels_above():
    p = np.array([[0.9], [0.6], [0.4], [0.2]])
    y = np.array([[1], [0], [1], [0]])
    t = choose_thresholds(p, y, ["a"])
    a = t["per_label"]["a"]
    # predicting p >= 0.4 gives P 2/3, R 1, F1 0.8: the best; the threshold sits halfway to the next score (0.2)
    assert (a["threshold"], a["rule"], a["precision"], a["recall"], a["f1"]) == (0.3, "max-f1", round(2 / 3, 6), 1.0, 0.8)
    assert t["thresholds"] == [0.3] and t["rule"] == "max-f1" and t["fitted_on"] == "val"
    assert multilabel_metrics(p, y, ["a"], "val", t["thresholds"])["per_label"]["a"]["f1"] == 0.8
    assert labels_above(np.array([[0.35], [0.25]]), ["a"], t["thresholds"]) == [[{"label": "a", "probability": 0.35}], []]


def test_target_precision_threshold_unreachable_and_no_positive():
    p = np.array([[0.95, 0.9, 0.3], [0.8, 0.8, 0.2], [0.7, 0.7, 0.1], [0.6, 0.6, 0.4], [0.3, 0.5, 0.3]])
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0]])
    t = choose_thresholds(p, y, ["a", "b", "c"], target_precision=0.7)
    a, b, c = (t["per_label"][k] for k in "abc")
    # a: p >= 0.6 keeps 3 of 4 right (P 0.75 >= 0.7, recall 1): the lowest threshold reaching 0.7, between 0.6 and 0.3
    assert (a["rule"], a["threshold"], a["precision"], a["recall"]) == ("target-precision", 0.45, 0.75, 1.0)
    assert a["target_precision_threshold"] == 0.45 and a["reason"] is None
    # b: its top score is a negative; best precision 0.5 < 0.7 -> None, max-F1 instead, and a reason
    assert b["target_precision_threshold"] is None and b["rule"] == "max-f1" and "best 0.500" in b["reason"]
    assert (b["threshold"], b["f1"]) == (0.55, round(2 / 3, 6))  # p >= 0.6: P 1/2, R 1
    # c: no positive in val -> 0.5 and why
    assert c["threshold"] == 0.5 and c["rule"] == "default" and "no positive" in c["reason"]
    assert t["rule"] == "precision>=0.7" and t["thresholds"] == [0.45, 0.55, 0.5]
    with pytest.raises(ValueError, match="target precision"):
        choose_thresholds(p, y, ["a", "b", "c"], target_precision=1.5)


def test_per_label_temperature_lowers_the_calibration_error():
    rng = np.random.default_rng(0)
    n = 3000
    y = (rng.uniform(size=(n, 3)) < [0.5, 0.2, 0.05]).astype(int)
    true_logit = (2 * y - 1) * 1.5 + rng.normal(0, 1.5, (n, 3))
    logits = true_logit * np.array([4.0, 0.4, 2.5])  # over-, under- and over-confident labels
    val, test = slice(0, 2000), slice(2000, None)
    t, why = fit_label_temperatures(logits[val, :2], y[val, :2])
    assert t[0] > 2 and t[1] < 1 and why == [None, None]
    block = label_calibration_block(logits[test, :2], y[test, :2], ["a", "b"], t)["calibration"]
    for k in "ab":
        assert block["per_label"][k]["ece_after"] < block["per_label"][k]["ece_before"] / 2
        assert block["per_label"][k]["nll_after"] < block["per_label"][k]["nll_before"]
    assert block["mean_ece_after"] < block["mean_ece_before"] and block["binning"] == "equal-mass"
    probs = calibrated_probs(logits[:, :2], t)
    assert np.allclose(probs[:, 0], sigmoid(logits[:, 0] / t[0]))
    t2, why2 = fit_label_temperatures(np.array([[1.0, 2.0], [-1.0, 0.5]]), np.array([[1, 0], [0, 0]]))
    assert t2[1] == 1.0 and "no positive" in why2[1]


def test_binary_ece_uses_equal_mass_bins():
    p = np.array([0.01] * 8 + [0.9, 0.95])  # equal-width bins would lump the eight in one bin
    y = np.array([0] * 8 + [1, 1])
    expected = (8 * 0.01 + abs(1 - 0.925) * 2) / 10  # 5 bins of 2: four of (0.01, 0), one of (0.925, 1)
    assert binary_ece(p, y, bins=5) == round(expected, 6)
    assert binary_ece(np.zeros(0), np.zeros(0)) is None


# ---------------------------------------------------------------------------------------------- manifest


def _manifest(tmp_path, text: str):
    p = tmp_path / "m.csv"
    p.write_text(text)
    return p


def test_manifest_parses_labels_trims_collapses_and_sorts_naturally(tmp_path):
    p = _manifest(tmp_path, "path,labels,split\n"
                            "a.png, cat ; dog;cat ,train\n"
                            "b.png,,train\n\n"
                            "c.png,item10;item2;;,val\n"
                            "d.png,\"dog\",test\n")
    src = read_multilabel_csv(p)
    assert src.classes == ["cat", "dog", "item2", "item10"] and src.kind == "csv-multilabel"
    assert [s.labels for s in src.samples] == [(0, 1), (), (2, 3), (1,)]
    assert [s.split for s in src.samples] == ["train", "train", "val", "test"]
    assert src.task == "multi-label" and [s.label for s in src.samples] == [-1] * 4
    assert src.samples[0].path == str((tmp_path / "a.png").resolve())
    assert src.targets().tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 0]]


@pytest.mark.parametrize("text, where", [
    ("path,labels,split\na.png,cat,train\nb.png,dog,holdout\n", r"m\.csv:3: column 'split': unknown split 'holdout'"),
    ("path,labels\na.png,cat\n,dog\n", r"m\.csv:3: column 'path' is empty"),
    ("path,labels\na.png,\"cat,dog\"\n", r"m\.csv:2: column 'labels': 'cat,dog' holds ','"),
    ("path,labels,split\na.png,cat,train\nb.png,dog\n", r"m\.csv:3: 2 fields for 3 columns .*column 'split' is missing"),
    ("path,labels\na.png,cat,extra\n", r"m\.csv:2: 3 fields for 2 columns .*beyond the last column 'labels'"),
    ("path,labels,split\na.png,cat,train\nb.png,dog,\n", r"m\.csv:3: column 'split' is empty; fill it on every row"),
    ("path,tags\na.png,cat\n", r"needs a header with 'path' and 'labels'"),
    ("path,labels\n", r"no rows"),
    ("path,labels\na.png,\nb.png, ; \n", r"no row has a label"),
])
def test_manifest_errors_name_the_line_and_the_column(tmp_path, text, where):
    with pytest.raises(DataError, match=where):
        read_multilabel_csv(_manifest(tmp_path, text))


def test_task_detection_and_override(tmp_path):
    assert detect_task(["path", "labels"]) == ("multi-label", "the manifest has a 'labels' column")
    task, why = detect_task(["path", "label"], [["a.png", "cat"], ["b.png", "cat; dog"]])
    assert task == "multi-label" and "row 2" in why and "'cat; dog'" in why
    assert detect_task(["path", "label"], [{"path": "a.png", "label": "cat"}])[0] == "single-label"
    seq = {"image": {"_type": "Image"}, "tags": {"_type": "Sequence", "feature": {"_type": "ClassLabel", "names": ["a"]}}}
    assert detect_task(seq) == ("multi-label", "column 'tags' is a sequence of ClassLabel")
    assert detect_task({"tags": [{"_type": "ClassLabel", "names": ["a"]}]})[0] == "multi-label"
    assert detect_task({"label": {"_type": "ClassLabel", "names": ["a", "b"]}})[0] == "single-label"
    assert detect_csv_task(_manifest(tmp_path, "path,label\na.png,x;y\n"))[0] == "multi-label"
    assert read_multilabel_csv(tmp_path / "m.csv").classes == ["x", "y"]  # a 'label' column with ';' reads too
    assert [check_task(v) for v in (None, "auto", "Multi-Label", "multilabel", "single")] == \
        ["auto", "auto", "multi-label", "multi-label", "single-label"]
    with pytest.raises(ValueError, match=r"task 'multiclass': use auto, single-label or multi-label"):
        check_task("multiclass")
    assert resolve_task(None, ("single-label", "x")) == ("single-label", "x")
    assert resolve_task("multi-label", ("multi-label", "x"))[1] == "--task multi-label (as detected: x)"


def test_hf_features_objects_are_recognised():
    datasets = pytest.importorskip("datasets")
    seq = getattr(datasets, "List", None) or datasets.Sequence
    f = datasets.Features({"image": datasets.Image(), "labels": seq(datasets.ClassLabel(names=["a", "b"]))})
    assert detect_task(f)[0] == "multi-label" and detect_task(f.to_dict())[0] == "multi-label"
    g = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    assert detect_task(g)[0] == "single-label"


def test_multi_hot_counts_cooccurrence_and_conflicts():
    y = multi_hot([(0, 1), (1,), (), (0, 1, 2)], 3)
    assert cooccurrence(y).tolist() == [[2, 2, 1], [2, 3, 1], [1, 1, 1]]
    s = label_stats(y, ["a", "b", "c"], top=2)
    assert s["counts"] == {"c": 1, "a": 2, "b": 3} and s["no_label"] == 1 and s["cardinality"] == 1.5
    assert s["pairs"] == [{"labels": ["a", "b"], "images": 2}, {"labels": ["a", "c"], "images": 1}]
    json.dumps(s, allow_nan=False)
    assert conflicting_sets([[0, 3], [1]], [(0, 1), (1,), (), (0, 1)]) == []
    assert conflicting_sets([[0, 1]], [(0, 1), (1,)]) == [{"images": [0, 1], "sets": [[0, 1], [1]]}]


# ---------------------------------------------------------------------------------------------- splits


def _long_tail(n: int = 1500, labels: int = 25, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=(n, labels)) < 0.3 / (1 + np.arange(labels)) ** 1.2).astype(int)
    y[:, -3:] = 0
    y[rng.choice(n, 3, replace=False), -1] = 1  # exactly 3 images
    y[rng.choice(n, 4, replace=False), -2] = 1  # 4
    y[rng.choice(n, 2, replace=False), -3] = 1  # 2: too rare for three splits
    return y


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_iterative_stratification_keeps_rare_labels_in_every_split(seed):
    y = _long_tail(seed=seed)
    classes = [f"l{j}" for j in range(y.shape[1])]
    s = iterative_stratification(y, (0.7, 0.2, 0.1), seed=seed)
    assert missing_labels(y, s, classes) == {"train": [], "val": [], "test": []}
    assert "train" in set(s[y[:, -3] == 1])  # a label of 2 images goes where it is most wanted first
    for name, r in (("train", 0.7), ("val", 0.2), ("test", 0.1)):
        assert abs((s == name).mean() - r) < 0.01
    common = y.sum(0) >= 100
    share = np.array([y[s == "train"][:, j].sum() / y[:, j].sum() for j in np.flatnonzero(common)])
    assert np.abs(share - 0.7).max() < 0.03  # stratified: each common label about 70 % in train


def test_iterative_stratification_is_deterministic_and_repairs():
    y = _long_tail(seed=3)
    a, b = (iterative_stratification(y, (0.7, 0.2, 0.1), seed=7) for _ in range(2))
    assert (a == b).all() and not (a == iterative_stratification(y, (0.7, 0.2, 0.1), seed=8)).all()
    # label 0's three images each carry a rarer label (2 images each) that the paper's rule puts in train:
    # the repair moves two of them out (their rarer label keeps an image in train)
    y2 = np.zeros((40, 5), int)
    y2[:34, 4] = 1
    for k in range(3):
        y2[2 * k:2 * k + 2, 1 + k] = 1
    y2[[0, 2, 4], 0] = 1
    s = iterative_stratification(y2, (0.7, 0.2, 0.1), seed=0)
    assert set(s[y2[:, 0] == 1]) == {"train", "val", "test"}
    assert all("train" in set(s[y2[:, k] == 1]) for k in (1, 2, 3, 4))
    zero = iterative_stratification(y, (0.8, 0.2, 0.0), seed=0)
    assert set(zero) == {"train", "val"}
    with pytest.raises(ValueError, match="ratios"):
        iterative_stratification(y, (0.7, 0.3), seed=0)


def test_assign_splits_keeps_given_splits_and_carves_val(tmp_path):
    rows = ["path,labels,split"] + [f"t{i}.png,{'a;b' if i % 3 else 'a'},{'test' if i >= 40 else 'train'}"
                                    for i in range(50)]
    src = read_multilabel_csv(_manifest(tmp_path, "\n".join(rows) + "\n"))
    splits = assign_multilabel_splits(src, (0.7, 0.2, 0.1), seed=0)
    assert splits[40:] == ["test"] * 10 and {"train", "val"} == set(splits[:40])
    assert [s.split for s in src.samples] == splits
    nosplit = read_multilabel_csv(_manifest(tmp_path, "path,labels\n" + "".join(f"x{i}.png,a\n" for i in range(20))))
    assert set(assign_multilabel_splits(nosplit)) == {"train", "val", "test"}


def test_docstring_examples():
    for mod in (mml, dml, dms):
        assert doctest.testmod(mod, optionflags=doctest.ELLIPSIS).failed == 0, mod.__name__
