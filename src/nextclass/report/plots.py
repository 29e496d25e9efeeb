"""The report's plots, as PNG bytes (matplotlib's object API on the Agg canvas: no pyplot state, thread-safe).

Each function takes plain data (history rows, a metrics block, images) and returns the PNG, so
the same plots serve ``report.html``, the ``plots/`` folder of a run and anyone's notebook.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np

__all__ = ["learning_curves", "confusion_matrix", "per_class_f1", "reliability_diagram", "image_grid",
           "robustness_plot", "prediction_sets", "GOOD", "BAD"]

GOOD, BAD = "#1a7f37", "#cf222e"
_DPI = 100


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=_DPI, layout="constrained")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def short_label(name: str, width: int = 18) -> str:
    """A class name cut to ``width`` characters for axis labels."""
    return name if len(name) <= width else name[: width - 1] + "\u2026"


def _num(row: dict, key: str) -> float:
    try:
        return float(row.get(key, "nan"))
    except (TypeError, ValueError):
        return float("nan")


def learning_curves(history: Sequence[dict], acc_names: dict | None = None) -> bytes | None:
    """Loss and accuracy per epoch, train vs val, with phase boundaries marked (``history.csv`` rows).

    ``acc_names``: what the ``*_acc`` columns hold when it is not accuracy, ``{"title", "train", "val"}`` (a multi-label
    run: train exact match at 0.5, val mAP).

    Example:
        >>> png = learning_curves([{"epoch": "1", "phase": "scratch", "train_loss": "1.0", "val_loss": "0.9",
        ...                         "train_acc": "0.5", "val_acc": "0.6"}])
        >>> png[:4] == b"\\x89PNG"
        True
    """
    from matplotlib.ticker import MaxNLocator

    if not history:
        return None
    ep = [int(float(r["epoch"])) for r in history]
    fig = _figure(10, 3.6)
    axes = fig.subplots(1, 2)
    names = acc_names or {}
    for ax, what in zip(axes, ("loss", "acc")):
        for split, style in (("train", "-o"), ("val", "-s")):
            ys = [_num(r, f"{split}_{what}") for r in history]
            if not all(math.isnan(y) for y in ys):
                ax.plot(ep, ys, style, ms=3, label=names.get(split, split) if what == "acc" else split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("loss" if what == "loss" else names.get("title", "accuracy"))
        ax.grid(alpha=0.3)
    phases = [r.get("phase", "") for r in history]
    for i in range(1, len(phases)):
        if phases[i] != phases[i - 1]:
            for ax in axes:
                ax.axvline(ep[i] - 0.5, color="grey", ls="--", lw=1)
    for ax in axes:  # phase names at the top of each stretch
        start = 0
        for i in range(1, len(phases) + 1):
            if i == len(phases) or phases[i] != phases[start]:
                if len(set(phases)) > 1 or phases[start]:
                    ax.annotate(phases[start], xy=(ep[start], 1.0), xycoords=("data", "axes fraction"),
                                xytext=(2, -12), textcoords="offset points", fontsize=8, color="grey")
                start = i
    axes[0].legend()
    if names:
        axes[1].legend(fontsize=8)
    return _png(fig)


def confusion_matrix(cm: Sequence[Sequence[int]], classes: Sequence[str], title: str = "") -> bytes:
    """Row-normalised confusion matrix (colour = share of the true class), counts written in the cells."""
    cm = np.asarray(cm, dtype=float)
    k = len(classes)
    support = cm.sum(axis=1, keepdims=True)
    rate = np.divide(cm, support, out=np.zeros_like(cm), where=support > 0)
    side = min(max(4.0, 0.45 * k + 2.5), 16)
    fig = _figure(side + 1, side)
    ax = fig.subplots()
    im = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of true class")
    labels = [short_label(c) for c in classes]
    ax.set_xticks(range(k), labels, rotation=90 if k > 6 else 0, fontsize=8 if k > 15 else 9)
    ax.set_yticks(range(k), labels, fontsize=8 if k > 15 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 25:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7 if k > 12 else 9,
                            color="white" if rate[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    return _png(fig)


def per_class_f1(per_class: dict, title: str = "", limit: int = 60) -> bytes:
    """Horizontal F1 bars per class, worst first, with the support of each class (``limit`` worst shown)."""
    rows = sorted(per_class.items(), key=lambda kv: (kv[1]["support"] == 0, kv[1]["f1"]))[:limit]
    fig = _figure(7, max(2.5, 0.28 * len(rows) + 1.2))
    ax = fig.subplots()
    names = [short_label(c) for c, _ in rows][::-1]
    f1 = [r["f1"] for _, r in rows][::-1]
    sup = [r["support"] for _, r in rows][::-1]
    bars = ax.barh(range(len(rows)), f1, color=["#999" if s == 0 else "#4c78a8" for s in sup])
    for b, v, s in zip(bars, f1, sup):
        ax.text(min(b.get_width() + 0.01, 0.9), b.get_y() + b.get_height() / 2,
                f"{v:.2f}  (n={s})" if s else "absent from split", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), names, fontsize=8)
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("F1")
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    return _png(fig)


def reliability_diagram(calibration: dict, title: str = "") -> bytes:
    """Accuracy vs confidence per bin, before and after temperature scaling, with ECE; confidence histogram below."""
    fig = _figure(9, 4.6)
    axes = fig.subplots(2, 2, height_ratios=[3, 1], sharex=True)
    t = calibration.get("temperature", 1.0)
    for col, key, label in ((0, "before", "before (T = 1)"), (1, "after", f"after (T = {t:.3g})")):
        bins = calibration["reliability"][key]
        ax, hx = axes[0][col], axes[1][col]
        lo = np.array([b["lo"] for b in bins])
        width = bins[0]["hi"] - bins[0]["lo"]
        acc = np.array([b["accuracy"] if b["count"] else 0.0 for b in bins])
        conf = np.array([b["confidence"] if b["count"] else 0.0 for b in bins])
        cnt = np.array([b["count"] for b in bins])
        ax.bar(lo, acc, width=width, align="edge", color="#4c78a8", edgecolor="white", label="accuracy")
        ax.bar(lo, np.where(cnt > 0, conf - acc, 0), bottom=acc, width=width, align="edge", color=BAD, alpha=0.3,
               edgecolor=BAD, label="gap to confidence")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{label}: ECE {calibration[key]['ece']:.4f}")
        ax.set_ylabel("accuracy")
        hx.bar(lo, cnt, width=width, align="edge", color="#999")
        hx.set_xlabel("confidence (max probability)")
        hx.set_ylabel("images")
        ax.legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    return _png(fig)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def image_grid(items: Sequence[tuple[np.ndarray, str, bool | None]], cols: int = 8, title: str = "",
               cell: int = 110) -> bytes | None:
    """Images (uint8 HxW[xC], or None for an empty cell) with a caption each (green when ``ok`` is True,
    red when False), as one PNG.

    Drawn with PIL rather than matplotlib: a grid of 30 small images costs milliseconds instead of seconds.

    Example:
        >>> png = image_grid([(np.zeros((8, 8), np.uint8), "a", True)], title="t")
        >>> png[:4] == b"\\x89PNG"
        True
    """
    from PIL import Image, ImageDraw

    if not items:
        return None
    cols = max(1, min(cols, len(items)))
    rows = math.ceil(len(items) / cols)
    font, tfont = _font(11), _font(14)
    lines = max(len(c.split("\n")) for _, c, _ in items)
    if all(img is None for img, _, _ in items):
        return None
    pad, cap_h, top = 6, 13 * lines + 4, (24 if title else 4)
    sheet = Image.new("RGB", (cols * (cell + pad) + pad, top + rows * (cell + cap_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 4), title, fill="black", font=tfont)
    for k, (img, caption, ok) in enumerate(items):
        if img is None:  # an empty cell (keeps rows aligned, e.g. one class per row)
            continue
        a = np.asarray(img)
        if a.ndim == 3 and a.shape[2] == 1:
            a = a[:, :, 0]
        im = Image.fromarray(a).convert("RGB")
        if max(im.size) >= cell:
            im.thumbnail((cell, cell), Image.LANCZOS)
        else:  # upscale tiny images crisply, by a whole factor
            f = max(1, cell // max(im.size))
            im = im.resize((im.width * f, im.height * f), Image.NEAREST)
        x = pad + (k % cols) * (cell + pad)
        y = top + (k // cols) * (cell + cap_h + pad)
        sheet.paste(im, (x + (cell - im.width) // 2, y + (cell - im.height) // 2))
        colour = {True: GOOD, False: BAD}.get(ok, "black")
        draw.rectangle([x - 1, y - 1, x + cell, y + cell], outline=colour if ok is not None else "#d0d7de")
        for i, line in enumerate(caption.split("\n")):
            draw.text((x, y + cell + 2 + 13 * i), line[:24], fill=colour, font=font)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def robustness_plot(block: dict) -> bytes:
    """Accuracy vs severity for each corruption, with the clean accuracy as a dashed line."""
    fig = _figure(7, 3.8)
    ax = fig.subplots()
    for name, r in block["corruptions"].items():
        ax.plot(range(1, len(r["accuracy"]) + 1), r["accuracy"], "-o", ms=4, label=name)
    ax.axhline(block["clean_accuracy"], color="black", ls="--", lw=1, label="clean")
    ax.set_xticks([1, 2, 3], ["mild", "medium", "strong"])
    ax.set_xlabel("severity")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncols=2)
    ax.set_title(f"{block['split']}: {block['n']} images")
    return _png(fig)


def risk_coverage(selective: dict, title: str = "") -> bytes | None:
    """Risk (error rate of the accepted predictions) against coverage, with the abstain threshold's point."""
    rows = selective.get("risk_coverage") or []
    if not rows:
        return None
    a = np.array(rows, dtype=float)
    fig = _figure(6.5, 3.8)
    ax = fig.subplots()
    ax.plot(a[:, 1], a[:, 2], color="#4c78a8", lw=2, drawstyle="steps-post",
            label=f"accepting {selective.get('curve_score', 'probability')} >= t")
    at = selective.get("at_threshold")
    if at and at.get("accuracy") is not None:
        ax.plot([at["coverage"]], [1 - at["accuracy"]], "o", color=BAD, ms=8,
                label=f"threshold {at['threshold']:.3f}: coverage {at['coverage']:.1%}")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("coverage (share of images accepted)")
    ax.set_ylabel("risk (error rate of accepted)")
    ax.legend(loc="upper left", fontsize=8)
    if title:
        ax.set_title(title)
    return _png(fig)


