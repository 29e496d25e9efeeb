"""The inner loops. The step does the math; the loop does device, AMP, accumulation, clipping,
schedule, EMA, timing and the progress bar.

Everything a loop needs besides the data travels in two small objects built once per phase:
:class:`Device` (where and how tensors run) and :class:`StepParts` (model, optimiser, loss, schedule
and the optional pieces), so no loop takes more than a handful of arguments.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nextclass.dist import all_gather_object, is_distributed
from nextclass.engine.budget import Budget

__all__ = ["Device", "StepParts", "train_step", "optimizer_step_on", "train_one_epoch", "predict_logits", "EpochResult", "reduce_epoch",
           "loss_and_acc", "hits"]


@dataclass
class EpochResult:
    loss: float
    acc: float
    images: int
    seconds: float
    stopped_early: bool = False


@dataclass(frozen=True)
class Device:
    """Where tensors run: the device, the autocast dtype (None: fp32) and the memory format."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    def put(self, x: torch.Tensor, transform: Callable | None = None) -> torch.Tensor:
        """Copy a batch to the device, run ``transform`` there, then set the memory format."""
        x = x.to(self.device, non_blocking=True)
        if transform is not None:
            x = transform(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)


@dataclass
class StepParts:
    """The parts of a training step, built once per phase (see :mod:`nextclass.training.phase`)."""

    model: nn.Module  # what the step calls (may be DDP-wrapped or compiled)
    optimizer: torch.optim.Optimizer
    criterion: Callable
    schedule: Any  # nextclass.engine.optim.Schedule: apply(optimizer, step)
    device: Device = field(default_factory=Device)
    accumulate: int = 1
    clip_grad: float | None = None
    scaler: Any = None  # torch.amp.GradScaler for fp16
    mixup: Any = None  # timm.data.Mixup
    ema: Any = None  # timm.utils.ModelEmaV3
    budget: Budget | None = None


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, criterion) -> dict:
    """One forward pass and loss. ``y`` may be hard labels or soft (mixup) targets."""
    out = model(x)
    return {"loss": criterion(out, y), "output": out}


def _optimizer_step(parts: StepParts, step: int) -> None:
    """Clip, step (through the scaler for fp16), zero the gradients and update the EMA."""
    if parts.clip_grad:
        if parts.scaler is not None:
            parts.scaler.unscale_(parts.optimizer)
        nn.utils.clip_grad_norm_(parts.model.parameters(), parts.clip_grad)
    if parts.scaler is not None:
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    else:
        parts.optimizer.step()
    parts.optimizer.zero_grad(set_to_none=True)
    if parts.ema is not None:
        parts.ema.update(parts.model, step=step)


def _backward(parts: StepParts, x: torch.Tensor, y: torch.Tensor) -> dict:
    with parts.device.autocast():
        out = train_step(parts.model, x, y, parts.criterion)
    loss = out["loss"] / parts.accumulate
    (parts.scaler.scale(loss) if parts.scaler is not None else loss).backward()
    return out


def optimizer_step_on(parts: StepParts, x: torch.Tensor, y: torch.Tensor, step: int) -> dict:
    """One whole optimiser step on one batch already on the device (forward, loss, backward, clip, step, EMA), with
    no accumulation: the step ``nextclass benchmark`` times on a batch held in memory."""
    out = _backward(parts, x, y)
    _optimizer_step(parts, step)
    return out


def train_one_epoch(parts: StepParts, loader, *, step0: int, batch_transform=None, progress=None,
                    desc: str = "") -> EpochResult:
    """One pass over ``loader``. ``batch_transform`` (e.g. BatchAugment) runs on the device after the copy.

    ``step0`` is the optimiser step the epoch starts at (the schedule is a function of the step).
    Stops early, marked in the result, when ``parts.budget`` is exceeded.
    """
    parts.model.train()
    total_loss, correct, seen, t0, step, stopped = 0.0, 0, 0, time.time(), step0, False
    nb = len(loader)
    task = progress.add_task(desc, total=nb, metrics="") if progress is not None else None
    parts.optimizer.zero_grad(set_to_none=True)
    for i, (x, y) in enumerate(loader):
        x, y = parts.device.put(x, batch_transform), y.to(parts.device.device, non_blocking=True)
        hard = y
        if parts.mixup is not None and len(x) > 1 and len(x) % 2 == 0:
            x, y = parts.mixup(x, y)
        if i % parts.accumulate == 0:
            parts.schedule.apply(parts.optimizer, step)
        out = _backward(parts, x, y)
        if (i + 1) % parts.accumulate == 0 or i + 1 == nb:
            _optimizer_step(parts, step)
            step += 1
        total_loss += float(out["loss"].detach()) * len(hard)
        correct += hits(out["output"].detach(), hard)
        seen += len(hard)
        if task is not None:
            rate = seen / max(time.time() - t0, 1e-9)
            progress.update(task, advance=1, metrics=f"loss {total_loss / seen:.4f} acc {correct / seen:.3f} {rate:.0f} img/s")
        if parts.budget is not None and parts.budget.exceeded():
            stopped = True
            break
    if task is not None:
        progress.remove_task(task)
    return EpochResult(total_loss / max(seen, 1), correct / max(seen, 1), seen, time.time() - t0, stopped)


@torch.no_grad()
def predict_logits(model: nn.Module, loader, device: Device | None = None, *, batch_transform=None, progress=None,
                   desc: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """Logits (float32, N x K) and labels for every item of ``loader``, in order."""
    device = device or Device()
    model.eval()
    outs, labels = [], []
    task = progress.add_task(desc, total=len(loader), metrics="") if progress is not None else None
    for x, y in loader:
        x = device.put(x, batch_transform)
        with device.autocast():
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


def hits(output: torch.Tensor, target: torch.Tensor) -> int:
    """Right answers in a batch: top-1 equal to the class, or (multi-label 0/1 targets, one logit per label) every
    label right at logit 0 (probability 0.5): the exact-match count."""
    if target.ndim == 2:
        return int(((output > 0) == (target > 0.5)).all(1).sum())
    return int((output.argmax(1) == target).sum())


def reduce_epoch(res: EpochResult) -> EpochResult:
    """Combine each rank's :class:`EpochResult` into the global one (the same on every rank under DDP)."""
    if not is_distributed():
        return res
    parts = all_gather_object((res.loss, res.acc, res.images, res.seconds, res.stopped_early))
    n = sum(p[2] for p in parts)
    return EpochResult(sum(p[0] * p[2] for p in parts) / max(n, 1), sum(p[1] * p[2] for p in parts) / max(n, 1), n,
                       max(p[3] for p in parts), any(p[4] for p in parts))


def loss_and_acc(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of ``logits`` (NaN, NaN for an empty split).

    Multi-label (``labels`` a 0/1 matrix): mean binary cross-entropy and the mean average precision over the labels
    with a positive, the number a multi-label run selects its best epoch by (it sits in the ``val_acc`` column).
    """
    if len(labels) == 0:
        return float("nan"), float("nan")
    t = torch.from_numpy(logits)
    if labels.ndim == 2:
        from sklearn.metrics import average_precision_score

        y = np.asarray(labels, np.float32)
        present = y.sum(0) > 0
        ap = average_precision_score(y[:, present], logits[:, present], average="macro") if present.any() else 0.0
        return float(F.binary_cross_entropy_with_logits(t.float(), torch.from_numpy(y))), float(ap)
    loss = float(F.cross_entropy(t, torch.from_numpy(labels).long()))
    return loss, float((logits.argmax(1) == labels).mean())
