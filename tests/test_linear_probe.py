"""The linear probe is a logistic regression fitted to convergence, its C chosen on val, and written into the
model's own classifier (issue 24: ten AdamW epochs stopped while val accuracy was still rising)."""

from __future__ import annotations

import csv

import numpy as np
import torch

from test_one_loop import _ctx


def test_linear_probe_is_sklearns_logistic_regression_in_the_models_head(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from nextclass.models.heads import head_logits
    from nextclass.training.features import cached_features
    from nextclass.training.linear_probe import C_GRID, fit_linear_probe

    ctx = _ctx(tmp_path)
    model = ctx.model.eval()
    feats = cached_features(ctx, model, progress=False)
    state: dict = {}
    fit_linear_probe(ctx, model, feats, state)
    rows = list(csv.DictReader(open(ctx.run.history)))
    assert [float(r["lr"]) for r in rows] == [float(f"{c:.3e}") for c in C_GRID]  # one row per C
    val_acc, val_loss = [float(r["val_acc"]) for r in rows], [float(r["val_loss"]) for r in rows]
    se = (max(val_acc) * (1 - max(val_acc)) / len(ctx.labels["val"])) ** 0.5  # the C val picks: the lowest loss
    near = [i for i, a in enumerate(val_acc) if a >= max(val_acc) - se]  # among those within one SE of the best
    assert state["best_epoch"] - 1 == min(near, key=lambda i: val_loss[i])
    x, y = feats.train[0].double().numpy(), ctx.labels["train"]
    ref = LogisticRegression(C=state["probe_c"], max_iter=1000).fit(StandardScaler().fit(x).transform(x), y)
    scaler = StandardScaler().fit(x)
    want = ref.decision_function(scaler.transform(feats.val.double().numpy()))
    got = head_logits(model, feats.val, "cpu")
    assert np.array_equal(got.argmax(1), want.argmax(1))  # the folded scaling gives sklearn's decisions
    assert ctx.run.best_checkpoint.exists() and torch.isfinite(model.get_classifier().weight).all()
    # a rerun on the same features, labels and seed reads the fit back instead of sweeping C again: same head, same rows
    from nextclass.training.linear_probe import _kept_path

    kept = _kept_path(ctx, feats)
    assert kept.exists()
    weight = model.get_classifier().weight.detach().clone()
    torch.nn.init.zeros_(model.get_classifier().weight)
    again: dict = {}
    fit_linear_probe(ctx, model, feats, again)
    assert torch.equal(model.get_classifier().weight, weight) and again == state
    assert list(csv.DictReader(open(ctx.run.history))) == rows
