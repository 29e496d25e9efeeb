"""A real linear probe: multinomial logistic regression on the cached features, fitted to convergence, its L2
strength chosen on validation (the lowest val loss among the strengths within one standard error of the best val
accuracy: on a small val split accuracy cannot tell the strengths apart, its loss can).

A multi-label run fits one binary logistic regression per label (its positives weighed by its negatives, as the
image epochs' loss does), C chosen on val mAP.

This is the linear evaluation of the representation-learning literature (CLIP's and SimCLR's protocol: an
L-BFGS logistic regression on frozen features, the regularisation swept on a held-out split). Ten AdamW epochs on
the head stopped while validation accuracy was still rising (issue 24: 0.179 on 600 photo-like images where a
converged logistic regression on the same features reached 0.48); a convex fit has no schedule to get wrong.

Each value of ``C`` (scikit-learn's inverse L2 strength) is one history row (phase ``probe``; the ``lr`` column
holds C); the one val picks (:func:`_pick`) is written into the model's linear
classifier and checkpointed. Features are standardised for the fit and the scaling is folded back into the
classifier's weights, so the model maps trunk features to logits with no extra layer.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nextclass.engine.checkpoint import save_checkpoint
from nextclass.engine.loop import EpochResult, loss_and_acc
from nextclass.models.heads import head_logits
from nextclass.training.context import Context
from nextclass.training.history import epoch_row, write_history
from nextclass.training.phase import pick_within_noise
from nextclass.training.probe_cost import SELECT_ROWS
from nextclass.utils import atomic_write_json, log, sha1_of

__all__ = ["fit_linear_probe", "C_GRID", "SELECT_ROWS", "is_linear_head"]

C_GRID = tuple(float(c) for c in 10.0 ** np.arange(-4, 3))  # 1e-4 .. 1e2 (as data.label_heads), weakest regularisation last
KEPT_VERSION = 2  # bump when the kept fit's content changes


def is_linear_head(model: nn.Module) -> bool:
    """The model's head is one ``nn.Linear`` on the trunk features (what a logistic regression can set)."""
    return not hasattr(model, "forward_trunk") and isinstance(getattr(model, "get_classifier", lambda: None)(),
                                                                nn.Linear)


def _train_rows(ctx: Context, feats) -> tuple[np.ndarray, np.ndarray]:
    """Every cached view of every training image (view 0: the eval view), as (N x views, D) float64."""
    t = feats.train  # (views, N, D)
    x = t.reshape(-1, t.shape[-1]).double().numpy()
    return x, np.concatenate([ctx.labels["train"]] * t.shape[0])  # class indices (N,) or multi-hot rows (N, L)


def _set_classifier(model: nn.Module, coef: np.ndarray, intercept: np.ndarray, mu: np.ndarray, sd: np.ndarray,
                    k: int) -> None:
    """Fold the standardisation into the classifier: logits = (coef / sd) x + intercept - (coef / sd) mu."""
    if coef.shape[0] == 1 and k == 2:  # scikit-learn's binary model: z for class 1 -> (-z/2, z/2)
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    scale = getattr(model, "logit_scale", None) or 1.0  # the model multiplies the classifier's output by it
    coef, intercept = coef / scale, intercept / scale
    w = coef / sd
    head = model.get_classifier()
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(w, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(intercept - w @ mu, dtype=head.bias.dtype))


def _fit(x: np.ndarray, y: np.ndarray, c: float, warm=None):
    from sklearn.linear_model import LogisticRegression

    if y.ndim == 2:
        return _fit_per_label(x, y, c, warm)
    clf = warm or LogisticRegression(max_iter=1000, warm_start=True)
    clf.set_params(C=c)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning at 1000 iterations: the next C starts from here
        clf.fit(x, y)
    return clf


class _PerLabel:
    """Multi-label: one binary logistic regression per label, each weighing its positives by its negatives (the
    ``pos_weight`` of the image epochs' loss, :func:`nextclass.training.step.positive_weights`, so the offsets the
    finish step removes are the same); ``coef_`` (L, D) and ``intercept_`` (L,) as scikit-learn's."""

    def __init__(self, n_labels: int):
        self.clfs: list = [None] * n_labels

    def fit(self, x: np.ndarray, y: np.ndarray, c: float) -> "_PerLabel":
        from sklearn.linear_model import LogisticRegression

        from nextclass.training.step import MAX_POS_WEIGHT, positive_weights

        w = positive_weights(y)
        coef, icpt = np.zeros((y.shape[1], x.shape[1])), np.zeros(y.shape[1])
        for j in range(y.shape[1]):
            if y[:, j].min() == y[:, j].max():  # a label on every or no training row: a constant answer
                icpt[j] = np.log(MAX_POS_WEIGHT) * (1 if y[0, j] else -1)
                continue
            clf = self.clfs[j] or LogisticRegression(max_iter=1000, warm_start=True)
            clf.set_params(C=c, class_weight={0: 1.0, 1: float(w[j])})
            self.clfs[j] = clf.fit(x, y[:, j])
            coef[j], icpt[j] = clf.coef_[0], clf.intercept_[0]
        self.coef_, self.intercept_ = coef, icpt
        return self


