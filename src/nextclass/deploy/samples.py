"""Real images of a run, preprocessed exactly as the bundle says, for parity and calibration.

Export checks (PyTorch/ONNX parity, int8 accuracy) and int8 calibration must use the run's own
images: random noise hides mistakes that real images show (a wrong mean/std, a saturated int8
activation range). The run's ``config.yaml`` names the data and ``split.csv`` the split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from nextclass.rundir import RunDir

__all__ = ["SplitImages", "split_images", "to_batch"]


@dataclass
class SplitImages:
    """Preprocessed images of one split: ``x`` float32 (N, C, H, W) and labels: class indices (N,), a multi-label
    source's (N, L) 0/1 matrix, or None."""

    x: np.ndarray
    labels: np.ndarray | None
    split: str
    real: bool  # False when no run data was found and random inputs stand in


def to_batch(array: np.ndarray, pp) -> np.ndarray:
    """uint8 (N, S, S, C) squares (the decode cache's format) → normalised float32 (N, C, crop, crop)."""
    from nextclass.data.transforms import eval_transform

    tf = eval_transform(pp)
    t = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
    return tf(t).numpy().astype(np.float32, copy=False)


def _targets(source, samples: list) -> np.ndarray:
    """Class indices (N,), or the (N, L) multi-hot matrix of a multi-label source (its ``label`` is -1)."""
    if hasattr(source, "targets"):
        return source.targets(samples)
    return np.array([s.label for s in samples])


def split_images(run: str | os.PathLike, pp, split: str = "val", limit: int = 256, seed: int = 0) -> SplitImages:
    """Up to ``limit`` images of ``split`` from the run's data (stratified-ish: a seeded random subset).

    Falls back to ``train`` when the split is empty, and to random inputs (``real=False``) when the
    folder is a bare bundle without ``config.yaml``/``split.csv`` or the data is gone.

    Example:
        >>> imgs = split_images("runs/tiny", pp, "val", limit=64)  # doctest: +SKIP
        >>> imgs.x.shape                                          # doctest: +SKIP
        (18, 3, 32, 32)
    """
    from nextclass.config import ConfigError
    from nextclass.data.cache import decode_all
    from nextclass.data.sources import DataError, load_source
    from nextclass.data.splits import read_split_csv
    from nextclass.utils import log

    run = RunDir(run)
    if run.is_run() and run.split.is_file():
        try:
            cfg = run.read_config()
            source = load_source(cfg.data, cache_dir=cfg.cache_dir)
            read_split_csv(run.split, source)
            for sp in (split, "train") if split != "train" else (split,):
                pos = [i for i, s in enumerate(source.samples) if s.split == sp]
                if pos:
                    break
            rng = np.random.default_rng(seed)
            if len(pos) > limit:
                pos = sorted(rng.choice(pos, size=limit, replace=False).tolist())
            imgs = decode_all(source, pos, pp, cache_dir=cfg.cache_dir, progress=False)
            ok = np.flatnonzero(imgs.ok)
            if len(ok):
                labels = _targets(source, [source.samples[pos[i]] for i in ok])
                return SplitImages(to_batch(imgs.array[ok], pp), labels, sp, True)
        except (ConfigError, DataError, FileNotFoundError, KeyError, OSError) as e:
            log(f"[yellow]NOTE[/]: cannot read the run's data ({e}); checks use random inputs")
    else:
        log(f"[yellow]NOTE[/]: {run.path} is not a run directory (no config.yaml/split.csv); checks use random inputs")
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (min(limit, 32), pp.size, pp.size, pp.channels), dtype=np.uint8)
    return SplitImages(to_batch(arr, pp), None, "random", False)
