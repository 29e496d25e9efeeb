"""Run preparation: run directory, data, splits, decoding, and every automatic default, logged.

:func:`prepare` turns a :class:`~nextclass.config.TrainConfig` into a :class:`Context` that the
training phases and the final evaluation share. Each default chosen for the user (device, threads,
workers, batch size, learning rate, image size, channels, AMP...) is written to the log and into
the saved ``config.yaml``, so the saved config says exactly what ran.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import TrainConfig, load_config, make_config, save_config
from ..data.audit import audit_decoded
from ..data.cache import DecodedImages, decode_all
from ..data.sources import DataSource, load_source
from ..data.splits import assign_splits, read_split_csv, write_split_csv
from ..data.transforms import Augment, Preprocess
from ..distributed import (barrier, broadcast_object, device_for_rank, init_from_env, is_main, local_rank,
                           local_world_size, world_size)
from ..utils import atomic_write_text, configure_threads, log

__all__ = ["Context", "prepare", "new_run_dir", "augment_for", "amp_dtype_for", "split_rows"]


@dataclass
class Context:
    cfg: TrainConfig
    run_dir: Path
    source: DataSource
    pp: Preprocess
    images: DecodedImages
    rows: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    device: torch.device
    amp_dtype: torch.dtype | None
    data_hash: str
    resumed: bool = False
    notes: list[str] = field(default_factory=list)
    callbacks: list = field(default_factory=list)  # per-epoch hooks: callback(history_row, state)

    @property
    def classes(self) -> list[str]:
        return self.source.classes


def new_run_dir(output: str, name: str) -> Path:
    base = Path(output) / name
    cand, n = base, 1
    while cand.exists():
        n += 1
        cand = base.with_name(f"{base.name}-{n}")
    cand.mkdir(parents=True)
    return cand


def _auto(ctx_notes: list[str], what: str, value, why: str):
    ctx_notes.append(f"{what} = {value} ({why})")
    return value


def _probe_images(source: DataSource, n: int = 64) -> tuple[int, bool]:
    """Median shorter side and whether every probed image is grayscale."""
    from PIL import Image

    if source.array is not None:
        a = source.array
        return int(min(a.shape[1], a.shape[2])), a.ndim == 3 or a.shape[-1] == 1
    step = max(1, len(source.samples) // n)
    sides, gray = [], True
    for s in source.samples[::step][:n]:
        try:
            with Image.open(s.path) as im:
                sides.append(min(im.size))
                if im.mode not in ("L", "LA", "I;16", "I;16B", "I;16L", "I", "1"):
                    gray = False
        except Exception:
            continue
    return (int(np.median(sides)) if sides else 32), (gray and bool(sides))


def measure_channels_last(name: str, num_classes: int, in_chans: int, size: int, batch: int = 64,
                          steps: int = 3) -> tuple[float, float]:
    """Training-step images/s in NCHW and channels_last (small images only: it costs about a second).

    Which is faster depends on the model and the CPU (simple_cnn at 28 px: ~1.3x for channels_last
    on the 2-core AVX2 machine; ResNet-18 at 224 px: no gain), so it is measured, not assumed.
    """
    import time

    from ..models.factory import create

    rates = []
    for cl in (False, True):
        torch.manual_seed(0)
        m = create(name, num_classes=num_classes, in_chans=in_chans)
        x = torch.randn(batch, in_chans, size, size)
        y = torch.randint(0, num_classes, (batch,))
        if cl:
            m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(m.parameters(), lr=1e-3)
        t = 0.0
        for i in range(steps + 1):
            t0 = time.perf_counter()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
            opt.zero_grad()
            t += (time.perf_counter() - t0) if i else 0.0  # the first step warms up
        rates.append(batch * steps / max(t, 1e-9))
    return rates[0], rates[1]


def resolve(cfg: TrainConfig, source: DataSource, n_train: int) -> tuple[TrainConfig, Preprocess, list[str]]:
    """Fill every ``None`` field of ``cfg`` and derive the preprocessing. Returns notes for the log."""
    from ..models.factory import config_name, create, data_config

    notes: list[str] = []
    d = cfg.model_dump()
    pretrained = bool(cfg.pretrained)
    side, gray = _probe_images(source)
    if d["in_chans"] is None:
        d["in_chans"] = _auto(notes, "in_chans", 3 if pretrained or not gray else 1,
                              "pretrained backbones take RGB" if pretrained else ("all probed images are grayscale" if gray else "colour images"))
    probe = create(config_name(cfg.model, cfg.pretrained), num_classes=len(source.classes), in_chans=d["in_chans"])
    dc = data_config(probe)
    if cfg.recipe in ("finetune", "two-phase") and d["layer_decay"] is None:
        from .recipes import default_layer_decay

        ld = default_layer_decay(probe)
        if ld is not None:
            d["layer_decay"] = _auto(notes, "layer_decay", ld, "first layer group learns at 1/10 of the head's rate")
    if cfg.recipe == "two-phase" and d["probe_epochs"] is None:
        d["probe_epochs"] = _auto(notes, "probe_epochs", 10, "head-only epochs on cached features take seconds")
    del probe
    if d["img_size"] is None:
        if pretrained:
            d["img_size"] = _auto(notes, "img_size", int(dc["input_size"][-1]), "the pretrained model's input size")
        else:
            size = int(min(224, max(16, 4 * round(side / 4))))
            d["img_size"] = _auto(notes, "img_size", size, f"median image side {side}px, trained from scratch at the data's resolution")
    crop_pct = dc["crop_pct"] if pretrained else 1.0
    size = int(round(d["img_size"] / crop_pct)) if crop_pct < 1 else d["img_size"]
    mean, std = (dc["mean"], dc["std"]) if pretrained else ((0.5,) * 3, (0.5,) * 3)
    interp = dc["interpolation"] if pretrained else "bilinear"
    pp = Preprocess(size=size, crop=d["img_size"], channels=d["in_chans"], interpolation=interp,
                    mean=tuple(mean), std=tuple(std))
    dev = d["device"]
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else ("mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu")
        d["device"] = _auto(notes, "device", dev, "auto")
    cuda = dev.startswith("cuda")
    if d["amp"] is None:
        d["amp"] = _auto(notes, "amp", cuda, "on for CUDA; off on CPU, where bf16/fp16 measured 15-40x slower")
    if d["channels_last"] is None:
        if cuda:
            d["channels_last"] = _auto(notes, "channels_last", True, "on for CUDA")
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank must pick the same layout: no per-rank timing
            d["channels_last"] = _auto(notes, "channels_last", False, "CPU under DDP: one layout for all ranks")
        elif d["img_size"] <= 64:
            nchw, nhwc = measure_channels_last(cfg.model, len(source.classes), d["in_chans"], d["img_size"])
            d["channels_last"] = _auto(notes, "channels_last", nhwc > 1.05 * nchw,
                                       f"measured {nhwc:.0f} vs {nchw:.0f} img/s NCHW for a training step here")
        else:
            d["channels_last"] = _auto(notes, "channels_last", False, "CPU at large sizes: no training gain measured")
    if d["batch_size"] is None:
        px = d["img_size"]
        bs = (256 if px <= 64 else 128) if cuda else (128 if px <= 32 else 64 if px <= 96 else 32)
        bs = max(8, min(bs, n_train))
        d["batch_size"] = _auto(notes, "batch_size", bs, f"{'GPU' if cuda else 'CPU'} at {px}px, {n_train} training images")
    if d["lr"] is None:
        base = {"scratch": 2e-3, "linear-probe": 1e-3, "finetune": 1e-4, "two-phase": 1e-4}[cfg.recipe]
        if cfg.optimizer == "sgd":
            base *= 50
        gb = d["batch_size"] * world_size()  # DDP: batch_size is per rank; the lr follows the global batch
        lr = base * (gb / 128) ** 0.5 if cfg.recipe == "scratch" else base
        d["lr"] = _auto(notes, "lr", float(f"{lr:.3g}"), f"{cfg.recipe} with {cfg.optimizer}, global batch {gb}")
    if d["workers"] is None:
        cores = os.cpu_count() or 1
        w = min(8, max(1, cores - 1)) if cuda else 0
        d["workers"] = _auto(notes, "workers", w, "decoded-image cache makes loading cheap; "
                             + ("feed the GPU" if cuda else "on CPU the main process keeps every core for the model"))
    if d["threads"] is None:
        lw = local_world_size()  # DDP on one machine: the local processes share the cores
        d["threads"] = _auto(notes, "threads", max(1, (os.cpu_count() or 1) // lw),
                             "all cores" if lw == 1 else f"cores shared by {lw} local processes")
    level = {"none": (1.0, 0.0), "light": (0.85, 5.0), "standard": (0.75, 10.0), "strong": (0.5, 15.0)}[cfg.augment]
    if d["scale_min"] is None:
        d["scale_min"] = level[0]
    if d["rotation"] is None:
        d["rotation"] = level[1]
    if d["drop_rate"] is None and cfg.model == "simple_cnn":
        d["drop_rate"] = 0.5
    return make_config(**d), pp, notes


def augment_for(cfg: TrainConfig) -> Augment | None:
    if cfg.augment == "none" and cfg.auto_augment == "none" and not cfg.random_erasing:
        return None
    strength = {"none": 0.0, "light": 0.1, "standard": 0.2, "strong": 0.3}[cfg.augment]
    return Augment(scale=(cfg.scale_min or 1.0, 1.0), hflip=cfg.hflip and cfg.augment != "none", vflip=cfg.vflip,
                   rotation=cfg.rotation or 0.0, brightness=strength, contrast=strength, auto=cfg.auto_augment,
                   erasing=cfg.random_erasing)


def _write_skipped(path: Path, source: DataSource, images: DecodedImages) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "split", "reason"])
    for pos, reason in sorted(images.errors.items()):
        s = source.samples[pos]
        w.writerow([s.path, s.split, reason])
    atomic_write_text(path, buf.getvalue())


def _data_hash(images: DecodedImages, rows: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(memoryview(np.ascontiguousarray(images.array[r])))
    h.update(labels.astype(np.int64).tobytes())
    return "sha256:" + h.hexdigest()


def amp_dtype_for(amp: bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``: bf16 where supported, fp16 on older GPUs, None when off."""
    if not amp:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def split_rows(source: DataSource, images: DecodedImages) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Positions of the decodable images of each split, and their labels."""
    splits = np.array([s.split for s in source.samples])
    all_labels = np.array([s.label for s in source.samples])
    rows = {sp: np.flatnonzero((splits == sp) & images.ok) for sp in ("train", "val", "test")}
    return rows, {sp: all_labels[r] for sp, r in rows.items()}


def prepare(cfg: TrainConfig | None = None, *, resume: str | os.PathLike | None = None, progress: bool = True) -> Context:
    """Create (or reopen) the run directory and get the data ready for training."""
    resumed = resume is not None
    if resumed:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").exists():
            raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml) - nothing to resume")
        cfg = load_config(run_dir / "config.yaml")
    assert cfg is not None
    init_from_env(cfg.device)  # under torchrun / --nproc: join the process group (gloo on CPU, NCCL on GPU)
    configure_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    source = load_source(cfg.data, cache_dir=cfg.cache_dir, download=cfg.download)
    if not resumed:
        name = cfg.name or f"{cfg.model}-{Path(source.name).name}".replace("/", "_")
        run_dir = Path(broadcast_object(str(new_run_dir(cfg.output, name)) if is_main() else None))  # DDP: rank 0 names it
    split_csv = run_dir / "split.csv"
    if split_csv.exists():
        read_split_csv(split_csv, source)
    else:
        assign_splits(source, cfg.split, cfg.seed)
        if is_main():
            write_split_csv(split_csv, source)
    n_train_all = sum(1 for s in source.samples if s.split == "train")
    if not resumed:
        cfg, pp, notes = resolve(cfg, source, n_train_all)
        if is_main():
            save_config(cfg, run_dir / "config.yaml")
            for n in notes:
                log(f"[dim]auto[/] {n}")
    else:
        _, pp, _ = resolve(cfg, source, n_train_all)  # every field is already filled: nothing changes
    configure_threads(cfg.threads)
    if local_rank() != 0:
        barrier()  # DDP: one process per machine decodes; the others then read its cache
    images = decode_all(source, list(range(len(source.samples))), size=pp.size, channels=pp.channels,
                        interpolation=pp.interpolation, cache_dir=cfg.cache_dir, progress=progress and local_rank() == 0)
    if local_rank() == 0:
        barrier()
    if is_main():
        _write_skipped(run_dir / "skipped.csv", source, images)
        audit_decoded(source, images, run_dir / "audit.json")  # quick duplicate/leak audit; logs, never raises
    rows, labels = split_rows(source, images)
    if len(rows["train"]) == 0:
        raise ValueError(f"{cfg.data}: no usable training images after decoding ({len(images.errors)} skipped)")
    dev = device_for_rank(torch.device(cfg.device))  # DDP: cuda -> cuda:LOCAL_RANK
    amp_dtype = amp_dtype_for(cfg.amp, dev)
    if amp_dtype is not None and dev.type != "cuda":
        log("[yellow]WARNING[/]: amp on CPU - bf16 autocast measured 15-40x slower than fp32 on CPUs without AMX/AVX512-BF16")
    counts = ", ".join(f"{sp} {len(r)}" for sp, r in rows.items())
    if is_main():  # DDP: one log line, not one per rank
        log(f"[bold]{source.name}[/]: {len(source.classes)} classes, {len(source.samples)} images ({counts}); "
            f"skipped {len(images.errors)}" + (f" (see {run_dir / 'skipped.csv'})" if images.errors else "")
            + f"; cache {'hit' if images.hit else 'built'} at {pp.size}px x{pp.channels}")
    data_hash = _data_hash(images, rows["train"], labels["train"])
    return Context(cfg, run_dir, source, pp, images, rows, labels, dev, amp_dtype, data_hash, resumed)