def prediction_sets(sets: dict, title: str = "", limit: int = 40) -> bytes:
    """Two panels of a metrics block's ``sets``: empirical coverage per class (worst ``limit`` first) against the
    target, and the distribution of set sizes."""
    rows = sorted(((c, v) for c, v in sets["per_class"].items() if v["n"]), key=lambda kv: kv[1]["coverage"])[:limit]
    fig = _figure(10, max(3.0, 0.26 * len(rows) + 1.4))
    ax, bx = fig.subplots(1, 2, width_ratios=[1.3, 1])
    cov = [v["coverage"] for _, v in rows][::-1]
    ax.barh(range(len(rows)), cov, color=[GOOD if c >= sets["target"] else "#d29922" for c in cov])
    ax.axvline(sets["target"], color="black", ls="--", lw=1)
    ax.axvline(sets["coverage"], color="#4c78a8", lw=1.5)
    ax.set_yticks(range(len(rows)), [f"{short_label(c)} (n={v['n']})" for c, v in rows][::-1], fontsize=8)
    ax.set_xlim(min(0.5, min(cov, default=1.0) - 0.05), 1.0)
    ax.set_xlabel("share of sets holding the true class")
    ax.set_title(f"coverage per class (dashed: target {sets['target']:g}, blue: overall {sets['coverage']:.3f})",
                 fontsize=10)
    hist = sets["size_histogram"]
    bx.bar(range(len(hist)), hist, color="#4c78a8")
    bx.set_xticks(range(len(hist)))
    bx.set_xlabel("set size (classes)")
    bx.set_ylabel("images")
    bx.set_title(f"set sizes: mean {sets['mean_size']:.2f}, median {sets['median_size']:g}")
    bx.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    return _png(fig)
