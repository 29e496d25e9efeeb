"""Training on several local processes (DDP): ``nextclass train DATA --nproc N``.

Starts N workers with torch's elastic launcher (:func:`nextclass.dist.launch`, the engine behind
``torchrun``). Each worker runs the same :func:`~nextclass.training.fit.fit` a single process runs;
``torchrun --nproc-per-node N -m nextclass train DATA`` (and multi-node) reaches the same code through
:func:`nextclass.dist.init_from_env`.

Conventions (the same as torchrun + timm): ``batch_size`` is *per rank*, so the global batch is
``batch_size x world_size``; each epoch every rank sees a disjoint 1/world slice of one seeded
permutation; validation is sharded and gathered, so every rank takes the same early-stopping
decisions; rank 0 alone writes ``history.csv``, checkpoints, the bundle and the report, and after the
last epoch the group is torn down and rank 0 finishes exactly as a single process would.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from nextclass.config import TrainConfig, make_config
from nextclass.dist import is_main, launch

__all__ = ["train_distributed"]


def _train_worker(config: dict | None, resume: str | None, progress: bool) -> str:
    from nextclass.training.fit import fit

    cfg = None if config is None else make_config(**config)
    return str(fit(cfg, resume=resume, progress=progress and is_main()))


def train_distributed(cfg: TrainConfig | None, *, nproc: int = 2, resume: str | os.PathLike | None = None,
                      progress: bool = True) -> Path:
    """Train ``cfg`` (or resume ``resume``, with any world size) on ``nproc`` local processes; returns the run dir.

    Example:
        >>> run = train_distributed(make_config(data="digits", epochs=5, batch_size=32), nproc=2)  # doctest: +SKIP
    """
    if cfg is not None and cfg.device.startswith("cuda") and torch.cuda.device_count() < nproc:
        raise ValueError(f"nproc: {nproc} processes need {nproc} GPUs, {torch.cuda.device_count()} visible")
    config = None if cfg is None else cfg.model_dump(mode="json")
    results = launch(_train_worker, (config, None if resume is None else str(resume), progress), nproc)
    return Path(results[0])
