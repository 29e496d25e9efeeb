"""Optimisers and learning-rate schedules.

Schedules are plain functions of the step (cosine with linear warmup, one-cycle, linear warm-up/decay,
constant) plus a
ReduceLROnPlateau-style factor updated per epoch. Their whole state is a few numbers, stored in the
checkpoint's JSON, so a resumed run follows exactly the same learning-rate curve.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["build_optimizer", "Schedule", "param_groups"]


def param_groups(model: nn.Module, weight_decay: float, lr: float, layer_decay: float | None = None) -> list[dict]:
    """No weight decay on biases and norm weights (1-d params); optional layer-wise lr decay (timm)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if layer_decay is not None and layer_decay < 1.0:
        from timm.optim import param_groups_layer_decay

        groups = param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=layer_decay)
        groups = [g for g in groups if any(p.requires_grad for p in g["params"])]
        for g in groups:
            g["params"] = [p for p in g["params"] if p.requires_grad]
            g["lr"] = lr * g.pop("lr_scale", 1.0)
        return groups
    decay = [p for n, p in params if p.ndim > 1]
    no_decay = [p for n, p in params if p.ndim <= 1]
    return [g for g in ({"params": decay, "weight_decay": weight_decay, "lr": lr},
                        {"params": no_decay, "weight_decay": 0.0, "lr": lr}) if g["params"]]


def build_optimizer(name: str, groups: list[dict], lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    raise ValueError(f"Invalid optimizer {name!r}. Only adamw, adam and sgd are supported.")


class Schedule:
    """Per-step learning-rate multiplier with an optional per-epoch plateau factor."""

    def __init__(self, kind: str, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.01,
                 plateau_patience: int = 2, plateau_factor: float = 0.3):
        self.kind, self.total, self.warmup, self.min_ratio = kind, max(1, total_steps), warmup_steps, min_ratio
        self.patience, self.factor = plateau_patience, plateau_factor
        self.state = {"plateau_scale": 1.0, "plateau_best": None, "plateau_bad": 0}

    def multiplier(self, step: int) -> float:
        """The lr factor of optimiser step ``step`` (0-based): the decay reaches its floor at the last step, ``total - 1``."""
        if self.kind == "onecycle":  # 30% cosine warm-up from 1/25 to 1, then cosine down to 1e-4
            peak = self._decay_start()
            if step < peak:
                t = step / peak
                return 1 / 25 + (1 - 1 / 25) * (1 - math.cos(math.pi * t)) / 2
            return 1e-4 + (1 - 1e-4) * (1 + math.cos(math.pi * self._decayed(step))) / 2
        if self.kind == "linear":  # warm-up from 0.2 to 1 over `warmup` steps, then a straight line to the floor
            if step < self.warmup:
                return 0.2 + 0.8 * step / self.warmup
            return 1.0 - (1.0 - self.min_ratio) * self._decayed(step)
        if self.warmup and step < self.warmup:
            m = (step + 1) / (self.warmup + 1)
        elif self.kind == "cosine":
            m = self.min_ratio + (1 - self.min_ratio) * (1 + math.cos(math.pi * self._decayed(step))) / 2
        else:
            m = 1.0
        return m * (self.state["plateau_scale"] if self.kind == "plateau" else 1.0)

    def _decay_start(self) -> int:
        """The first step of the decay (after the warm-up; one-cycle: after its peak)."""
        return max(1, int(0.3 * self.total)) if self.kind == "onecycle" else self.warmup

    def _decayed(self, step: int) -> float:
        """How far the decay is at ``step``, 0 (peak) to 1 (floor at the last step); after a :meth:`retime` the
        decay goes on from where it was at the re-timing step to the floor at the new last step."""
        last, anchor = self.total - 1, self.state.get("anchor")
        if anchor is not None and step >= anchor[0]:
            return min(1.0, anchor[1] + (1 - anchor[1]) * (step - anchor[0]) / max(1, last - anchor[0]))
        start = self._decay_start()
        return min(1.0, max(0.0, (step - start) / max(1, last - start)))

    def retime(self, step: int, total_steps: int) -> None:
        """Give the schedule a new length at optimiser step ``step`` without a jump in the learning rate.

        Before the decay starts only the length changes (the curve a first plan of this length would have
        drawn); once it has started, the decay carries on from its current point and reaches the floor at the
        new last step, so a budget re-plan can lengthen or shorten a run at any epoch without a step in the lr.
        """
        if step > self._decay_start():
            self.state["anchor"] = [int(step), self._decayed(step)]
        self.total = max(int(step) + 1, int(total_steps))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        m = self.multiplier(step)
        for g in optimizer.param_groups:
            g["lr"] = g.setdefault("initial_lr", g["lr"]) * m
        return optimizer.param_groups[0]["lr"]

    def epoch_end(self, metric: float, higher_is_better: bool) -> None:
        """ReduceLROnPlateau: cut the lr by ``factor`` after ``patience`` epochs without improvement."""
        if self.kind != "plateau":
            return
        best = self.state["plateau_best"]
        better = best is None or (metric > best if higher_is_better else metric < best)
        if better:
            self.state["plateau_best"], self.state["plateau_bad"] = metric, 0
        else:
            self.state["plateau_bad"] += 1
            if self.state["plateau_bad"] > self.patience:
                self.state["plateau_scale"] *= self.factor
                self.state["plateau_bad"] = 0
