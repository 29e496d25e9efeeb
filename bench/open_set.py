"""Benchmark: which score flags images of classes never seen in training (open set), and what abstaining costs.

Trains simple_cnn through the real ``nextclass.train`` path on Fashion-MNIST *without* two classes (default:
Shirt, close to T-shirt/Pullover/Coat, and Bag, unlike any other class), with ``target_accuracy=0.99``. Then,
on the official 10k test images, it scores every image with each trust score of
:mod:`nextclass.metrics.selective` (max calibrated probability, margin, energy) and the distance to the nearest
training image in the bundle's neighbour index (:mod:`nextclass.neighbors`), and prints as JSON:

* AUROC of each score separating the 8 known classes' test images (positive) from the 2 unknown classes';
* AUROC of each score separating right from wrong predictions on the known classes;
* on the known test images, the coverage and accepted accuracy at the bundle's threshold (chosen on val for
  0.99), and the share of unknown-class images that threshold rejects;
* the share of known and of unknown test images flagged ``unfamiliar`` by the bundle's distance threshold
  (the conformal 95% quantile of val distances; :func:`nextclass.metrics.selective.distance_threshold`).

It also draws the risk-coverage curves of the known test images (``--figure``).

    flock /tmp/nextclass-bench.lock .venv/bin/python bench/open_set.py [--epochs 6] [--unknown Shirt Bag]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def write_known(folder: Path, source, unknown: set[str]) -> None:
    """The known classes' official train/test images as ``folder/<split>/<class>/*.png`` (unknown ones left out)."""
    from PIL import Image

    for s in source.samples:
        name = source.classes[s.label]
        if name in unknown:
            continue
        d = folder / s.split / name.replace("/", "-")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(source.array[s.index]).save(d / f"{Path(s.path).name}.png")


def test_scores(pred, images: np.ndarray, batch: int = 512) -> tuple[dict, np.ndarray]:
    """Every score (higher = more trusted) and the predicted class of each test image."""
    import torch

    from nextclass.metrics.selective import scores_from_logits

    index = pred.neighbor_index()
    logits, knn = [], []
    for a in range(0, len(images), batch):
        x = torch.stack([pred.to_tensor(im) for im in images[a:a + batch]])
        logits.append(pred.logits(x))
        knn.append(-index.search(pred.embed(x), 1)[0][:, 0])  # minus the distance to the nearest training image
    lg = np.concatenate(logits)
    scores = scores_from_logits(lg, pred.temperature)
    scores["knn_distance"] = np.concatenate(knn)
    return scores, lg.argmax(1)


def risk_coverage_figure(scores: dict, correct: np.ndarray, at: tuple[float, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nextclass.metrics.selective import coverage_curve

    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    for name, s in scores.items():
        _, cov, acc = coverage_curve(s, correct)
        ax.plot(cov, 1 - acc, label=name, lw=1.6)
    ax.plot([at[0]], [1 - at[1]], "o", color="#c62828", label=f"threshold for 0.99 on val: coverage {at[0]:.1%}")
    ax.set(xlabel="coverage (share of known-class test images accepted)", ylabel="risk (error rate of accepted)",
           title="Fashion-MNIST, 8 known classes, official test", xlim=(0, 1.01), ylim=(0, None))
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)


def unfamiliar_shares(threshold: float | None, distance: np.ndarray, known: np.ndarray) -> dict | None:
    """Shares of known and unknown images farther than ``threshold`` from every training image (None: no threshold).

    Example:
        >>> unfamiliar_shares(0.5, np.array([0.1, 0.6, 0.7, 0.2]), np.array([True, True, False, False]))
        {'distance': 0.5, 'known_flagged': 0.5, 'unknown_flagged': 0.5}
    """
    if threshold is None:
        return None
    far = distance > threshold
    return {"distance": round(float(threshold), 5), "known_flagged": round(float(far[known].mean()), 4),
            "unknown_flagged": round(float(far[~known].mean()), 4)}


def measure(run: Path, source, unknown: set[str], figure: Path | None) -> dict:
    import nextclass
    from nextclass.metrics.selective import auroc

    pred = nextclass.load(run)
    test = [s for s in source.samples if s.split == "test"]
    images = source.array[[s.index for s in test]]
    names = [source.classes[s.label] for s in test]
    known = np.array([n not in unknown for n in names])
    scores, top = test_scores(pred, images)
    truth = np.array([pred.classes.index(n.replace("/", "-")) if k else -1 for n, k in zip(names, known)])
    correct = (top == truth)[known]
    th = pred.abstain_threshold()
    accepted = scores[pred.meta["abstain"]["score"]] >= th
    out = {"auroc_known_vs_unknown": {k: round(float(auroc(s, known)), 4) for k, s in scores.items()},
           "auroc_right_vs_wrong_known": {k: round(float(auroc(s[known], correct)), 4) for k, s in scores.items()},
           "known_test_accuracy": round(float(correct.mean()), 4), "n_known": int(known.sum()),
           "n_unknown": int((~known).sum()),
           "threshold_0.99": {"threshold": round(float(th), 5), "val_coverage": pred.meta["abstain"]["val_coverage"],
                              "test_coverage": round(float(accepted[known].mean()), 4),
                              "test_accepted_accuracy": round(float(correct[accepted[known]].mean()), 4),
                              "unknown_rejected": round(float(1 - accepted[~known].mean()), 4)}}
    out["unfamiliar"] = unfamiliar_shares(pred.unfamiliar_distance(), -scores["knn_distance"], known)
    if figure is not None:
        risk_coverage_figure({k: s[known] for k, s in scores.items()}, correct,
                             (out["threshold_0.99"]["test_coverage"], out["threshold_0.99"]["test_accepted_accuracy"]),
                             figure)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fashion-dir", default=None, help="folder of the IDX files (default: the built-in's)")
    ap.add_argument("--unknown", nargs=2, default=["Shirt", "Bag"], help="the two classes left out of training")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--output", default="/tmp/nextclass-openset")
    ap.add_argument("--figure", default="bench/results/open_set_risk_coverage.png")
    args = ap.parse_args()

    import nextclass
    from nextclass.data.builtin import fashion_mnist

    t0 = time.time()
    source = fashion_mnist(args.fashion_dir)
    unknown = set(args.unknown)
    if not unknown <= set(source.classes):
        raise SystemExit(f"--unknown {args.unknown}: choose among {source.classes}")
    data = Path(args.output) / "data"
    if not data.exists():
        write_known(data, source, unknown)
    run = Path(nextclass.train(data=str(data), model="simple_cnn", epochs=args.epochs, batch_size=128, augment="light",
                               output=args.output, name=f"openset-{int(t0)}", target_accuracy=0.99, report=False,
                               progress=False))
    out = {"benchmark": "open_set_fashion_mnist", "unknown": sorted(unknown), "epochs": args.epochs,
           **measure(run, source, unknown, Path(args.figure) if args.figure else None),
           "wall_seconds": round(time.time() - t0, 1), "run": str(run)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
