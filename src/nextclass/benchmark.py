"""``nextclass benchmark``: where the training time goes, on this machine, for this data and model.

Measures, with the same code the training run uses (:func:`~nextclass.training.defaults.resolve` picks the
same automatic defaults, :func:`~nextclass.training.batches.train_batches` builds the same loader and batched
augmentation, :func:`~nextclass.engine.loop.train_one_epoch` runs the same step):

- ``decode``: building (or hitting) the decoded-image cache, and the per-file decode rate an
  ImageFolder-style loop would pay on every epoch instead;
- ``loader``: the loader and augmentation alone (no model);
- ``model``: the training step alone (forward, backward, optimiser) on one batch held in memory,
  and inference alone; its achieved GFLOP/s as a fraction of this machine's fp32 matmul peak;
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

from nextclass.training.context import Context

__all__ = ["benchmark", "matmul_peak_gflops"]


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
    from nextclass.data.cache import _decode_one

    files = [s.path for s in source.samples if s.index is None]
    if not files:
        return None
    pick = files[:: max(1, len(files) // n)][:n]
    t = time.perf_counter()
    ok = sum(_decode_one((p, size, channels, interpolation))[0] is not None for p in pick)
    sec = time.perf_counter() - t
    return {"files": len(pick), "decoded": ok, "images_per_second_one_process": _rate(len(pick), sec),
            "images_per_second_all_cores_estimate": _rate(len(pick), sec) * (os.cpu_count() or 1)}


def _setup(cfg, progress: bool) -> tuple[Context, dict, float]:
    """The context a training run would have (same defaults, splits and decode), the report header, decode seconds."""
    from nextclass.data.cache import decode_all
    from nextclass.data.sources import load_source
    from nextclass.data.splits import assign_splits
    from nextclass.training.defaults import amp_dtype_for, resolve, settle_hflip
    from nextclass.data.splits import split_rows
    from nextclass.dist import check_device
    from nextclass.utils import configure_threads

    check_device(cfg.device)  # --device foo / cuda without a GPU: one line, before any work
    configure_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    source = load_source(cfg.data, cache_dir=cfg.cache_dir, download=cfg.download)
    assign_splits(source, cfg.split, cfg.seed)
    res = resolve(cfg, source, sum(1 for s in source.samples if s.split == "train"))
    cfg, pp = res.cfg, res.pp
    configure_threads(cfg.threads)
    t = time.perf_counter()
    images = decode_all(source, list(range(len(source.samples))), pp, cache_dir=cfg.cache_dir, progress=progress)
    decode_s = time.perf_counter() - t
    rows, labels = split_rows(source, images)
    cfg, note = settle_hflip(cfg, images.array, rows["train"], labels["train"], cfg.seed)  # as training settles it
    if note:
        res.notes.append(note)
    if len(rows["train"]) < cfg.batch_size:
        raise ValueError(f"{cfg.data}: {len(rows['train'])} training images - fewer than one batch of {cfg.batch_size}; "
                         f"pass a smaller --batch-size")
    dev = torch.device(cfg.device)
    ctx = Context(cfg, Path("."), source, pp, images, rows, labels, dev, amp_dtype_for(cfg.amp, dev), "", res.model)
    head = {"benchmark": "nextclass", "data": source.name, "model": cfg.model, "device": str(dev),
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "img_size": cfg.img_size, "cache_size": pp.size, "channels": pp.channels,
            "batch_size": cfg.batch_size, "channels_last": bool(cfg.channels_last), "amp": bool(cfg.amp),
            "augment": cfg.augment, "auto": res.notes}
    return ctx, head, decode_s


def matmul_peak_gflops(device: torch.device, n: int = 2048, reps: int = 10) -> float:
    """This machine's fp32 matrix-multiply rate (GFLOP/s): the ceiling a conv net's step can approach."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b)
    _sync(device)
    return reps * 2 * n ** 3 / (time.perf_counter() - t) / 1e9


