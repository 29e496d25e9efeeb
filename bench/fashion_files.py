"""Fashion-MNIST as PNG files plus CSV manifests, for benchmarks that train on subsets or changed labels.

``nextclass train`` takes a data spec, not an array, so a benchmark that trains on 500 chosen images or on
labels it flipped writes a CSV manifest (``path,label,split``) over PNG copies of the built-in
``fashion-mnist`` source's images. The PNGs are written once (lossless: the same pixels as the IDX
files) under ``<work>/png/{train,test}/NNNNN.png`` and reused by later runs.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

__all__ = ["FashionFiles", "fashion_files", "write_manifest", "bench_workspace"]


class FashionFiles:
    """The built-in source's images as files: ``paths[i]``, ``labels[i]`` (official, clean) and
    ``splits[i]`` ('train' for the 60k, 'test' for the 10k) describe sample ``i``."""

    def __init__(self, paths: list[str], labels: np.ndarray, splits: np.ndarray, classes: list[str],
                 array: np.ndarray):
        self.paths, self.labels, self.splits, self.classes, self.array = paths, labels, splits, classes, array

    @property
    def train(self) -> np.ndarray:
        return np.flatnonzero(self.splits == "train")

    @property
    def test(self) -> np.ndarray:
        return np.flatnonzero(self.splits == "test")


def fashion_files(work: str | os.PathLike, data: str = "fashion-mnist") -> FashionFiles:
    """Load ``data`` with nextclass's built-in source and make sure every image exists as a PNG under ``work``."""
    from PIL import Image

    from nextclass.data.sources import load_source

    src = load_source(data)
    root = Path(work) / "png"
    paths, labels, splits = [], [], []
    for s in src.samples:
        paths.append(str(root / s.split / f"{Path(s.path).name}.png"))
        labels.append(s.label)
        splits.append(s.split)
    done = root / ".complete"
    if not done.exists():
        for sp in ("train", "test"):
            (root / sp).mkdir(parents=True, exist_ok=True)
        for s, p in zip(src.samples, paths):
            Image.fromarray(src.array[s.index]).save(p)
        done.write_text(f"{len(paths)} images from {data}\n")
    array = src.array[[s.index for s in src.samples]]
    return FashionFiles(paths, np.array(labels), np.array(splits), list(src.classes), array)


def write_manifest(path: str | os.PathLike, files: FashionFiles, rows, labels, split: str | list[str]) -> Path:
    """A ``path,label,split`` manifest over ``files.paths[rows]`` with the given label indices (class names
    are written) and one split name for all rows or one per row; appends when ``path`` exists."""
    path = Path(path)
    new = not path.exists()
    splits = [split] * len(rows) if isinstance(split, str) else list(split)
    with path.open("a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["path", "label", "split"])
        for r, y, sp in zip(rows, labels, splits):
            w.writerow([files.paths[int(r)], files.classes[int(y)], sp])
    return path


def bench_workspace(work: str | os.PathLike, threads: int) -> tuple[Path, FashionFiles]:
    """A benchmark's start: pin torch's threads, create ``work`` and share the PNG files next to it."""
    import torch

    torch.set_num_threads(threads)
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    return work, fashion_files(work.parent / "fashion-files")
