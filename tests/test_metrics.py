"""Metric functions against hand-computed values; temperature scaling; TTA views; corruptions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nextclass.metrics.calibration import calibration_block, fit_temperature, nll
from nextclass.metrics.classification import (balanced_accuracy, brier_score, classification_metrics, expected_calibration_error,
                                        log_loss, reliability_bins, softmax, topk_accuracy)
from nextclass.metrics.robustness import CORRUPTIONS, RobustnessOptions, corrupt, robustness
from nextclass.metrics.tta import make_view, tta_logits, views_for, views_from_config

CLASSES = ["a", "b", "c", "d"]
# 7 images. True labels: a a a b b c c ; predicted: a a b b b a b.
# -> class c is present (2 images) but never predicted; class d is absent from the split.
Y = np.array([0, 0, 0, 1, 1, 2, 2])
P = np.array([
    [0.70, 0.10, 0.15, 0.05],   # a -> a
    [0.60, 0.30, 0.05, 0.05],   # a -> a
    [0.20, 0.50, 0.25, 0.05],   # a -> b   (a is 3rd: not in top-2)
    [0.10, 0.80, 0.05, 0.05],   # b -> b
    [0.30, 0.40, 0.20, 0.10],   # b -> b
    [0.50, 0.10, 0.35, 0.05],   # c -> a   (c is 2nd: in top-2)
    [0.10, 0.45, 0.40, 0.05],   # c -> b   (c is 2nd)
])


def test_classification_metrics_by_hand():
    m = classification_metrics(P, Y, CLASSES, "test")
    assert m["split"] == "test" and m["n"] == 7
    assert m["accuracy"] == pytest.approx(4 / 7)
    pc = m["per_class"]
    # a: 3 predicted (2 right), 3 true; b: 4 predicted (2 right), 2 true; c: never predicted; d: absent
    assert (pc["a"]["precision"], pc["a"]["recall"], pc["a"]["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert (pc["b"]["precision"], pc["b"]["recall"], pc["b"]["f1"]) == pytest.approx((0.5, 1.0, 2 / 3))
    assert (pc["c"]["precision"], pc["c"]["recall"], pc["c"]["f1"], pc["c"]["support"]) == (0.0, 0.0, 0.0, 2)
    assert pc["c"]["predicted"] == 0 and pc["b"]["predicted"] == 4
    assert pc["d"]["support"] == 0 and m["classes_absent"] == ["d"]
    # macro over the 3 present classes only; weighted by support 3/2/2
    assert m["macro"]["precision"] == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    assert m["macro"]["recall"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["macro"]["f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert m["weighted"]["precision"] == pytest.approx((3 * 2 / 3 + 2 * 0.5) / 7)
    assert m["weighted"]["recall"] == pytest.approx(4 / 7)
    assert m["weighted"]["f1"] == pytest.approx((3 * 2 / 3 + 2 * 2 / 3) / 7)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m["confusion_matrix"] == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    assert m["confusion_matrix_normalized"][2] == [0.5, 0.5, 0.0, 0.0]
    assert m["confusion_matrix_normalized"][3] == [0.0, 0.0, 0.0, 0.0]
    assert m["confusion_matrix_normalized"][0] == pytest.approx([2 / 3, 1 / 3, 0, 0], abs=1e-6)
    # off-diagonal cells, count then rate: c->a (1, .5), c->b (1, .5), a->b (1, 1/3)
    assert [(x["true"], x["predicted"]) for x in m["most_confused"]] == [("c", "a"), ("c", "b"), ("a", "b")]
    assert m["most_confused"][2]["rate"] == pytest.approx(1 / 3)


def test_topk_balanced_and_empty_split():
    assert topk_accuracy(P, Y, 1) == pytest.approx(4 / 7)
    assert topk_accuracy(P, Y, 2) == pytest.approx(6 / 7)  # only image 3 (a, ranked 3rd) misses
    assert topk_accuracy(P, Y, 9) == 1.0                    # k capped at the number of classes
    assert balanced_accuracy(np.zeros((3, 3))) != balanced_accuracy(np.zeros((3, 3)))  # NaN: nothing to measure
    m = classification_metrics(np.zeros((0, 4)), np.zeros(0, int), CLASSES, "val")
    assert m["n"] == 0 and math.isnan(m["accuracy"]) and m["classes_absent"] == CLASSES


def test_probability_metrics_by_hand():
    p = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.9, 0.1]])
    y = np.array([0, 1, 1, 0])  # right (0.8), wrong (0.6), right (0.7), right (0.9)
    assert log_loss(p, y) == pytest.approx(-(math.log(0.8) + math.log(0.4) + math.log(0.7) + math.log(0.9)) / 4)
    assert brier_score(p, y) == pytest.approx((0.08 + 0.72 + 0.18 + 0.02) / 4)
    # 10 bins: every confidence lands in its own bin -> ECE = mean |correct - confidence|
    assert expected_calibration_error(p, y, bins=10) == pytest.approx((0.2 + 0.6 + 0.3 + 0.1) / 4)
    bins = reliability_bins(p, y, bins=10)
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]
    assert bins[5]["accuracy"] == 0.0 and bins[5]["confidence"] == pytest.approx(0.6)
    assert bins[0]["accuracy"] is None  # empty bins stay valid JSON
    # 2 bins: all four share (0.5, 1]: |3/4 - 0.75| = 0
    assert expected_calibration_error(p, y, bins=2) == pytest.approx(0.0)
    assert log_loss(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(-math.log(1e-15))  # clipped, finite


def _logits(n: int, scale: float, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    return scale * np.eye(5)[y] + rng.normal(0, noise, (n, 5)), y


@pytest.mark.parametrize("scale,noise,direction", [(12.0, 5.0, ">"), (0.6, 0.25, "<")])
def test_temperature_fits_nll_minimum_and_keeps_top1(scale, noise, direction):
    lg, y = _logits(2000, scale, noise)
    t = fit_temperature(lg, y)
    assert (t > 1) if direction == ">" else (t < 1)  # over-confident -> soften; under-confident -> sharpen
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 2001))
    best = grid[np.argmin([nll(lg, y, g) for g in grid])]
    assert t == pytest.approx(best, rel=0.01)
    test_lg, test_y = _logits(2000, scale, noise, seed=1)  # held out, same distribution
    block = calibration_block(test_lg, test_y, t)["calibration"]
    assert block["top1_unchanged"] and block["n"] == 2000 and block["temperature"] == t
    assert np.array_equal(softmax(test_lg, t).argmax(1), test_lg.argmax(1))
    assert block["after"]["ece"] < block["before"]["ece"]
    assert block["after"]["log_loss"] < block["before"]["log_loss"]
    assert len(block["reliability"]["after"]) == block["bins"] == 15


def test_temperature_degenerate_inputs():
    assert fit_temperature(np.zeros((0, 3)), np.zeros(0, int)) == 1.0
    lg = np.array([[9.0, 0.0], [0.0, 9.0]])
    # no mistakes: the NLL would fall all the way to T -> 0 (certainty on no evidence); two right answers
    # support a mean confidence of (2 + 1) / (2 + 2) = 0.75 only, so this confident model is softened
    t = fit_temperature(lg, np.array([0, 1]))
    assert t > 1 and softmax(lg, t).max(1).mean() == pytest.approx(0.75, abs=1e-3)
    # no mistakes but clearly under-confident (the digits demo's case): sharpened up to (n + 1) / (n + 2)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 359)
    under = 1.5 * np.eye(10)[y] + rng.uniform(0, 0.3, (359, 10))
    t_u = fit_temperature(under, y)
    assert t_u < 1 and softmax(under, t_u).max(1).mean() == pytest.approx(360 / 361, abs=1e-3)
    assert expected_calibration_error(softmax(under, t_u), y) < expected_calibration_error(softmax(under, 1.0), y)
    # one mistake among confident rights: inside the bounds, confidence capped at (4 + 1) / (5 + 2)
    lg3 = np.array([[9.0, 0.0], [0.0, 9.0], [4.0, 0.0], [0.0, 5.0], [1.0, 0.0]])
    y3 = np.array([0, 1, 0, 1, 1])
    t3 = fit_temperature(lg3, y3)
    assert 0.05 < t3 < 20 and softmax(lg3, t3).max(1).mean() <= 5 / 7 + 1e-6


def test_tta_views():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    assert torch.equal(make_view(x, "hflip"), x.flip(3)) and torch.equal(make_view(x, "vflip"), x.flip(2))
    for v in ("crop_c", "crop_tl", "crop_tr", "crop_bl", "crop_br"):
        assert make_view(x, v).shape == x.shape
    tl, br = make_view(x, "crop_tl"), make_view(x, "crop_br")
    assert tl[0, 0, 0, 0] == x[0, 0, 0, 0] and br[0, 0, -1, -1] == x[0, 0, -1, -1]  # corners kept
    with pytest.raises(ValueError, match="unknown TTA view"):
        make_view(x, "rotate")
    calls = []
    fn = lambda b: (calls.append(1), b[:, :, 0, 0].numpy())[1]  # noqa: E731 - first pixel as "logits"
    out = tta_logits(fn, x, ["identity", "hflip"])
    assert len(calls) == 2 and np.allclose(out, (x[:, :, 0, 0] + x[:, :, 0, -1]).numpy() / 2)
    assert views_from_config({"augment": "none", "hflip": True}) == ["identity"]  # no views it never saw
    assert views_from_config({"augment": "standard", "hflip": True, "scale_min": 1.0}) == ["identity", "hflip"]
    assert "crop_c" in views_from_config({"augment": "light", "hflip": False, "scale_min": 0.85})
    assert views_for({}) and views_for({"tta": {"views": ["identity"]}}) == ["identity"]


def test_corruptions_exact_and_shape():
    x = np.full((2, 20, 20, 1), 100, np.uint8)
    x[:, 5:15, 5:15] = 200
    assert corrupt(x, "brightness", 3)[0, 0, 0, 0] == round(255 * (100 / 255 + 0.45))
    mean = x[0].mean() / 255
    assert corrupt(x, "contrast", 3)[0, 0, 0, 0] == round(255 * ((100 / 255 - mean) * 0.2 + mean))
    for name in CORRUPTIONS:
        for s in (1, 2, 3):
            out = corrupt(x, name, s)
            assert out.shape == x.shape and out.dtype == np.uint8
    assert np.array_equal(corrupt(x, "noise", 2, seed=3), corrupt(x, "noise", 2, seed=3))
    assert not np.array_equal(corrupt(x, "blur", 3), x) and not np.array_equal(corrupt(x, "jpeg", 3), x)
    rgb = np.random.default_rng(0).integers(0, 255, (1, 16, 16, 3), dtype=np.uint8)
    assert corrupt(rgb, "jpeg", 1).shape == rgb.shape
    with pytest.raises(ValueError):
        corrupt(x, "fog", 1)


def test_robustness_table_with_a_known_classifier():
    from nextclass.data.transforms import Preprocess

    # class 0 dark (40), class 1 bright (200); the "model" predicts bright when the mean normalised pixel > 0.
    n = 60
    labels = np.arange(n) % 2
    imgs = np.where(labels[:, None, None, None] == 1, 200, 40).astype(np.uint8) * np.ones((1, 16, 16, 1), np.uint8)
    fn = lambda b: torch.stack([-b.mean((1, 2, 3)), b.mean((1, 2, 3))], 1).numpy()  # noqa: E731
    pp = Preprocess(size=16, crop=16, channels=1)
    r = robustness(fn, imgs, labels, pp, RobustnessOptions(split="test"))
    assert r["n"] == r["of"] == n and r["split"] == "test" and r["clean_accuracy"] == 1.0
    # +0.15 and +0.30 keep dark images below mid-grey, +0.45 lifts them over: the dark half flips
    assert r["corruptions"]["brightness"]["accuracy"] == [1.0, 1.0, 0.5]
    assert robustness(fn, imgs, labels, pp, RobustnessOptions(max_images=40))["n"] == 40  # capped
    assert set(r["corruptions"]) == set(CORRUPTIONS)
    assert all(0 <= a <= 1 for v in r["corruptions"].values() for a in v["accuracy"])
    rows = np.arange(n)[::-1]  # via rows= into a larger array: same numbers
    r2 = robustness(fn, imgs, labels[rows], pp, rows=rows)
    assert r2["corruptions"]["brightness"]["accuracy"] == [1.0, 1.0, 0.5]
