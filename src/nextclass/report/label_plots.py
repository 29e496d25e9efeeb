"""The plots of a multi-label run's report, as PNG bytes (matplotlib's object API on the Agg canvas, as
:mod:`nextclass.report.plots`): per-label AP and F1 bars, precision-recall curves with each label's operating point,
reliability before and after the per-label calibration, and the labels' co-occurrence.

Each function takes plain arrays and dicts (a metrics block, probabilities and 0/1 truths read from
``predictions*.csv``), so the same plots serve ``report.html``, the run's ``plots/`` folder and a notebook.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nextclass.report.plots import BAD, GOOD, _figure, _png, short_label

__all__ = ["label_bars", "pr_curves", "label_reliability", "cooccurrence_matrix", "MAX_CURVES"]

MAX_CURVES = 12  # labels drawn one by one in the curve plots (the rest: in the pooled curve only)


def label_bars(per_label: dict, title: str = "", limit: int = 60) -> bytes:
    """Horizontal bars per label, worst AP first: average precision (ranking, no threshold) beside F1 at the label's
    threshold, with the label's positives (``limit`` worst shown).

    Example:
        >>> png = label_bars({"cat": {"ap": 0.9, "f1": 0.8, "support": 5}, "dog": {"ap": None, "f1": 0.0, "support": 0}})
        >>> png[:4] == b"\\x89PNG"
        True
    """
    def key(kv):
        return (kv[1]["support"] == 0, kv[1].get("ap") if kv[1].get("ap") is not None else 2.0)

    rows = sorted(per_label.items(), key=key)[:limit][::-1]
    fig = _figure(7.5, max(2.5, 0.36 * len(rows) + 1.3))
    ax = fig.subplots()
    pos = np.arange(len(rows))
    ap = [r.get("ap") or 0.0 for _, r in rows]
    f1 = [r["f1"] for _, r in rows]
    ax.barh(pos + 0.2, ap, height=0.4, color="#4c78a8", label="AP (ranking)")
    ax.barh(pos - 0.2, f1, height=0.4, color="#f58518", label="F1 at the threshold")
    for y, (_, r) in zip(pos, rows):
        text = f"AP {r['ap']:.2f}, F1 {r['f1']:.2f} (n={r['support']})" if r["support"] else "no positives in split"
        ax.text(1.01, y, text, va="center", fontsize=8)
    ax.set_yticks(pos, [short_label(c) for c, _ in rows], fontsize=8)
    ax.set_xlim(0, 1.55)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.35, -0.12), ncols=2, fontsize=8)
    if title:
        ax.set_title(title)
    return _png(fig)


def pr_curves(probs: np.ndarray, truth: np.ndarray, labels: Sequence[str], thresholds: Sequence[float] | None = None,
              title: str = "") -> bytes | None:
    """Precision against recall for each label (up to :data:`MAX_CURVES`, most positives first), the label's
    operating point at its threshold marked; None when no label has a positive.

    Example:
        >>> p, y = np.array([[0.9], [0.2], [0.7]]), np.array([[1], [0], [1]])
        >>> pr_curves(p, y, ["cat"], [0.5])[:4] == b"\\x89PNG"
        True
    """
    from sklearn.metrics import precision_recall_curve

    p, y = np.asarray(probs, np.float64), np.asarray(truth, np.int64)
    order = [j for j in np.argsort(-y.sum(axis=0), kind="stable") if y[:, j].any()][:MAX_CURVES]
    if not order:
        return None
    fig = _figure(7, 4.6)
    ax = fig.subplots()
    for j in order:
        prec, rec, _ = precision_recall_curve(y[:, j], p[:, j])
        line = ax.plot(rec, prec, drawstyle="steps-post", lw=1.5, label=f"{short_label(labels[j])} (n={y[:, j].sum()})")
        if thresholds is not None:
            pred = p[:, j] >= thresholds[j]
            tp = int((pred & (y[:, j] == 1)).sum())
            ax.plot([tp / y[:, j].sum()], [tp / max(int(pred.sum()), 1)], "o", color=line[0].get_color(), ms=6)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", ncols=2 if len(order) > 6 else 1)
    ax.set_title(title + ("\n" if title else "") + "dots: each label at its threshold", fontsize=10)
    return _png(fig)


def _bins(p: np.ndarray, y: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean probability and share of positives in equal-mass bins (as the run's ECE is measured)."""
    order = np.argsort(p, kind="stable")
    parts = [b for b in np.array_split(order, min(bins, len(p))) if len(b)]
    return np.array([p[b].mean() for b in parts]), np.array([y[b].mean() for b in parts])


