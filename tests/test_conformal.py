"""The maths of prediction sets (nextclass.metrics.conformal) on synthetic calibrated probabilities: the finite-
sample quantile, the coverage promise over many random val/test splits (>= 1 - alpha, and <= 1 - alpha + 1/(n+1)
for continuous scores), APS/RAPS sets as prefixes of the ranking, the too-small-val rule, the bundle entry."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from nextclass.metrics.conformal import (
    MAX_KEPT_SCORES,
    check_coverage,
    class_scores,
    conformal_quantile,
    conformity_scores,
    min_calibration_size,
    prediction_sets,
    set_metrics,
    sets_entry,
    threshold_for,
    tie_breaks,
)


def _synthetic(n: int = 3000, k: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities from random logits and labels drawn from them (calibrated by construction)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * rng.uniform(0.5, 4.0, size=(n, 1))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = (p.cumsum(axis=1) < rng.uniform(size=(n, 1))).sum(axis=1).clip(0, k - 1)
    return p, y


def test_quantile_is_the_finite_sample_corrected_rank():
    s = np.arange(1, 101) / 100  # 100 distinct scores
    assert conformal_quantile(s, 0.9) == 0.91  # ceil(101 * 0.9) = 91st smallest
    assert conformal_quantile(s, 0.95) == 0.96
    assert conformal_quantile(s[:19], 0.95) == 0.19  # ceil(20 * 0.95) = 19 <= 19
    assert conformal_quantile(s[:18], 0.95) == math.inf  # ceil(19 * 0.95) = 19 > 18: too few
    assert conformal_quantile(s[::-1], 0.5) == conformal_quantile(s, 0.5)  # order does not matter


@pytest.mark.parametrize("coverage", [0.8, 0.9, 0.95, 0.99])
def test_val_too_small_rule(coverage):
    """n < 1/alpha - 1 means the quantile is infinite: every set is every class; one more image and it is finite."""
    n = min_calibration_size(coverage)
    assert n == math.ceil(round(1 / (1 - coverage) - 1, 9))
    p, y = _synthetic(n, 5)
    small = sets_entry(p[:-1], y[:-1], coverage)
    assert small["too_small"] and small["threshold"] is None and small["min_val_n"] == n
    assert threshold_for(small) == math.inf and prediction_sets(p, threshold_for(small)).all()
    assert not sets_entry(p, y, coverage)["too_small"]


def test_tie_breaks_are_reproducible_and_give_smaller_sets():
    """The shipped default: randomised APS with a seeded stream (same call, same sets); its sets are smaller than
    the deterministic version's at the same coverage on confident probabilities."""
    p, y = _synthetic(2000, 10, seed=5)
    e = sets_entry(p[:1000], y[:1000], 0.9, seed=1)
    assert e["randomized"] and (tie_breaks(e, 5) == tie_breaks(e, 5)).all()
    assert not (tie_breaks(e, 5) == tie_breaks({**e, "seed": 2}, 5)).all()
    assert (tie_breaks(e, 5, "test") != tie_breaks(e, 5, "val")).all()
    rand = prediction_sets(p[1000:], threshold_for(e), u=tie_breaks(e, 1000)).sum(axis=1).mean()
    det = sets_entry(p[:1000], y[:1000], 0.9, randomized=False)
    assert rand < prediction_sets(p[1000:], threshold_for(det)).sum(axis=1).mean()


@pytest.mark.parametrize("kw", [{}, {"penalty": 0.05, "k_reg": 2}, {"randomized": True}], ids=["aps", "raps", "aps-u"])
@pytest.mark.parametrize("coverage", [0.9, 0.95])
def test_coverage_over_random_splits_is_within_the_promise(kw, coverage):
    """Over many random val/test splits of exchangeable data, the mean test coverage lies in
    [coverage, coverage + 1/(n+1)] (continuous scores), up to the sampling error of the mean."""
    p, y = _synthetic(4000, 8, seed=1)
    rng = np.random.default_rng(2)
    u = rng.uniform(size=len(y)) if kw.get("randomized") else None  # one draw per image, part of its score
    scores = conformity_scores(p, y, penalty=kw.get("penalty", 0.0), k_reg=kw.get("k_reg", 1), u=u)
    n, reps = 300, 400
    cov = np.empty(reps)
    for r in range(reps):
        perm = rng.permutation(len(y))
        q = conformal_quantile(scores[perm[:n]], coverage)
        cov[r] = (scores[perm[n:]] <= q).mean()
    err = 3 * cov.std() / math.sqrt(reps)
    assert cov.mean() >= coverage - err, (cov.mean(), err)
    assert cov.mean() <= coverage + 1 / (n + 1) + err, (cov.mean(), err)


