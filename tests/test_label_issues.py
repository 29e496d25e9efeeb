"""Label issues with cleanlab on out-of-sample probabilities from cross-validated heads (offline, seconds)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("cleanlab")


def _blobs(n: int, k: int, sep: float, seed: int, dim: int = 16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, sep, (k, dim))
    y = rng.integers(0, k, n)
    return centres[y] + rng.normal(0, 1, (n, dim)), y


def _flip(y: np.ndarray, k: int, rate: float, seed: int):
    rng = np.random.default_rng(seed)
    flipped = np.flatnonzero(rng.random(len(y)) < rate)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, k, len(flipped))) % k
    return noisy, set(flipped.tolist())


def test_flipped_labels_found_with_high_precision_and_recall():
    from nextclass.data.label_issues import cross_val_probs, find_label_issues

    x, y = _blobs(1000, 5, sep=2.0, seed=0)
    noisy, flipped = _flip(y, 5, 0.05, seed=1)
    probs = cross_val_probs(x, noisy, folds=5, seed=0)
    assert probs.shape == (1000, 5) and np.allclose(probs.sum(axis=1), 1)
    issues = find_label_issues(probs, noisy)
    found = {i.position for i in issues}
    precision, recall = len(found & flipped) / len(found), len(found & flipped) / len(flipped)
    assert precision > 0.8 and recall > 0.7, (precision, recall, len(found), len(flipped))
    assert [i.rank for i in issues] == list(range(1, len(issues) + 1))
    assert all(a.score <= b.score for a, b in zip(issues, issues[1:]))  # most suspicious first
    right = [i for i in issues if i.position in flipped]
    assert np.mean([i.suggested == y[i.position] for i in right]) > 0.9  # the suggestion is the true class
    assert all(i.given == noisy[i.position] != i.suggested for i in issues)


def test_count_follows_the_evidence():
    from nextclass.data.label_issues import cross_val_probs, find_label_issues

    counts = {}
    for sep in (0.0, 2.0):  # no signal at all, then a strong model
        x, y = _blobs(800, 4, sep=sep, seed=2)
        for rate in (0.0, 0.1):
            noisy, _ = _flip(y, 4, rate, seed=3)
            counts[sep, rate] = len(find_label_issues(cross_val_probs(x, noisy, seed=0), noisy))
    assert counts[0.0, 0.0] <= 10 and counts[0.0, 0.1] <= 10  # a random model has no evidence: (almost) nothing flagged
    assert counts[2.0, 0.0] <= 5  # clean labels, good model: (almost) nothing
    assert 50 <= counts[2.0, 0.1] <= 100  # ~10 % of 800 flipped: about that many flagged
    # cleanlab alone (no probability guard) flags about half of the random set
    x, y = _blobs(800, 4, sep=0.0, seed=2)
    assert len(find_label_issues(cross_val_probs(x, y), y, min_suggested_probability=0.0)) > 200


def test_small_classes_missing_classes_and_bad_input():
    from nextclass.data.label_issues import cross_val_probs, find_label_issues

    x, y = _blobs(200, 3, sep=3.0, seed=4)
    y = np.where(np.arange(200) < 3, 3, y)  # class 3 has 3 examples: fewer than 5 folds
    probs = cross_val_probs(x, y, folds=5)
    assert probs.shape == (200, 4) and np.isfinite(probs).all()
    probs5 = cross_val_probs(x, y, num_classes=5)  # class 4 has no example at all
    assert probs5.shape == (200, 5) and (probs5[:, 4] == 0).all()
    assert all(i.suggested != 4 for i in find_label_issues(probs5, y))
    with pytest.raises(ValueError, match="labels must be class indices 0..1"):
        find_label_issues(np.full((3, 2), 0.5), [0, 1, 2])
    with pytest.raises(ValueError, match="filter_by='nope': choose one of prune_by_noise_rate"):
        find_label_issues(np.full((3, 2), 0.5), [0, 1, 0], filter_by="nope")
    with pytest.raises(ValueError, match="probability distribution"):
        find_label_issues(np.ones((3, 2)), [0, 1, 0])


def test_write_label_issues_csv(tmp_path):
    from nextclass.data.label_issues import LabelIssue, write_label_issues_csv

    issues = [LabelIssue(2, 1, 0, 0.03, 1), LabelIssue(0, 0, 1, 0.2, 2)]
    n = write_label_issues_csv(tmp_path / "label_issues.csv", issues, ["a.png", "b.png", "c.png"], ["cat", "dog"])
    rows = list(csv.DictReader((tmp_path / "label_issues.csv").open()))
    assert n == 2 and rows[0] == {"path": "c.png", "given_label": "dog", "suggested_label": "cat",
                                  "score": "0.030000", "rank": "1"}
    assert rows[1]["path"] == "a.png" and not list(tmp_path.glob(".*tmp"))