def _peak_fraction(net: torch.nn.Module, x: torch.Tensor, step_s: float, device: torch.device) -> dict:
    """The training step's achieved GFLOP/s (3x the counted forward FLOPs: forward + two backward matmuls)
    against the measured matmul peak."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(x)
    achieved = 3 * fc.get_total_flops() / step_s / 1e9
    peak = matmul_peak_gflops(device, 4096 if device.type == "cuda" else 2048)
    return {"forward_mflop_per_image": fc.get_total_flops() / len(x) / 1e6, "train_step_gflops": achieved,
            "matmul_peak_gflops": peak, "fraction_of_peak": achieved / peak}


class _Bench:
    """The measurements of :func:`benchmark`, each a method writing its block into ``out``."""

    def __init__(self, ctx: Context, out: dict, steps: int, warmup: int):
        self.ctx, self.cfg, self.out, self.dev = ctx, ctx.cfg, out, ctx.device
        self.steps_per_epoch = len(ctx.rows["train"]) // self.cfg.batch_size
        n_batches = min(self.steps_per_epoch, warmup + steps)
        if n_batches < warmup + steps:  # a small dataset: fewer timed steps
            steps = max(1, n_batches - warmup)
            warmup = n_batches - steps
        self.steps, self.warmup = steps, warmup
        out.update(steps=steps, warmup=warmup, train_images=len(ctx.rows["train"]), steps_per_epoch=self.steps_per_epoch)

    def loader(self) -> None:
        """The loader and batched augmentation alone (no model)."""
        from nextclass.training.batches import train_batches

        loader, batch_tf = train_batches(self.ctx, epoch=0)
        put = self.ctx.runtime.put
        it = iter(_Take(loader, self.warmup + self.steps))
        for _ in range(self.warmup):
            put(next(it)[0], batch_tf)
        _sync(self.dev)
        t, seen = time.perf_counter(), 0
        for x, _y in it:
            seen += len(put(x, batch_tf))
        _sync(self.dev)
        self.out["loader"] = {"images_per_second": _rate(seen, time.perf_counter() - t),
                              "kind": "uint8 batches + one batched augmentation" if batch_tf is not None else
                                      "DataLoader with per-sample transforms.v2 (auto_augment has no batched version)"}

    def fresh_model(self):
        from nextclass.training.defaults import build_model

        torch.manual_seed(self.cfg.seed)
        m = build_model(self.cfg, len(self.ctx.classes)).to(self.dev)
        return m.to(memory_format=torch.channels_last) if self.cfg.channels_last else m

    def parts(self, model, compile: bool = False):
        """The run's own training step (:func:`nextclass.training.step.build_parts`: loss with label smoothing,
        EMA, mixup, clipping), built for one process."""
        from nextclass.training.defaults import epochs_cap
        from nextclass.training.step import Phase, build_parts

        phase = Phase("benchmark", max(1, epochs_cap(self.cfg) or 10), self.cfg.lr)
        return build_parts(self.ctx, model, phase, None, ddp=False, compile=compile)

    def model_alone(self) -> None:
        """The training step and inference alone, on one batch held in memory."""
        from nextclass.engine.loop import optimizer_step_on

        cfg, rt = self.cfg, self.ctx.runtime
        net = self.fresh_model()
        parts = self.parts(net)
        x = rt.put(torch.randn(cfg.batch_size, self.ctx.pp.channels, cfg.img_size, cfg.img_size))
        y = torch.randint(0, len(self.ctx.classes), (cfg.batch_size,), device=self.dev)
        step = lambda: optimizer_step_on(parts, x, y, 0)  # noqa: E731

        @torch.no_grad()
        def infer():
            with rt.autocast():
                net(x)

        net.train()
        step_s = _time_steps(step, self.steps, self.warmup, self.dev)
        net.eval()
        infer_s = _time_steps(infer, self.steps, self.warmup, self.dev)
        self.out["model_alone"] = {"train_step_images_per_second": _rate(cfg.batch_size, step_s),
                                   "inference_images_per_second": _rate(cfg.batch_size, infer_s),
                                   "parameters": sum(p.numel() for p in net.parameters()),
                                   **_peak_fraction(net, x, step_s, self.dev)}

    def epoch_rate(self, parts, n_steps: int, epoch: int) -> float:
        """img/s of ``n_steps`` steps through the training loop itself (loader, augmentation, the run's step)."""
        from nextclass.engine.loop import train_one_epoch
        from nextclass.training.batches import train_batches

        ld, tf = train_batches(self.ctx, epoch=epoch)
        res = train_one_epoch(parts, _Take(ld, n_steps), step0=0, batch_transform=tf)
        _sync(self.dev)
        return _rate(res.images, res.seconds)

    def whole_step(self) -> None:
        parts = self.parts(self.fresh_model())
        if self.warmup:
            self.epoch_rate(parts, self.warmup, epoch=1)
        rate = self.epoch_rate(parts, self.steps, epoch=2)
        self.out["step"] = {"images_per_second": rate, "epoch_seconds_estimate": len(self.ctx.rows["train"]) / rate}

    def compiled(self) -> None:
        """torch.compile: compile time, compiled step rate, and after how many epochs it pays back."""
        compiled = self.parts(self.fresh_model(), compile=True)  # compiled exactly as a --compile run compiles
        t = time.perf_counter()
        self.epoch_rate(compiled, 1, epoch=1)  # the first step compiles
        first = time.perf_counter() - t
        self.epoch_rate(compiled, max(self.warmup, 1), epoch=1)
        c_rate = self.epoch_rate(compiled, self.steps, epoch=2)
        n, full_rate = len(self.ctx.rows["train"]), self.out["step"]["images_per_second"]
        saved = n / full_rate - n / c_rate
        self.out["compile"] = {"first_step_seconds": first, "images_per_second": c_rate, "speedup": c_rate / full_rate,
                               "pays_back_after_epochs": (first / saved) if saved > 0 else None}


def benchmark(data: str = "digits", *, compile: bool = False, steps: int = 20, warmup: int = 3,
              decode_files: int = 200, progress: bool = True, **fields) -> dict:
    """Measure images/s of each part of a training step. Returns a JSON-able dict (see module doc).

    Args:
        data: anything ``nextclass train`` accepts (folder, CSV, ``digits``, ``fashion-mnist``).
        compile: also measure ``torch.compile`` (compile time and compiled step rate).
        steps: timed steps per measurement (after ``warmup`` untimed ones).
        decode_files: files decoded one by one for the per-file decode rate (file-backed data only).
        fields: training config fields (``model``, ``img_size``, ``batch_size``, ``augment``, ``device``...);
            unset ones get (and report) the same automatic defaults training would.

    Example:
        >>> r = benchmark("digits", model="simple_cnn", steps=5)  # doctest: +SKIP
        >>> r["step"]["images_per_second"] > 0                    # doctest: +SKIP
        True
    """
    from nextclass.config import coerce_config

    cfg = coerce_config({"data": data, "compile": compile, **fields})  # unset fields: what training would choose
    ctx, out, decode_s = _setup(cfg, progress)
    src = ctx.source
    out["decode"] = {"cache": "hit" if ctx.images.hit else "built", "images": len(src.samples), "seconds": decode_s,
                     "images_per_second": _rate(len(src.samples), decode_s), "skipped": len(ctx.images.errors),
                     "per_file": _per_file_decode(src, ctx.pp.size, ctx.pp.channels, ctx.pp.interpolation, decode_files)}
    bench = _Bench(ctx, out, steps, warmup)
    bench.loader()
    bench.model_alone()
    bench.whole_step()
    if compile:
        bench.compiled()
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
