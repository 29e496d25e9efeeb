"""Robustness of a model on a split, measured once per model and data.

:func:`nextclass.metrics.robustness.robustness` runs the model on corrupted copies of the images (about
10-20 s for a pretrained backbone on a CPU). Its result depends only on the model's weights, the preprocessing,
the images and the seed, so it is kept in ``<cache_dir>/robustness/<key>.json`` under a key of all four: the
finish step of a run and a later ``nextclass evaluate`` of the same run and split read the same entry, and a
rerun that ends with the same weights (a linear probe rerun on the same data and seed) reads it back instead of
running the backbone again. Any change of weights or data is a new key, so a stale result is never shown.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from torch import nn

from nextclass.metrics.robustness import ROBUSTNESS_VERSION, RobustnessOptions, model_logits_fn, robustness
from nextclass.models.heads import weights_digest
from nextclass.utils import atomic_write_json, default_cache_dir, log, sha1_of

__all__ = ["cached_robustness"]


def cached_robustness(model: nn.Module, images, s) -> dict:
    """The ``robustness`` block of ``images`` (an :class:`~nextclass.evaluation.scorer.EvalImages`, scored with the
    :class:`~nextclass.evaluation.scorer.Scoring` ``s``; see module docstring); a cache hit is logged, not recorded."""
    rows = np.ascontiguousarray(images.rows, dtype=np.int64)
    key = sha1_of([ROBUSTNESS_VERSION, s.model_name, weights_digest(model, head=True), s.pp.to_dict(),
                   images.key, hashlib.sha1(rows.tobytes()).hexdigest(), images.name, s.seed])
    path = Path(s.cache_dir or default_cache_dir()) / "robustness" / f"{key}.json"
    try:
        block = json.loads(path.read_text())
        log(f"robustness: cache hit {key[:12]} (same weights, images and seed) - no corrupted passes")
        return block
    except (OSError, ValueError):  # missing or damaged: measure (a damaged file is never trusted)
        pass
    block = robustness(model_logits_fn(model, s.runtime.device), images.array, images.labels, s.pp,
                       RobustnessOptions(split=images.name, seed=s.seed), rows=rows)
    try:
        atomic_write_json(path, block)
    except OSError as e:  # a read-only cache costs the next run time, never this run
        log(f"[yellow]robustness: not cached ({e})[/]")
    return block