def label_reliability(before: np.ndarray, after: np.ndarray, truth: np.ndarray, labels: Sequence[str],
                      ece: tuple[float | None, float | None] = (None, None), bins: int = 10, title: str = "") -> bytes:
    """Share of positives against the predicted probability, in equal-mass bins, before (raw ``sigmoid(z)``) and after
    the per-label offset and temperature: every (image, label) pair pooled (thick), and each label (thin, up to
    :data:`MAX_CURVES`). ``ece``: the block's mean ECE before and after, for the panel titles.

    Example:
        >>> y = np.array([[1], [0], [1], [0]])
        >>> png = label_reliability(np.full((4, 1), 0.5), np.array([[0.9], [0.1], [0.8], [0.2]]), y, ["cat"])
        >>> png[:4] == b"\\x89PNG"
        True
    """
    y = np.asarray(truth, np.float64)
    fig = _figure(10, 4.4)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, p, name, e in ((axes[0], before, "before (raw sigmoid)", ece[0]),
                           (axes[1], after, "after (per-label offset and T)", ece[1])):
        p = np.asarray(p, np.float64)
        for j in range(min(p.shape[1], MAX_CURVES)):
            mp, share = _bins(p[:, j], y[:, j], bins)
            ax.plot(mp, share, "-", lw=0.8, alpha=0.6, label=short_label(labels[j], 12))
        mp, share = _bins(p.ravel(), y.ravel(), bins)
        ax.plot(mp, share, "-o", color="black", lw=2, ms=3, label="all labels")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("predicted probability of the label")
        ax.set_title(name + (f": mean ECE {e:.3f}" if e is not None else ""), color=GOOD if "after" in name else BAD)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of images carrying the label")
    axes[1].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title)
    return _png(fig)


def cooccurrence_matrix(co: np.ndarray, labels: Sequence[str], title: str = "") -> bytes:
    """The labels' co-occurrence: counts of images carrying both (the diagonal: images per label), coloured by the
    share of the row label's images that also carry the column label.

    Example:
        >>> cooccurrence_matrix(np.array([[3, 1], [1, 2]]), ["a", "b"])[:4] == b"\\x89PNG"
        True
    """
    co = np.asarray(co, np.float64)
    k = len(labels)
    diag = np.diag(co)[:, None]
    share = np.divide(co, diag, out=np.zeros_like(co), where=diag > 0)
    np.fill_diagonal(share, 0)  # the diagonal is 1 by definition: white, so the pairs stand out
    side = min(max(3.5, 0.45 * k + 2.5), 16)
    fig = _figure(side + 1, side)
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Purples", vmin=0, vmax=max(float(share.max()), 1e-9))
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the row label's images")
    names = [short_label(c) for c in labels]
    ax.set_xticks(range(k), names, rotation=90 if k > 6 else 0, fontsize=8 if k > 15 else 9)
    ax.set_yticks(range(k), names, fontsize=8 if k > 15 else 9)
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if co[i, j]:
                    ax.text(j, i, f"{int(co[i, j])}", ha="center", va="center", fontsize=7 if k > 12 else 9,
                            fontweight="bold" if i == j else "normal",
                            color="white" if share[i, j] > 0.6 * share.max() and i != j else "black")
    ax.set_title(title or "images carrying both labels (diagonal: images per label)", fontsize=10)
    return _png(fig)
