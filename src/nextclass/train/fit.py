"""``nextclass.train(config)``: the whole run, from data to bundle and report.

Order of work: :func:`~nextclass.train.setup.prepare` (run dir, splits, decode once, defaults) →
training phases (epochs with checkpoints, history, early stopping, time budget) → best weights →
evaluation on val and test → bundle → report. A run killed at any point resumes from
``checkpoints/last.safetensors`` with ``--resume`` and ends where an uninterrupted run would:
each epoch's data order and augmentation depend only on ``(seed, epoch)``.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data.batch_aug import BatchAugment, BatchEval
from ..data.loader import ArrayDataset, BatchLoader, make_loader
from ..data.transforms import eval_transform, train_transform
from ..utils import atomic_write_text, log
from .checkpoint import load_checkpoint, save_checkpoint
from .loop import Budget, loss_and_acc, predict_logits, train_one_epoch
from .optim import Schedule, build_optimizer, param_groups
from .setup import Context, augment_for, prepare
from ..distributed import (all_gather_object, broadcast_object, finish_training, is_main, rank, reduce_epoch,
                           shard, synced_budget, unshard, world_size, wrap_ddp)

__all__ = ["fit", "Phase", "run_phase", "build_model", "HISTORY_COLUMNS", "progress_bar", "val_logits",
           "train_batches"]

HISTORY_COLUMNS = ["epoch", "phase", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                   "epoch_seconds", "images_per_second", "elapsed_seconds", "finished_at"]


@dataclass
class Phase:
    """A stretch of epochs with one optimiser setup (``scratch``/``finetune``; ``probe`` is separate)."""

    name: str
    epochs: int
    lr: float
    epoch_offset: int = 0  # global epoch index of this phase's first epoch
    layer_decay: float | None = None


def build_model(ctx: Context) -> nn.Module:
    from ..models.factory import create

    cfg = ctx.cfg
    kwargs = arch_kwargs(ctx)
    model = create(cfg.model, pretrained=cfg.pretrained, **kwargs)
    if cfg.head != "linear":
        from ..models.heads import attach_head

        model = attach_head(model, cfg.head, len(ctx.classes))
    return model


def arch_kwargs(ctx: Context) -> dict:
    cfg = ctx.cfg
    kw = {"num_classes": len(ctx.classes), "in_chans": ctx.pp.channels}
    if cfg.drop_rate is not None:
        kw["drop_rate"] = cfg.drop_rate
    if cfg.drop_path:
        kw["drop_path_rate"] = cfg.drop_path
    return kw


def progress_bar(enabled: bool = True):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"),
                    disable=not enabled, transient=True)


def _read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_history(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def val_logits(ctx: Context, model: nn.Module, split: str = "val", progress=None) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of a split, in split order (batched eval preprocessing on the device)."""
    rows, labels = shard(ctx.rows[split]), shard(ctx.labels[split])  # DDP: rank r evaluates rows[r::world]
    loader = BatchLoader(ctx.images.array, rows, labels, max(ctx.cfg.batch_size, 64),
                         train=False, pin_memory=ctx.device.type == "cuda")
    lg, y = predict_logits(model, loader, device=ctx.device, amp_dtype=ctx.amp_dtype, batch_transform=BatchEval(ctx.pp),
                           channels_last=bool(ctx.cfg.channels_last), progress=progress, desc=f"{split}")
    if world_size() > 1:  # gather the shards back into split order, on every rank
        parts, n = all_gather_object((lg, y)), len(ctx.rows[split])
        lg, y = unshard([p[0] for p in parts], n), unshard([p[1] for p in parts], n)
    return lg, y


def train_batches(ctx: Context, epoch: int, shard: tuple[int, int] = (0, 1)):
    """The training loader for ``epoch`` and the transform to run on each batch (None: done per sample).

    The fast path gathers uint8 batches and augments them in one batched op (:mod:`nextclass.data.batch_aug`);
    RandAugment/TrivialAugment have no batched version and use per-sample ``transforms.v2`` in a DataLoader.
    """
    cfg = ctx.cfg
    aug = augment_for(cfg)
    if aug is None or aug.auto == "none":
        loader = BatchLoader(ctx.images.array, ctx.rows["train"], ctx.labels["train"], cfg.batch_size, train=True,
                             seed=cfg.seed, epoch=epoch, balance=cfg.balance == "sampler", drop_last=True, shard=shard,
                             pin_memory=ctx.device.type == "cuda")
        return loader, (BatchAugment(ctx.pp, aug) if aug is not None else BatchEval(ctx.pp))
    ds = ArrayDataset(ctx.images.array, ctx.rows["train"], ctx.labels["train"], train_transform(ctx.pp, aug))
    loader = make_loader(ds, cfg.batch_size, train=True, seed=cfg.seed, epoch=epoch, workers=cfg.workers,
                         balance=cfg.balance == "sampler", pin_memory=ctx.device.type == "cuda", drop_last=True)
    return loader, None


