"""Benchmark data (issue 26): an offline multi-label set of Fashion-MNIST mosaics, as PNG files and a CSV manifest.

Each image is a 56x56 mosaic, a 2x2 grid of 28x28 cells holding 1 to 4 Fashion-MNIST items (the other cells black);
its labels are the item classes present (two T-shirts: one label). The item classes are drawn with deliberately
unequal weights (``--weights``, default from 1.0 for T-shirt_top down to 0.02 for Ankle_boot), so some labels are
common and some rare, as in real multi-label data. Train mosaics use only the official 60k train images, test mosaics
only the official 10k test images (no item appears on both sides); val is left to nextclass, which carves it from
train by iterative stratification.

Writes ``OUT/images/{train,test}/NNNNN.png`` and ``OUT/manifest.csv`` (``path,labels,split``, paths relative to the
manifest, labels separated by ';'), then prints JSON: images per split, items per mosaic, label cardinality and each
label's frequency per split.

Full set (14k PNGs; seconds to a minute of one core)::

    python bench/multilabel_data.py --out /tmp/nextclass-bench/fashion-mosaics --train 12000 --test 2000

Small check::

    python bench/multilabel_data.py --out /tmp/fm-mosaics-small --train 200 --test 100

The manifest then trains as ``nextclass train /tmp/nextclass-bench/fashion-mosaics/manifest.csv`` once the
multi-label task is wired in (a later session of issue 26).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from nextclass.data.builtin import FASHION_CLASSES, FASHION_DIR, read_idx

#: Relative weight of each class when an item is drawn (aligned with FASHION_CLASSES): common to rare.
DEFAULT_WEIGHTS = (1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.02)
#: Share of mosaics holding 1, 2, 3 and 4 items.
ITEMS_P = (0.3, 0.3, 0.25, 0.15)


def _load(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    x = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
    y = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(int)
    return x, y


def mosaics(x: np.ndarray, y: np.ndarray, n: int, weights, rng) -> tuple[np.ndarray, list[tuple[int, ...]], np.ndarray]:
    """``n`` 56x56 mosaics from items ``x`` (labels ``y``): images, the sorted class set of each, items per mosaic."""
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    pools = [np.flatnonzero(y == k) for k in range(len(w))]
    out = np.zeros((n, 56, 56), np.uint8)
    sets, counts = [], rng.choice(np.arange(1, 5), size=n, p=ITEMS_P)
    for i in range(n):
        cls = rng.choice(len(w), size=counts[i], p=w)
        cells = rng.permutation(4)[:counts[i]]
        for c, cell in zip(cls, cells):
            r, col = divmod(int(cell), 2)
            out[i, 28 * r:28 * r + 28, 28 * col:28 * col + 28] = x[rng.choice(pools[c])]
        sets.append(tuple(sorted({int(c) for c in cls})))
    return out, sets, counts


def _write(tmp: Path, split: str, images: np.ndarray, sets, rows: list) -> None:
    from PIL import Image

    folder = tmp / "images" / split
    folder.mkdir(parents=True, exist_ok=True)
    for i, (img, s) in enumerate(zip(images, sets)):
        rel = f"images/{split}/{i:05d}.png"
        Image.fromarray(img, "L").save(tmp / rel)
        rows.append([rel, ";".join(FASHION_CLASSES[k] for k in s), split])


def _summary(per_split: dict) -> dict:
    out = {"classes": list(FASHION_CLASSES), "splits": {}}
    for split, (sets, counts) in per_split.items():
        freq = np.zeros(len(FASHION_CLASSES), int)
        for s in sets:
            freq[list(s)] += 1
        out["splits"][split] = {
            "images": len(sets), "cardinality": round(float(np.mean([len(s) for s in sets])), 4),
            "items_per_mosaic": {str(k): int((counts == k).sum()) for k in range(1, 5)},
            "no_label": int(sum(1 for s in sets if not s)),
            "label_frequency": {c: int(v) for c, v in zip(FASHION_CLASSES, freq)},
            "label_share": {c: round(float(v) / max(len(sets), 1), 4) for c, v in zip(FASHION_CLASSES, freq)}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/nextclass-bench/fashion-mosaics")
    ap.add_argument("--train", type=int, default=12000, help="train mosaics (from the official train images)")
    ap.add_argument("--test", type=int, default=2000, help="test mosaics (from the official test images)")
    ap.add_argument("--fashion", default=FASHION_DIR, help="folder of the Fashion-MNIST IDX .gz files")
    ap.add_argument("--weights", default=",".join(map(str, DEFAULT_WEIGHTS)),
                    help="relative draw weight of each class, comma-separated, in Fashion-MNIST's class order")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    weights = [float(v) for v in args.weights.split(",")]
    if len(weights) != len(FASHION_CLASSES) or min(weights) <= 0:
        raise SystemExit(f"--weights: give {len(FASHION_CLASSES)} positive numbers, got {args.weights!r}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    rng = np.random.default_rng(args.seed)
    rows: list = []
    per_split = {}
    for split, prefix, n in (("train", "train", args.train), ("test", "t10k", args.test)):
        x, y = _load(Path(args.fashion), prefix)
        images, sets, counts = mosaics(x, y, n, weights, rng)
        _write(tmp, split, images, sets, rows)
        per_split[split] = (sets, counts)
    with open(tmp / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([["path", "labels", "split"], *rows])
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)  # a half-written set is never visible under OUT
    print(json.dumps({"manifest": str(out / "manifest.csv"), "seed": args.seed, "weights": weights,
                      **_summary(per_split)}, indent=1))


if __name__ == "__main__":
    main()
