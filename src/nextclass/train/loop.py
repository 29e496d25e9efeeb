"""The inner loops. The step does the math; the loop does device, AMP, accumulation, clipping,
schedule, timing and the progress bar."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["train_step", "train_one_epoch", "predict_logits", "EpochResult", "Budget"]


@dataclass
class EpochResult:
    loss: float
    acc: float
    images: int
    seconds: float
    stopped_early: bool = False


class Budget:
    """Wall-clock budget (``--max-minutes``); ``None`` means no limit."""

    def __init__(self, minutes: float | None, start: float | None = None):
        self.deadline = None if minutes is None else (start or time.time()) + 60 * minutes

    def exceeded(self) -> bool:
        return self.deadline is not None and time.time() > self.deadline


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion) -> dict:
    """One forward pass and loss. ``y`` may be hard labels or soft (mixup) targets."""
    out = model(x)
    return {"loss": criterion(out, y), "output": out}


def _autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def train_one_epoch(model, loader, optimizer, criterion, schedule, *, device, step0: int, accumulate: int = 1,
                    clip_grad: float | None = None, amp_dtype=None, scaler=None, mixup=None, ema=None,
                    channels_last: bool = False, budget: Budget | None = None, progress=None, desc: str = "",
                    batch_transform=None) -> EpochResult:
    """One pass over ``loader``. ``batch_transform`` (e.g. BatchAugment) runs on the device after the copy."""
    model.train()
    total_loss, correct, seen, t0 = 0.0, 0, 0, time.time()
    nb = len(loader)
    task = progress.add_task(desc, total=nb, metrics="") if progress is not None else None
    optimizer.zero_grad(set_to_none=True)
    stopped = False
    step = step0
    for i, (x, y) in enumerate(loader):
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if batch_transform is not None:
            x = batch_transform(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        hard = y
        if mixup is not None and len(x) > 1 and len(x) % 2 == 0:
            x, y = mixup(x, y)
        if i % accumulate == 0:
            schedule.apply(optimizer, step)
        with _autocast(device, amp_dtype):
            out = train_step(model, x, y, criterion)
        loss = out["loss"] / accumulate
        if scaler is not None:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        if (i + 1) % accumulate == 0 or i + 1 == nb:
            if clip_grad:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model, step=step)
            step += 1
        n = len(hard)
        total_loss += float(out["loss"].detach()) * n
        correct += int((out["output"].detach().argmax(1) == hard).sum())
        seen += n
        if task is not None:
            el = time.time() - t0
            progress.update(task, advance=1, metrics=f"loss {total_loss / seen:.4f} acc {correct / seen:.3f} {seen / max(el, 1e-9):.0f} img/s")
        if budget is not None and budget.exceeded():
            stopped = True
            break
    if task is not None:
        progress.remove_task(task)
    return EpochResult(total_loss / max(seen, 1), correct / max(seen, 1), seen, time.time() - t0, stopped)


@torch.no_grad()
def predict_logits(model: nn.Module, loader, *, device, amp_dtype=None, channels_last: bool = False,
                   progress=None, desc: str = "eval", batch_transform=None) -> tuple[np.ndarray, np.ndarray]:
    """Logits (float32, N x K) and labels for every item of ``loader``, in order."""
    model.eval()
    outs, labels = [], []
    task = progress.add_task(desc, total=len(loader), metrics="") if progress is not None else None
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if batch_transform is not None:
            x = batch_transform(x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device, amp_dtype):
            o = model(x)
        outs.append(o.float().cpu())
        labels.append(y)
        if task is not None:
            progress.advance(task)
    if task is not None:
        progress.remove_task(task)
    if not outs:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    return torch.cat(outs).numpy(), torch.cat(labels).numpy()


def loss_and_acc(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    if len(labels) == 0:
        return float("nan"), float("nan")
    t = torch.from_numpy(logits)
    loss = float(F.cross_entropy(t, torch.from_numpy(labels).long()))
    return loss, float((logits.argmax(1) == labels).mean())
