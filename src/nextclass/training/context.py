"""What a training run carries from preparation to the finish: :class:`Context`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nextclass.config import TrainConfig
from nextclass.data.cache import DecodedImages
from nextclass.data.samples import DataSource
from nextclass.data.transforms import Preprocess
from nextclass.engine.loop import Device
from nextclass.rundir import RunDir

__all__ = ["Context"]


@dataclass
class Context:
    """A prepared run: the resolved config, its folder, the decoded data and the model, built once.

    Made by :func:`nextclass.training.setup.prepare`; every later step (phases, probe, finish, report)
    reads it and none rebuilds what it holds.
    """

    cfg: TrainConfig  # resolved: every "auto" field filled in (what config.yaml says)
    run_dir: Path
    source: DataSource
    pp: Preprocess  # eval preprocessing (also the bundle's)
    images: DecodedImages  # the decoded uint8 cache, all splits
    rows: dict[str, np.ndarray]  # split -> positions of decodable images
    labels: dict[str, np.ndarray]  # split -> their labels
    device: torch.device
    amp_dtype: torch.dtype | None
    data_hash: str  # sha256 of the training pixels and labels (written into the bundle)
    model: nn.Module  # built once per run, in resolve()
    resumed: bool = False
    callbacks: list = field(default_factory=list)  # per-epoch hooks: callback(history_row, state)
    train_seconds: float | None = None  # wall time the training phases may use (from the --max-minutes plan)
    features: object = None  # training.features.Features when the backbone stayed frozen (linear probe)
    last_steps: int | None = None  # the plan's final partial epoch, in steps (a resumed run reads it from plan.json)
    plan: object = None  # training.plan.Plan of a --max-minutes run (corrected after its first epoch)
    started: float = 0.0  # time.time() when the job started (the budget counts from here)
    auto_recipe: bool = False  # recipe was auto: the budget's plan may keep the probe alone (training.plan)
    auto_img_size: bool = False  # img_size was auto: a budget too small for it may shrink it (training.budget_fit)
    corrections: dict | None = None  # what --corrections changed (data.corrections.Applied.to_dict), or None

    @property
    def run(self) -> RunDir:
        """The run directory's layout (:class:`~nextclass.rundir.RunDir`): every file of the run is placed there."""
        return RunDir(self.run_dir)

    @property
    def classes(self) -> list[str]:
        return self.source.classes

    @property
    def runtime(self) -> Device:
        """Where tensors run during training and evaluation."""
        return Device(self.device, self.amp_dtype, bool(self.cfg.channels_last))
