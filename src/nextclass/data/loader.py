"""Datasets over the decoded uint8 array, and DataLoaders with seeded, resumable order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from nextclass.data.samplers import train_sampler
from nextclass.dist import is_distributed

__all__ = ["ArrayDataset", "BatchLoader", "Batching", "make_loader"]


@dataclass(frozen=True, kw_only=True)
class Batching:
    """How an epoch is ordered and batched; one value shared by :class:`BatchLoader` and :func:`make_loader`.

    The order of an epoch depends only on ``(seed, epoch)``, so a resumed run sees the same batches.

    Example:
        >>> Batching(batch_size=64, train=True, seed=1, epoch=3).epoch
        3
    """

    batch_size: int
    train: bool  # shuffle (or balance-sample) the rows; False keeps row order
    seed: int = 0
    epoch: int = 0
    balance: bool = False  # draw classes about equally often (train only)
    drop_last: bool = False  # dropped only when there is more than one batch
    shard: tuple[int, int] = (0, 1)  # (rank, world) for BatchLoader; make_loader takes it from DDP's sampler
    pin_memory: bool = False
    workers: int = 0  # DataLoader worker processes (make_loader only; BatchLoader gathers in a thread)


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
        y = self.labels[i]  # a class index, or a multi-label row of 0/1
        return x, (torch.from_numpy(y.astype(np.float32)) if y.ndim else int(y))


def make_loader(ds: ArrayDataset, b: Batching) -> DataLoader:
    """A DataLoader whose order depends only on ``(b.seed, b.epoch)``: a resumed run sees the same batches."""
    batch_size, train, seed, epoch, balance = b.batch_size, b.train, b.seed, b.epoch, b.balance
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    sampler = None
    shuffle = train
    n_items = len(ds)
    if train and is_distributed():  # DDP: this rank's slice of the epoch's permutation (set_epoch applied)
        sampler, shuffle = train_sampler(ds, seed * 100003, epoch, balance), False
        n_items = len(sampler)
    elif train and balance:
        counts = np.bincount(ds.labels, minlength=int(ds.labels.max()) + 1).astype(float)
        w = 1.0 / np.maximum(counts[ds.labels], 1)
        sampler = WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double), len(ds), replacement=True, generator=g)
        shuffle = False
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, sampler=sampler, generator=g,
                      num_workers=b.workers, pin_memory=b.pin_memory, drop_last=b.drop_last and n_items > batch_size,
                      persistent_workers=False)


class BatchLoader:
    """Whole uint8 batches gathered from the decoded array: no per-sample Python work.

    The order of an epoch depends only on ``(seed, epoch)`` of the :class:`Batching` (a resumed run sees the
    same batches). With ``shard=(rank, world)`` each rank takes every ``world``-th index of the shared permutation,
    padded by wrapping so that all ranks run the same number of steps (as ``DistributedSampler``).
    The next batch is gathered in a background thread (numpy fancy indexing releases the GIL), and
    on CUDA it is pinned so the host-to-device copy is asynchronous.

    Yields:
        ``(uint8 tensor (B, C, S, S), int64 labels (B,))``.
    """

    def __init__(self, array: np.ndarray, rows: np.ndarray, labels: np.ndarray, b: Batching):
        self.array, self.rows, self.labels = array, np.asarray(rows), np.asarray(labels)
        self.batch_size, self.train, self.seed, self.epoch = b.batch_size, b.train, b.seed, b.epoch
        self.balance, self.pin = b.balance, b.pin_memory
        self.drop_last = b.drop_last and len(self.rows) > b.batch_size
        self.rank, self.world = b.shard
        self.order = self._order()

    def _order(self) -> np.ndarray:
        n = len(self.rows)
        rng = np.random.default_rng([self.seed, self.epoch, 17])
        if self.train and self.balance and n:
            counts = np.bincount(self.labels).astype(float)
            w = 1.0 / counts[self.labels]
            order = rng.choice(n, size=n, replace=True, p=w / w.sum())
        elif self.train:
            order = rng.permutation(n)
        else:
            order = np.arange(n)
        if self.world > 1:
            per = -(-n // self.world)
            order = np.resize(order, per * self.world)[self.rank::self.world]
        return order

    def __len__(self) -> int:
        n = len(self.order)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _gather(self, k: int):
        idx = self.order[k * self.batch_size:(k + 1) * self.batch_size]
        x = torch.from_numpy(np.ascontiguousarray(self.array[self.rows[idx]])).permute(0, 3, 1, 2)
        if self.pin:
            x = x.pin_memory()
        y = self.labels[idx]  # class indices (B,), or multi-label 0/1 rows (B, L) as float targets
        return x, torch.from_numpy(y.astype(np.int64 if y.ndim == 1 else np.float32))

    def __iter__(self):
        from concurrent.futures import ThreadPoolExecutor

        nb = len(self)
        if nb == 0:
            return
        with ThreadPoolExecutor(1) as ex:
            fut = ex.submit(self._gather, 0)
            for k in range(nb):
                batch = fut.result()
                if k + 1 < nb:
                    fut = ex.submit(self._gather, k + 1)
                yield batch