def _better(cfg: TrainConfig, new: float, best: float | None) -> bool:
    if best is None or (isinstance(best, float) and math.isnan(best)):
        return not math.isnan(new)
    return new > best if cfg.monitor == "val_acc" else new < best


def run_phase(ctx: Context, model: nn.Module, phase: Phase, state: dict, progress: bool = True) -> nn.Module:
    """Train ``phase.epochs`` epochs, checkpointing each; resume from ``state`` if it holds this phase.

    ``state`` is the run's shared JSON state (``epoch``, ``best``, ``best_epoch``, ``stopped``...)
    that lives in the checkpoint.
    """
    cfg = ctx.cfg
    ckpt_dir = ctx.run_dir / "checkpoints"
    model.to(ctx.device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    groups = param_groups(model, cfg.weight_decay, phase.lr, phase.layer_decay)
    optimizer = build_optimizer(cfg.optimizer, groups, phase.lr, cfg.momentum)
    n_train = -(-len(ctx.rows["train"]) // world_size())  # per rank under DDP
    steps_per_epoch = math.ceil(max(1, n_train // cfg.batch_size if n_train > cfg.batch_size else 1) / cfg.accumulate)
    warm = int(cfg.warmup_epochs * steps_per_epoch) if cfg.scheduler in ("cosine", "plateau", "none") else 0
    schedule = Schedule(cfg.scheduler, phase.epochs * steps_per_epoch, warm, cfg.min_lr_ratio)
    ema = None
    if cfg.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=cfg.ema_decay, device=ctx.device)
    mixup = None
    if cfg.mixup > 0 or cfg.cutmix > 0:
        from timm.data import Mixup

        mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                      num_classes=len(ctx.classes))
    weight = None
    if cfg.balance == "loss":
        counts = np.bincount(ctx.labels["train"], minlength=len(ctx.classes)).astype(np.float32)
        weight = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(counts), device=ctx.device)
    ce = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    if mixup is not None:
        from timm.loss import SoftTargetCrossEntropy

        soft = SoftTargetCrossEntropy()
        criterion = lambda out, y: soft(out, y) if y.ndim == 2 else ce(out, y)  # noqa: E731
    else:
        criterion = ce
    scaler = torch.amp.GradScaler("cuda") if ctx.amp_dtype == torch.float16 else None
    net = wrap_ddp(model, ctx.device)  # DDP all-reduces gradients; `model` stays the plain module for saving
    if cfg.compile:  # opt-in: the training step only; evaluation and checkpoints use the plain module (shared weights)
        if is_main():
            log("torch.compile: the first training step compiles (10-50 s on a CPU); `nextclass benchmark --compile` "
                "measures whether it pays back")
        net = torch.compile(net)

    hist_path = ctx.run_dir / "history.csv"
    history = _read_history(hist_path)
    start = phase.epoch_offset
    last = ckpt_dir / "last.safetensors"
    if state.get("phase") == phase.name and last.exists() and state.get("epoch", 0) > start:
        st = load_checkpoint(last, model, optimizer, ema.module if ema is not None else None)
        schedule.state.update(st.get("schedule", {}))
        start = st["epoch"]
        state.update(st)
        log(f"resumed {phase.name} at epoch {start} from {last}")
    history = [r for r in history if int(r["epoch"]) <= start]
    t_run0 = time.time() - float(state.get("elapsed", 0.0))
    budget = synced_budget(None if cfg.max_minutes is None else cfg.max_minutes - float(state.get("elapsed", 0.0)) / 60)
    end = phase.epoch_offset + phase.epochs
    monitor_hi = cfg.monitor == "val_acc"
    fwd = ema.module if ema is not None else model
    with progress_bar(progress and is_main()) as bar:
        for epoch in range(start, end):
            if state.get("stopped"):
                break
            # data order, augmentation and dropout depend on (seed, epoch) and, under DDP, the rank
            torch.manual_seed(cfg.seed * 1000 + epoch + 7919 * rank())
            loader, batch_tf = train_batches(ctx, epoch, shard=(rank(), world_size()))
            res = train_one_epoch(net, loader, optimizer, criterion, schedule, device=ctx.device,
                                  step0=(epoch - phase.epoch_offset) * steps_per_epoch, accumulate=cfg.accumulate,
                                  clip_grad=cfg.clip_grad, amp_dtype=ctx.amp_dtype, scaler=scaler, mixup=mixup, ema=ema,
                                  channels_last=bool(cfg.channels_last), budget=budget, progress=bar,
                                  desc=f"{phase.name} {epoch + 1}/{end}", batch_transform=batch_tf)
            res = reduce_epoch(res)  # DDP: global loss/acc/images over all ranks
            vl, vy = val_logits(ctx, fwd, "val", bar) if len(ctx.rows["val"]) else (np.zeros((0, 1)), np.zeros(0))
            val_loss, val_acc = loss_and_acc(vl, vy)
            metric = val_acc if monitor_hi else val_loss
            schedule.epoch_end(metric, monitor_hi)
            row = {"epoch": epoch + 1, "phase": phase.name, "train_loss": f"{res.loss:.5f}", "train_acc": f"{res.acc:.5f}",
                   "val_loss": f"{val_loss:.5f}", "val_acc": f"{val_acc:.5f}", "lr": f"{optimizer.param_groups[0]['lr']:.3e}",
                   "epoch_seconds": f"{res.seconds:.2f}", "images_per_second": f"{res.images / max(res.seconds, 1e-9):.1f}",
                   "elapsed_seconds": f"{time.time() - t_run0:.1f}", "finished_at": f"{time.time():.2f}"}
            history.append(row)
            state.update(epoch=epoch + 1, phase=phase.name, schedule=dict(schedule.state), elapsed=time.time() - t_run0)
            improved = _better(cfg, metric, state.get("best"))
            if improved or not len(ctx.rows["val"]):
                state.update(best=metric, best_epoch=epoch + 1, bad_epochs=0)
                if is_main():
                    save_checkpoint(ckpt_dir / "best.safetensors", fwd, None, dict(state))
            else:
                state["bad_epochs"] = state.get("bad_epochs", 0) + 1
            if cfg.patience and state["bad_epochs"] >= cfg.patience:
                state["stopped"] = f"early stop: no {cfg.monitor} improvement for {cfg.patience} epochs"
            if res.stopped_early or budget.exceeded():
                state["stopped"] = f"time budget of {cfg.max_minutes} min reached"
            if is_main():  # DDP: every rank holds the same state (metrics are reduced); rank 0 writes
                write_history(hist_path, history)
                save_checkpoint(last, model, optimizer, dict(state), ema.module if ema is not None else None)
                log(f"{phase.name} epoch {epoch + 1}/{end}: train loss {res.loss:.4f} acc {res.acc:.4f} | val loss "
                    f"{val_loss:.4f} acc {val_acc:.4f} | {row['images_per_second']} img/s, {res.seconds:.1f}s"
                    + (" [green]*best*[/]" if improved else ""))
                if state.get("stopped"):
                    log(f"[yellow]{state['stopped']}[/]")
            for callback in ctx.callbacks:  # per-epoch hooks: tracking, Optuna pruning (may raise to stop)
                callback(row, state)
    return fwd


def fit(cfg: TrainConfig | None = None, *, resume: str | Path | None = None, progress: bool = True,
        callbacks: tuple = ()) -> Path:
    """Train, evaluate, bundle and report. Returns the run directory.

    ``callbacks`` are called after every epoch as ``callback(history_row, state)``; raising stops the run.

    Example:
        >>> from nextclass.config import make_config
        >>> run = fit(make_config(data="digits", epochs=3))  # doctest: +SKIP
    """
    from ..tracking import start_tracker

    ctx = prepare(cfg, resume=resume, progress=progress)
    ctx.callbacks.extend(callbacks)
    cfg = ctx.cfg
    last = ctx.run_dir / "checkpoints" / "last.safetensors"
    state = load_checkpoint(last) if last.exists() else {}
    state = broadcast_object(state)  # DDP: rank 0's checkpoint state, so every rank resumes at the same epoch
    tracker = start_tracker(ctx)  # None unless cfg.track (rank 0 only)
    if tracker is not None:
        ctx.callbacks.insert(0, tracker)  # log the epoch before a callback (e.g. pruning) stops the run
    try:
        model = _train_and_finish(ctx, state, progress)
    except BaseException as e:
        if tracker is not None:
            tracker.fail(f"{type(e).__name__}: {e}")
        raise
    if tracker is not None and model is not None:
        tracker.finish(ctx.run_dir)
    return ctx.run_dir


def _train_and_finish(ctx: Context, state: dict, progress: bool) -> nn.Module | None:
    """Training phases, then (rank 0 only) best weights, evaluation, bundle and report."""
    cfg = ctx.cfg
    model = build_model(ctx)
    if cfg.recipe == "scratch":
        run_phase(ctx, model, Phase("scratch", cfg.epochs, cfg.lr), state, progress)
    else:
        from .recipes import run_recipe

        model = run_recipe(ctx, model, state, progress)
    if not finish_training():  # DDP: the group is gone; rank 0 finishes exactly like a single process
        return None
    best = ctx.run_dir / "checkpoints" / "best.safetensors"
    if best.exists():
        st = load_checkpoint(best, model)
        log(f"best checkpoint: epoch {st.get('best_epoch')} ({cfg.monitor} {st.get('best'):.4f})")
    from ..evaluate.run import finish_run

    finish_run(ctx, model, progress=progress)
    return model
