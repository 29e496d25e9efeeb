"""``nextclass benchmark``: where the training time goes, on this machine, for this data and model.

Measures, with the same code the training run uses (:func:`~nextclass.train.setup.resolve` picks the
same automatic defaults, :func:`~nextclass.train.fit.train_batches` builds the same loader and batched
augmentation, :func:`~nextclass.train.loop.train_one_epoch` runs the same step):

- ``decode``: building (or hitting) the decoded-image cache, and the per-file decode rate an
  ImageFolder-style loop would pay on every epoch instead;
- ``loader``: the loader and augmentation alone (no model);
- ``model``: the training step alone (forward, backward, optimiser) on one batch held in memory,
  and inference alone;
- ``step``: the whole training step (loader + augmentation + model);
- ``compile`` (opt-in): ``torch.compile`` time and its steady-state step rate, and after how many
  epochs the compile time is paid back (never, if it is not faster).

It then says which part bounds the epoch. Timings use wall clock after warm-up steps, with
``torch.cuda.synchronize`` on CUDA.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["benchmark"]


class _Take:
    """The first ``n`` batches of a loader (keeps ``len`` for the progress bar and the step count)."""

    def __init__(self, loader, n: int):
        self.loader, self.n = loader, min(n, len(loader))

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for i, b in enumerate(self.loader):
            if i >= self.n:
                break
            yield b


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(n_images: int, seconds: float) -> float:
    return n_images / max(seconds, 1e-9)


def _time_steps(fn, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / steps


def _per_file_decode(source, size: int, channels: int, interpolation: str, n: int) -> dict | None:
    """What a loop that decodes files every epoch pays: safe decode + resize, one process."""
    from .data.cache import _decode_one

    files = [s.path for s in source.samples if s.index is None]
    if not files:
        return None
    pick = files[:: max(1, len(files) // n)][:n]
    t = time.perf_counter()
    ok = sum(_decode_one((p, size, channels, interpolation))[0] is not None for p in pick)
    sec = time.perf_counter() - t
    return {"files": len(pick), "decoded": ok, "images_per_second_one_process": _rate(len(pick), sec),
            "images_per_second_all_cores_estimate": _rate(len(pick), sec) * (os.cpu_count() or 1)}


def benchmark(data: str = "digits", *, model: str = "simple_cnn", pretrained: str | None = None,
              img_size: int | None = None, batch_size: int | None = None, augment: str = "standard",
              steps: int = 20, warmup: int = 3, compile: bool = False, channels_last: bool | None = None,
              device: str = "auto", threads: int | None = None, cache_dir: str | None = None,
              decode_files: int = 200, progress: bool = True, **overrides) -> dict:
    """Measure images/s of each part of a training step. Returns a JSON-able dict (see module doc).

    Args:
        data: anything ``nextclass train`` accepts (folder, CSV, ``digits``, ``fashion-mnist``).
        model, pretrained, img_size, batch_size, augment, channels_last, device, threads: as for
            training; ``None`` picks (and reports) the same automatic default training would.
        steps: timed steps per measurement (after ``warmup`` untimed ones).
        compile: also measure ``torch.compile`` (compile time and compiled step rate).
        decode_files: files decoded one by one for the per-file decode rate (file-backed data only).
        overrides: any other training config field (e.g. ``optimizer="sgd"``, ``in_chans=3``).
    """
    from .config import make_config
    from .data.cache import decode_all
    from .data.sources import load_source
    from .data.splits import assign_splits
    from .train.fit import build_model, train_batches
    from .train.loop import train_one_epoch
    from .train.optim import Schedule, build_optimizer, param_groups
    from .train.setup import Context, amp_dtype_for, resolve, split_rows
    from .utils import configure_threads

    cfg = make_config(data=data, model=model, pretrained=pretrained, img_size=img_size, batch_size=batch_size,
                      augment=augment, channels_last=channels_last, device=device, threads=threads,
                      cache_dir=cache_dir, compile=compile, **overrides)
    configure_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    source = load_source(cfg.data, cache_dir=cfg.cache_dir, download=cfg.download)
    assign_splits(source, cfg.split, cfg.seed)
    n_train_all = sum(1 for s in source.samples if s.split == "train")
    cfg, pp, notes = resolve(cfg, source, n_train_all)
    configure_threads(cfg.threads)
    dev = torch.device(cfg.device)
    out: dict = {"benchmark": "nextclass", "data": source.name, "model": cfg.model, "device": str(dev),
                 "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                 "img_size": cfg.img_size, "cache_size": pp.size, "channels": pp.channels,
                 "batch_size": cfg.batch_size, "channels_last": bool(cfg.channels_last), "amp": bool(cfg.amp),
                 "augment": cfg.augment, "steps": steps, "warmup": warmup, "auto": notes}

    # 1. decoding: the cache (built once, then hit), and what per-file decoding would cost each epoch
    t = time.perf_counter()
    images = decode_all(source, list(range(len(source.samples))), size=pp.size, channels=pp.channels,
                        interpolation=pp.interpolation, cache_dir=cfg.cache_dir, progress=progress)
    sec = time.perf_counter() - t
    out["decode"] = {"cache": "hit" if images.hit else "built", "images": len(source.samples), "seconds": sec,
                     "images_per_second": _rate(len(source.samples), sec), "skipped": len(images.errors),
                     "per_file": _per_file_decode(source, pp.size, pp.channels, pp.interpolation, decode_files)}
    rows, labels = split_rows(source, images)
    if len(rows["train"]) < cfg.batch_size:
        raise ValueError(f"{data}: {len(rows['train'])} training images - fewer than one batch of {cfg.batch_size}; "
                         f"pass a smaller --batch-size")
    amp_dtype = amp_dtype_for(cfg.amp, dev)
    ctx = Context(cfg, Path("."), source, pp, images, rows, labels, dev, amp_dtype, data_hash="")
    steps_per_epoch = len(rows["train"]) // cfg.batch_size
    out["train_images"], out["steps_per_epoch"] = len(rows["train"]), steps_per_epoch
    n_batches = min(steps_per_epoch, warmup + steps)
    if n_batches < warmup + steps:
        steps = max(1, n_batches - warmup)
        warmup = n_batches - steps
        out["steps"], out["warmup"] = steps, warmup

    # 2. loader + batched augmentation alone
    loader, batch_tf = train_batches(ctx, epoch=0)
    it = iter(_Take(loader, warmup + steps))
    for _ in range(warmup):
        x, _y = next(it)
        if batch_tf is not None:
            batch_tf(x.to(dev, non_blocking=True))
    _sync(dev)
    t, seen = time.perf_counter(), 0
    for x, _y in it:
        x = x.to(dev, non_blocking=True)
        if batch_tf is not None:
            x = batch_tf(x)
        seen += len(x)
    _sync(dev)
    out["loader"] = {"images_per_second": _rate(seen, time.perf_counter() - t),
                     "kind": "uint8 batches + one batched augmentation" if batch_tf is not None else
                             "DataLoader with per-sample transforms.v2 (auto_augment has no batched version)"}

    # 3. the model alone: one batch held in memory
    def fresh_model():
        torch.manual_seed(cfg.seed)
        m = build_model(ctx).to(dev)
        if cfg.channels_last:
            m = m.to(memory_format=torch.channels_last)
        return m

    net = fresh_model()
    opt = build_optimizer(cfg.optimizer, param_groups(net, cfg.weight_decay, cfg.lr), cfg.lr, cfg.momentum)
    x = torch.randn(cfg.batch_size, pp.channels, cfg.img_size, cfg.img_size, device=dev)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, len(source.classes), (cfg.batch_size,), device=dev)

    def make_step(m):
        def step():
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = F.cross_entropy(m(x), y, label_smoothing=cfg.label_smoothing)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    net.train()
    step_s = _time_steps(make_step(net), steps, warmup, dev)
    net.eval()

    @torch.no_grad()
    def infer():
        with torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            net(x)

    infer_s = _time_steps(infer, steps, warmup, dev)
    out["model_alone"] = {"train_step_images_per_second": _rate(cfg.batch_size, step_s),
                    "inference_images_per_second": _rate(cfg.batch_size, infer_s),
                    "parameters": sum(p.numel() for p in net.parameters())}

    # 4. the whole training step, through the training loop itself
    def full_epoch(m, n_steps: int, epoch: int) -> float:
        o = build_optimizer(cfg.optimizer, param_groups(m, cfg.weight_decay, cfg.lr), cfg.lr, cfg.momentum)
        ld, tf = train_batches(ctx, epoch=epoch)
        sched = Schedule(cfg.scheduler, steps_per_epoch * max(1, cfg.epochs))
        res = train_one_epoch(m, _Take(ld, n_steps), o, lambda out_, y_: F.cross_entropy(out_, y_), sched,
                              device=dev, step0=0, amp_dtype=amp_dtype, channels_last=bool(cfg.channels_last),
                              batch_transform=tf)
        _sync(dev)
        return _rate(res.images, res.seconds)

    net = fresh_model()
    full_epoch(net, warmup, epoch=1) if warmup else None
    full_rate = full_epoch(net, steps, epoch=2)
    out["step"] = {"images_per_second": full_rate, "epoch_seconds_estimate": len(rows["train"]) / full_rate}

    # 5. torch.compile (opt-in): compile time, compiled rate, when it pays back
    if compile:
        cnet = fresh_model()
        compiled = torch.compile(cnet)
        t = time.perf_counter()
        full_epoch(compiled, 1, epoch=1)  # the first step compiles
        first = time.perf_counter() - t
        full_epoch(compiled, max(warmup, 1), epoch=1)
        c_rate = full_epoch(compiled, steps, epoch=2)
        per_epoch_saved = len(rows["train"]) / full_rate - len(rows["train"]) / c_rate
        out["compile"] = {"first_step_seconds": first, "images_per_second": c_rate, "speedup": c_rate / full_rate,
                          "pays_back_after_epochs": (first / per_epoch_saved) if per_epoch_saved > 0 else None}

    out["verdict"] = _verdict(out)
    return out


def _verdict(r: dict) -> list[str]:
    """Plain sentences: what bounds an epoch and what would help."""
    model_rate, loader_rate, full = (r["model_alone"]["train_step_images_per_second"], r["loader"]["images_per_second"],
                                     r["step"]["images_per_second"])
    lines = []
    data_share = max(0.0, 1.0 - full / model_rate)
    if loader_rate < model_rate:
        lines.append(f"data-bound: loading + augmentation run at {loader_rate:,.0f} img/s, slower than the model's "
                     f"{model_rate:,.0f} img/s; a GPU would not help until the loader is faster")
    else:
        lines.append(f"model-bound: the model's step runs at {model_rate:,.0f} img/s and the loader at "
                     f"{loader_rate:,.0f} img/s; loading and augmentation take ~{100 * data_share:.0f}% of a step "
                     f"(whole step {full:,.0f} img/s)")
    pf = r["decode"].get("per_file")
    if pf:
        dec = pf["images_per_second_all_cores_estimate"]
        if dec < model_rate:
            lines.append(f"decoding every file every epoch would be the bottleneck: ~{dec:,.0f} img/s on all cores "
                         f"vs the model's {model_rate:,.0f} img/s - the decoded-image cache avoids it")
        else:
            lines.append(f"per-file decoding (~{dec:,.0f} img/s on all cores) would keep up with the model; "
                         f"the cache still frees the cores for the model")
    c = r.get("compile")
    if c:
        if c["pays_back_after_epochs"] is None:
            lines.append(f"torch.compile: {c['first_step_seconds']:.0f} s to compile and {c['speedup']:.2f}x the step "
                         f"rate - it does not pay off here; leave it off")
        else:
            lines.append(f"torch.compile: {c['first_step_seconds']:.0f} s to compile, {c['speedup']:.2f}x the step rate; "
                         f"pays back after {c['pays_back_after_epochs']:.1f} epoch(s)")
    if r["device"] == "cpu" and r["img_size"] > 96:
        lines.append("on a CPU, a smaller --img-size or a smaller model buys more than any loader setting")
    return lines
