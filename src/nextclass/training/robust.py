"""Robustness of the selected model for the report, measured once per model and data.

:func:`nextclass.metrics.robustness.robustness` runs the model on corrupted copies of the last split (about
10-20 s for a pretrained backbone on a CPU). Its result depends only on the model's weights, the preprocessing,
the images and the seed, so it is kept in ``<cache_dir>/robustness/<key>.json`` under a key of all four: a rerun
that ends with the same weights (a linear probe rerun on the same data and seed) reads it back instead of
running the backbone again. Any change of weights or data is a new key, so a stale result is never shown.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from torch import nn

from nextclass.metrics.robustness import ROBUSTNESS_VERSION, model_logits_fn, robustness
from nextclass.training.context import Context
from nextclass.training.features import weights_digest
from nextclass.utils import atomic_write_json, default_cache_dir, log, sha1_of

__all__ = ["split_robustness"]


def split_robustness(ctx: Context, model: nn.Module, split: str) -> dict:
    """The ``robustness`` block of ``split`` (see module docstring); ``"cached": true`` when read back."""
    rows = np.ascontiguousarray(ctx.rows[split], dtype=np.int64)
    key = sha1_of([ROBUSTNESS_VERSION, ctx.cfg.model, weights_digest(model, head=True), ctx.pp.to_dict(),
                   ctx.images.key, hashlib.sha1(rows.tobytes()).hexdigest(), split, ctx.cfg.seed])
    path = Path(ctx.cfg.cache_dir or default_cache_dir()) / "robustness" / f"{key}.json"
    try:
        block = json.loads(path.read_text())
        log(f"robustness: cache hit {key[:12]} (same weights, images and seed) - no corrupted passes")
        return {**block, "cached": True}
    except (OSError, ValueError):  # missing or damaged: measure (a damaged file is never trusted)
        pass
    block = robustness(model_logits_fn(model, ctx.device), ctx.images.array, ctx.labels[split], ctx.pp, rows=rows,
                       split=split, seed=ctx.cfg.seed)
    try:
        atomic_write_json(path, block)
    except OSError as e:  # a read-only cache costs the next run time, never this run
        log(f"[yellow]robustness: not cached ({e})[/]")
    return block