def _fit_per_label(x: np.ndarray, y: np.ndarray, c: float, warm: _PerLabel | None) -> _PerLabel:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at 1000 iterations, as above
        return (warm or _PerLabel(y.shape[1])).fit(x, y, c)


def _sweep(ctx: Context, model: nn.Module, feats, x: np.ndarray, y: np.ndarray, stats) -> tuple[list[dict], int]:
    """One history row per C; returns the rows and the index of the C val picks (:func:`_pick`)."""
    mu, sd = stats
    rows, vals, clf, t0 = [], [], None, time.time()
    k = len(ctx.classes)
    for i, c in enumerate(C_GRID):
        t = time.time()
        clf = _fit((x - mu) / sd, y, c, clf)
        _set_classifier(model, clf.coef_, clf.intercept_, mu, sd, k)
        tr = loss_and_acc(head_logits(model, torch.from_numpy(x).float(), ctx.device), y)
        val = loss_and_acc(head_logits(model, feats.val, ctx.device), ctx.labels["val"])
        res = EpochResult(tr[0], tr[1], len(y), time.time() - t)
        rows.append(epoch_row(i + 1, "probe", res, val, c, time.time() - t0))
        vals.append(val)
    return rows, _pick(ctx, vals)


def _pick(ctx: Context, vals: list[tuple[float, float]]) -> int:
    """The C val picks: the lowest val loss among the C whose val accuracy (mAP) is within one standard error of the
    best (:func:`~nextclass.training.phase.pick_within_noise`, the rule epochs are chosen by); ``monitor: val_loss``:
    the lowest loss; no val split: C = 1."""
    acc, loss = [v[1] for v in vals], [v[0] for v in vals]
    if ctx.cfg.monitor == "val_loss":
        return int(np.nanargmin(loss)) if not np.all(np.isnan(loss)) else C_GRID.index(1.0)
    best = pick_within_noise(acc, loss, len(ctx.labels["val"]))
    return best if best >= 0 else C_GRID.index(1.0)


def _kept_path(ctx: Context, feats) -> Path:
    """Where the probe's fit on these features (their cache key), labels, seed and grid is kept, beside the features."""
    key = sha1_of([KEPT_VERSION, feats.key, ctx.labels["train"].tobytes(), ctx.labels["val"].tobytes(), ctx.cfg.seed,
                   C_GRID, SELECT_ROWS])
    return Path(feats.path).parent / f"probe-{key}.json"


def _read_kept(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError):  # a damaged file: fit again (and overwrite it)
        return None


def _fit_probe(ctx: Context, model: nn.Module, feats) -> dict:
    """The C sweep on (a seeded subsample of) the training rows, then the chosen C on all of them: the history rows,
    the best index, C, and the classifier with the standardisation it was fitted on (JSON-ready)."""
    x_all, y_all = _train_rows(ctx, feats)
    pick = np.random.default_rng(ctx.cfg.seed).permutation(len(y_all))[:SELECT_ROWS]
    mu, sd = x_all.mean(0), x_all.std(0) + 1e-6
    rows, best = _sweep(ctx, model, feats, x_all[pick], y_all[pick], (mu, sd))
    c = C_GRID[best]
    clf = _fit((x_all - mu) / sd, y_all, c)  # the chosen C on every training row (and view)
    return {"rows": rows, "best": int(best), "c": c, "n_rows": int(len(y_all)), "coef": clf.coef_.tolist(),
            "intercept": clf.intercept_.tolist(), "mu": mu.tolist(), "sd": sd.tolist()}


def fit_linear_probe(ctx: Context, model: nn.Module, feats, state: dict) -> None:
    """Set ``model``'s linear classifier by a logistic regression on ``feats`` (C chosen on val); history rows,
    ``best.safetensors`` and the run ``state`` (best, best_loss, best_epoch, probe_c) as every phase keeps them."""
    kept = _kept_path(ctx, feats)
    fit = _read_kept(kept)
    if fit is None:
        fit = _fit_probe(ctx, model, feats)
        atomic_write_json(kept, fit)
    else:
        log(f"probe: the logistic fit of these features and labels is kept from an earlier run ({kept.name[:18]})")
    rows, best, c = fit["rows"], fit["best"], fit["c"]
    _set_classifier(model, *(np.asarray(fit[k], np.float64) for k in ("coef", "intercept", "mu", "sd")),
                    len(ctx.classes))
    val = loss_and_acc(head_logits(model, feats.val, ctx.device), ctx.labels["val"])
    no_val = np.isnan(val[1])
    metric = val[1] if ctx.cfg.monitor == "val_acc" else val[0]
    state.update(best=None if no_val else metric, best_loss=None if no_val else val[0], best_epoch=best + 1,
                 probe_c=c, bad_epochs=0, epoch=len(rows), phase="probe")
    save_checkpoint(ctx.run.best_checkpoint, model, None, dict(state))
    write_history(ctx.run.history, rows)
    log(f"probe: logistic regression on {fit['n_rows']} cached feature rows, C = {c:g} chosen on val from "
        f"{', '.join(f'{x:g}' for x in C_GRID)}" + ("" if no_val else f" (val {'mAP' if ctx.source.multilabel else 'acc'} {val[1]:.4f}, loss {val[0]:.4f})")
        + (" [yellow]no val split: C = 1, the default[/]" if no_val else ""))
