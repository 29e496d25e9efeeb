"""A planted multi-label image folder for tests: 24-px colour images on a noise background, each carrying any of
three labels whose mark is unmistakable (``red``: a red square top-left, ``green``: a green square bottom-right,
``blue``: a blue bar down the middle), with the imbalance of real tag sets (50 %, 40 %, 20 % of the images;
about a quarter carry none). ``labels.csv`` is the ``path,labels`` manifest (labels joined by ``;``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

LABELS = ("blue", "green", "red")  # the vocabulary as nextclass sorts it
SHARE = {"red": 0.5, "green": 0.4, "blue": 0.2}


def draw(labels, rng) -> np.ndarray:
    """One 24x24x3 image carrying ``labels``."""
    x = rng.integers(0, 40, (24, 24, 3)).astype(np.uint8)
    if "red" in labels:
        x[2:10, 2:10, 0] = 230
    if "green" in labels:
        x[14:22, 14:22, 1] = 230
    if "blue" in labels:
        x[2:22, 11:13, 2] = 230
    return x


def make_folder(root: Path, n: int = 240, seed: int = 0, column: str = "labels") -> Path:
    """Write ``n`` planted images under ``root/img`` and the manifest ``root/labels.csv``; returns the manifest."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = [f"path,{column}"]
    for i in range(n):
        labels = [name for name, p in SHARE.items() if rng.random() < p]
        Image.fromarray(draw(labels, rng)).save(root / "img" / f"{i}.png")
        rows.append(f"img/{i}.png,{';'.join(labels)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"
