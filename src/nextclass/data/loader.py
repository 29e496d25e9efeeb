"""Datasets over the decoded uint8 array, and DataLoaders with seeded, resumable order."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

__all__ = ["ArrayDataset", "make_loader"]


class ArrayDataset(Dataset):
    """Items ``(transform(uint8 CxHxW tensor), label)`` from rows of a decoded array."""

    def __init__(self, array: np.ndarray, rows: np.ndarray, labels: np.ndarray, transform=None):
        self.array, self.rows, self.labels, self.transform = array, np.asarray(rows), np.asarray(labels), transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        x = torch.from_numpy(np.array(self.array[self.rows[i]], copy=True)).permute(2, 0, 1)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])


def make_loader(ds: ArrayDataset, batch_size: int, *, train: bool, seed: int = 0, epoch: int = 0,
                workers: int = 0, balance: bool = False, pin_memory: bool = False, drop_last: bool = False) -> DataLoader:
    """A DataLoader whose order depends only on ``(seed, epoch)``: a resumed run sees the same batches."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    sampler = None
    shuffle = train
    if train and balance:
        counts = np.bincount(ds.labels, minlength=int(ds.labels.max()) + 1).astype(float)
        w = 1.0 / np.maximum(counts[ds.labels], 1)
        sampler = WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double), len(ds), replacement=True, generator=g)
        shuffle = False
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, sampler=sampler, generator=g,
                      num_workers=workers, pin_memory=pin_memory, drop_last=drop_last and len(ds) > batch_size,
                      persistent_workers=False)