def test_sets_are_prefixes_of_the_ranking_and_nested_across_coverage():
    p, y = _synthetic(500, 6, seed=3)
    order = np.argsort(-p, axis=1, kind="stable")
    e = sets_entry(p[:250], y[:250], None)
    last = None
    for c in (0.5, 0.8, 0.9, 0.95):
        sets = prediction_sets(p[250:], threshold_for(e, c))
        ranked = np.take_along_axis(sets, order[250:], axis=1)
        assert (np.diff(ranked.astype(int), axis=1) <= 0).all()  # in the set -> every better-ranked class too
        if last is not None:
            assert (sets >= last).all()  # a higher coverage only adds classes
        last = sets
    raps = prediction_sets(p[250:], 0.9, penalty=0.2, k_reg=1)
    assert raps.sum(axis=1).mean() < prediction_sets(p[250:], 0.9).sum(axis=1).mean()  # the penalty shrinks sets


def test_scores_and_metrics_on_a_hand_example():
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.05, 0.15, 0.8]])
    assert np.allclose(class_scores(p), [[0.5, 0.8, 1.0], [1.0, 0.6, 0.9], [1.0, 0.95, 0.8]])
    assert np.allclose(class_scores(p, penalty=0.1, k_reg=1), [[0.5, 0.9, 1.2], [1.2, 0.6, 1.0], [1.2, 1.05, 0.8]])
    assert np.allclose(class_scores(p, u=np.zeros(3)), [[0.0, 0.5, 0.8], [0.9, 0.0, 0.6], [0.95, 0.8, 0.0]])
    sets = prediction_sets(p, 0.85)
    assert sets.tolist() == [[True, True, False], [False, True, False], [False, False, True]]
    m = set_metrics(sets, np.array([1, 2, 2]), ["a", "b", "c"])
    assert m["coverage"] == pytest.approx(2 / 3) and m["size_histogram"] == [0, 2, 1, 0]
    assert m["per_class"]["c"] == {"n": 2, "coverage": 0.5, "mean_size": 1.0}
    assert m["per_class"]["a"]["coverage"] is None and m["singleton_accuracy"] == 0.5
    assert m["mean_size"] == pytest.approx(4 / 3) and m["median_size"] == 1.0 and m["empty"] == 0.0


@pytest.mark.parametrize("randomized", [True, False])
def test_bundle_entry_is_json_and_serves_other_levels(randomized):
    p, y = _synthetic(MAX_KEPT_SCORES + 500, 5, seed=4)
    e = json.loads(json.dumps(sets_entry(p, y, 0.9, randomized=randomized, seed=3)))
    assert len(e["val_scores"]) == MAX_KEPT_SCORES and e["val_n"] == len(y)  # a seeded subsample above the cap
    assert e["val_scores"] == sorted(e["val_scores"]) and e["randomized"] is randomized
    u = tie_breaks(e, len(y), "val")
    assert (u is None) is not randomized
    exact = conformal_quantile(conformity_scores(p, y, u=u), 0.9)
    assert threshold_for(e) == exact  # the trained level: from all of val
    small = sets_entry(p[:300], y[:300], None, randomized=randomized, seed=3)
    kept = threshold_for(small, 0.9)
    u = tie_breaks(small, 300, "val")
    assert 0 <= kept - conformal_quantile(conformity_scores(p[:300], y[:300], u=u), 0.9) <= 1e-7  # rounded up only
    with pytest.raises(ValueError, match="trained without one"):
        threshold_for(small)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, float("nan"), "x"])
def test_bad_coverage_names_the_field(bad):
    with pytest.raises(ValueError, match=r"^coverage .*give a number in \(0, 1\)"):
        check_coverage(bad)
