"""Training samplers under DDP: each rank's slice of one seeded permutation (or weighted draw) per epoch."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Sampler

from nextclass.dist import rank, world_size

__all__ = ["WeightedDistributedSampler", "train_sampler"]


class WeightedDistributedSampler(Sampler):
    """Class-balanced sampling under DDP: one seeded weighted draw per epoch, sharded like DistributedSampler."""

    def __init__(self, weights: np.ndarray, num_samples: int, seed: int = 0):
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        self.w, self.r = world_size(), rank()
        self.per_rank = math.ceil(num_samples / self.w)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        idx = torch.multinomial(self.weights, self.per_rank * self.w, replacement=True, generator=g)
        return iter(idx[self.r::self.w].tolist())


def train_sampler(ds, seed: int, epoch: int, balance: bool = False) -> Sampler:
    """The per-epoch training sampler under DDP (``set_epoch`` already called)."""
    from torch.utils.data import DistributedSampler

    if balance:
        counts = np.bincount(ds.labels, minlength=int(ds.labels.max()) + 1).astype(float)
        sampler = WeightedDistributedSampler(1.0 / np.maximum(counts[ds.labels], 1), len(ds), seed=seed)
    else:
        # drop_last=False pads with repeats so every rank runs the same number of steps (DDP needs lockstep)
        sampler = DistributedSampler(ds, shuffle=True, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return sampler


