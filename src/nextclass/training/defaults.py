"""Every automatic default of a training run, in one place, each logged with its reason.

``"auto"`` in a :class:`~nextclass.config.TrainConfig` means "choose for me" (and ``null`` in an old
config file loads as ``auto``). :func:`resolve` is the one place that turns each ``auto`` into a value:
from the data (:func:`nextclass.data.probe.probe_data`: image side, grayscale or colour, count, probed
once and only when a choice needs it), the model (its pretrained data config) and the machine (device,
cores, a measured channels_last timing); it builds the run's model once. The notes it returns are
logged and the resolved config is what the run saves as ``config.yaml``, so the saved file says exactly
what ran. The one exception waits for a measurement: under ``--max-minutes`` the planned recipes' epochs
(and ``random_erasing``, which depends on them) stay ``auto`` until the budget's plan settles them
through :func:`settle_budget`, in this module too.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nextclass.config import AUTO, TrainConfig, make_config, unresolved
from nextclass.data.probe import DataProbe, probe_data
from nextclass.data.samples import DataSource
from nextclass.data.transforms import Augment, Preprocess
from nextclass.dist import launched_world_size, local_world_size, world_size
from nextclass.training.model_choice import choose_model, pick_model  # noqa: F401 (pick_model: re-exported)

__all__ = ["Resolved", "resolve", "build_model", "arch_kwargs", "augment_for", "amp_dtype_for",
           "measure_channels_last", "erasing_for", "preprocess_for", "pick_model", "translate_pixels", "is_fast",
           "ema_decay_for", "whitening_batch", "run_name", "settle_budget", "epochs_cap"]

PLANNED_RECIPES = ("scratch", "finetune", "two-phase")  # recipes whose epochs --max-minutes plans (image epochs)
DEFAULT_BUDGET_MIN = 10.0  # recipe auto with pretrained weights and no --max-minutes: the strategy of a 10-min budget
# augment level -> (random-resized-crop min area, max rotation degrees, colour jitter strength)
_LEVELS = {"none": (1.0, 0.0, 0.0), "light": (0.85, 5.0, 0.1), "standard": (0.75, 10.0, 0.2), "strong": (0.5, 15.0, 0.3),
           "translate": (1.0, 0.0, 0.0)}
LONG_SCHEDULE_EPOCHS = 40  # fast_resnet: from this many epochs on, random erasing keeps it from memorising
LONG_SCHEDULE_ERASING = 0.5  # the erasing probability of a long schedule (RandomErasing's own default)
WHITEN_IMAGES = 5000  # training images whose 2x2 patches set fast_resnet's whitening layer


def translate_pixels(img_size: int) -> int:
    """Largest shift of ``augment: translate``: 1/16 of the side, at least one pixel (2 px at 28-32 px)."""
    return max(1, round(img_size / 16))


@dataclass
class Resolved:
    cfg: TrainConfig  # every field filled
    pp: Preprocess  # eval preprocessing
    model: nn.Module  # the run's model, built once
    notes: list[str]  # "field = value (why)" for the log


def run_name(cfg: TrainConfig, source: DataSource, probe: DataProbe | None = None) -> str:
    """The run directory's name: ``cfg.name``, or for ``auto`` ``<model>-<data>`` (the model ``auto`` stands for).

    Example:
        >>> run_name(make_config(data="digits", model="simple_cnn"), load_source("digits"))  # doctest: +SKIP
        'simple_cnn-digits'
    """
    if cfg.name != AUTO:
        return cfg.name
    model = cfg.model if cfg.model != AUTO else choose_model(cfg, lambda: (probe or probe_data(source)).side)[0]
    return f"{model}-{Path(source.name).name}".replace("/", "_")


class _Choices:
    """The config as a dict, the notes explaining each value chosen for the user, and the data probe (run once,
    only when a choice needs it: a resumed run's complete config never opens a file)."""

    def __init__(self, cfg: TrainConfig, source: DataSource, probe: DataProbe | None = None):
        self.d, self.notes = cfg.model_dump(), []
        if self.d["pretrained"] is None:  # off, as a word: a None would read back as auto (make_config)
            self.d["pretrained"] = "none"
        self._source, self._probe = source, probe

    @property
    def probe(self) -> DataProbe:
        if self._probe is None:
            self._probe = probe_data(self._source)
        return self._probe

    def auto(self, key: str, value, why: str) -> None:
        self.d[key] = value
        self.notes.append(f"{key} = {value} ({why})")

    def set(self, key: str, value, why: str | None = None) -> None:
        """Fill ``key``; with a reason it is also logged (``why=None``: a plain default, not worth a line)."""
        if why is None:
            self.d[key] = value
        else:
            self.auto(key, value, why)

    def unset(self, key: str) -> bool:
        """Whether ``key`` is still ``auto`` (the user left the choice to us)."""
        return self.d[key] == AUTO


def arch_kwargs(cfg: TrainConfig, num_classes: int) -> dict:
    """The constructor arguments of the run's model (also stored in the bundle)."""
    kw = {"num_classes": num_classes, "in_chans": cfg.in_chans}
    if cfg.drop_rate != AUTO:  # auto (only while resolving): the architecture's own
        kw["drop_rate"] = cfg.drop_rate
    if cfg.drop_path:
        kw["drop_path_rate"] = cfg.drop_path
    return kw


def arch_of(cfg: TrainConfig, num_classes: int, model: nn.Module | None = None) -> dict:
    """The run's architecture as the bundle stores it (with the built ``model``'s head options when given)."""
    return {"name": cfg.model, "kwargs": arch_kwargs(cfg, num_classes), "head": cfg.head,
            "head_kwargs": dict(getattr(model, "head_kwargs", {}) or {})}


def build_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The backbone (pretrained weights loaded when asked) with the configured head: the one builder
    (:func:`nextclass.models.factory.build`) on the run's architecture."""
    from nextclass.models.factory import build

    return build(arch_of(cfg, num_classes), pretrained=cfg.pretrained)


def measure_channels_last(model: nn.Module, in_chans: int, size: int, batch: int = 64, steps: int = 3) -> tuple[float, float]:
    """Training-step images/s of a copy of ``model`` in NCHW and in channels_last.

    Which is faster depends on the model and the CPU (simple_cnn at 28 px: ~1.3x for channels_last
    on the 2-core AVX2 machine; ResNet-18 at 224 px: no gain), so it is measured, not assumed.
    Small images only: it costs about a second.
    """
    rates = []
    for cl in (False, True):
        m = copy.deepcopy(model).train()
        x = torch.randn(batch, in_chans, size, size)
        y = torch.randint(0, 2, (batch,))
        if cl:
            m, x = m.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(m.parameters(), lr=1e-6)
        t = 0.0
        for i in range(steps + 1):
            t0 = time.perf_counter()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
            opt.zero_grad()
            t += (time.perf_counter() - t0) if i else 0.0  # the first step warms up
        rates.append(batch * steps / max(t, 1e-9))
    return rates[0], rates[1]


def _model_defaults(c: _Choices, cfg: TrainConfig, source: DataSource) -> tuple[nn.Module, dict]:
    """The model (``auto``), in_chans, drop rate, layer decay, probe epochs; the model built once, its data config."""
    from nextclass.models.factory import data_config
    from nextclass.models.freeze import default_layer_decay

    if cfg.model == AUTO or cfg.pretrained == AUTO:
        model_name, pre, why = choose_model(cfg, lambda: c.probe.side)
        c.d.update(model=model_name, pretrained=pre or "none")  # "none": off (a None in the dict would read as auto)
        for key, reason in why:
            c.notes.append(f"{key} = {c.d[key] if key == 'model' else (pre or 'none')} ({reason})")
    _strategy_defaults(c)
    cfg = make_config(**c.d)
    pretrained = bool(cfg.pretrained)
    if c.unset("in_chans"):
        gray = not pretrained and c.probe.gray
        c.auto("in_chans", 1 if gray else 3, "pretrained backbones take RGB" if pretrained else
               ("all probed images are grayscale" if gray else "colour images"))
    if c.unset("probe_epochs"):
        two = cfg.recipe == "two-phase"
        c.set("probe_epochs", 10 if two else 0, "head-only epochs on cached features take seconds" if two else None)
    full = make_config(**c.d)
    model = build_model(full, len(source.classes))
    if c.unset("drop_rate"):  # the architecture's own (simple_cnn: the seed notebooks' 0.5), now written down
        c.set("drop_rate", float(getattr(model, "drop_rate", 0.0) or 0.0))
    dc = data_config(model)
    if c.unset("layer_decay"):
        ld = default_layer_decay(model) if cfg.recipe in ("finetune", "two-phase") else None
        c.set("layer_decay", ld or 1.0, None if ld is None else "first layer group learns at 1/10 of the head's rate")
    return model, dc


def _strategy_defaults(c: _Choices) -> None:
    """``recipe: auto``: scratch without pretrained weights; with them, two-phase whose fine-tuning the time budget
    plans (:func:`nextclass.training.plan.choose_strategy` keeps only the probe when no fine-tuning epoch fits).
    Without ``--max-minutes`` the plan is made for :data:`DEFAULT_BUDGET_MIN` minutes, and says so."""
    if not c.unset("recipe"):
        return
    if c.d["pretrained"] in (None, "none"):
        c.auto("recipe", "scratch", "no pretrained weights")
        return
    c.auto("recipe", "two-phase", "pretrained weights: a logistic-regression probe on cached features first, then "
           "fine-tuning where the time budget says it fits (the plan may keep the probe alone)")
    if c.d["max_minutes"] is None:
        c.auto("max_minutes", DEFAULT_BUDGET_MIN, "the strategy of a pretrained run is planned for a time budget; none "
               "was given (--max-minutes, or --recipe to choose yourself)")


def preprocess_for(img_size: int, in_chans: int, pretrained: bool, dc: dict) -> Preprocess:
    """The eval preprocessing: the pretrained model's resize/crop, mean/std and interpolation, or plain
    [-1, 1] scaling at the crop size when training from scratch.

    Example:
        >>> preprocess_for(28, 1, False, {}).to_dict()["mean"]
        [0.5, 0.5, 0.5]
    """
    if not pretrained:
        return Preprocess(size=img_size, crop=img_size, channels=in_chans, interpolation="bilinear",
                          mean=(0.5,) * 3, std=(0.5,) * 3)
    size = int(round(img_size / dc["crop_pct"])) if dc["crop_pct"] < 1 else img_size
    return Preprocess(size=size, crop=img_size, channels=in_chans, interpolation=dc["interpolation"],
                      mean=tuple(dc["mean"]), std=tuple(dc["std"]))


def _preprocess(c: _Choices, pretrained: bool, dc: dict) -> Preprocess:
    """Input size (the data's own from scratch, the model's when pretrained) and the eval preprocessing."""
    if c.unset("img_size"):
        if pretrained:
            c.auto("img_size", int(dc["input_size"][-1]), "the pretrained model's input size")
        else:
            side = c.probe.side
            size = int(min(224, max(16, 4 * round(side / 4))))
            c.auto("img_size", size, f"median image side {side}px, trained from scratch at the data's resolution")
    return preprocess_for(c.d["img_size"], c.d["in_chans"], pretrained, dc)


def _device_defaults(c: _Choices, model: nn.Module) -> None:
    """Device, AMP and memory format."""
    if c.d["device"] == AUTO:
        mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        c.auto("device", "cuda" if torch.cuda.is_available() else ("mps" if mps else "cpu"), "auto")
    cuda = c.d["device"].startswith("cuda")
    if c.unset("amp"):
        c.auto("amp", cuda, "on for CUDA; off on CPU, where bf16/fp16 measured 15-40x slower")
    if not c.unset("channels_last"):
        return
    if cuda:
        c.auto("channels_last", True, "on for CUDA")
    elif launched_world_size() > 1:  # every rank must pick the same layout: no per-rank timing
        c.auto("channels_last", False, "CPU under DDP: one layout for all ranks")
    elif c.d["img_size"] <= 64:
        nchw, nhwc = measure_channels_last(model, c.d["in_chans"], c.d["img_size"])
        c.auto("channels_last", nhwc > 1.05 * nchw, f"measured {nhwc:.0f} vs {nchw:.0f} img/s NCHW for a training step here")
    else:
        c.auto("channels_last", False, "CPU at large sizes: no training gain measured")


def _recipe_defaults(c: _Choices) -> None:
    """The small-image recipe for ``fast_resnet`` from scratch, else the general defaults (each only when unset)."""
    fast = is_fast(c.d)
    chosen = ({"optimizer": "sgd", "scheduler": "linear", "ema": True, "augment": "translate"} if fast else
              {"optimizer": "adamw", "scheduler": "cosine", "ema": False, "augment": "standard"})
    for key, value in chosen.items():
        if c.unset(key):
            c.set(key, value, "the fast_resnet recipe" if fast else None)
    if c.unset("weight_decay"):
        sgd = c.d["optimizer"] == "sgd"
        c.set("weight_decay", 5e-4 if sgd else 0.05, "sgd: on weights only" if fast else None)
    if c.unset("tta"):
        tta = c.d["augment"] == "translate"
        c.set("tta", tta, "final numbers averaged over the training-matched views: shifts, and mirrors when hflip is on"
              if tta else None)


def erasing_for(cfg: dict, epochs: int) -> tuple[str, float, str | None]:
    """``("random_erasing", p, why)`` for a schedule of ``epochs``: on for a long fast_resnet schedule.

    A short schedule (the 10-minute budget: ~17 epochs on Fashion-MNIST) ends before the model fits its
    augmented training images; a long one reaches 99 % training accuracy while validation stalls
    (measured: the 60-minute run, 93 epochs), so it also erases a random box of each image with p = 0.5.
    """
    if is_fast(cfg) and epochs >= LONG_SCHEDULE_EPOCHS:
        return "random_erasing", LONG_SCHEDULE_ERASING, f"{epochs} epochs >= {LONG_SCHEDULE_EPOCHS}: a long schedule"
    return "random_erasing", 0.0, None


def is_fast(cfg) -> bool:
    """Whether a (resolved) config trains ``fast_resnet`` from scratch: the small-image recipe applies."""
    get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k)
    return get("model") == "fast_resnet" and get("recipe") == "scratch"


def _batch_default(c: _Choices, n_train: int) -> None:
    cuda = c.d["device"].startswith("cuda")
    px = c.d["img_size"]
    if is_fast(c.d):  # the largest power of two with >= 16 steps per epoch, in [32, 256] (512 on a GPU)
        bs = 2 ** int(np.log2(max(1, n_train // 16)))
        bs = int(min(512 if cuda else 256, max(32, bs)))
        c.auto("batch_size", min(bs, n_train), f"fast_resnet: >= 16 steps per epoch of {n_train} training images")
        return
    bs = (256 if px <= 64 else 128) if cuda else (128 if px <= 32 else 64 if px <= 96 else 32)
    c.auto("batch_size", max(8, min(bs, n_train)), f"{'GPU' if cuda else 'CPU'} at {px}px, {n_train} training images")


def _optim_defaults(c: _Choices, cfg: TrainConfig, n_train: int) -> None:
    """Batch size from the image size and device; learning rate from the recipe and the global batch."""
    if c.unset("batch_size"):
        _batch_default(c, n_train)
    if c.unset("lr"):
        gb = c.d["batch_size"] * world_size()  # DDP: batch_size is per rank; the lr follows the global batch
        if is_fast(c.d) and c.d["optimizer"] == "sgd":
            c.auto("lr", float(f"{0.2 * gb / 256:.3g}"), f"fast_resnet with Nesterov sgd: 0.2 per 256 images of global batch {gb}")
            return
        base = {"scratch": 2e-3, "linear-probe": 1e-3, "finetune": 1e-4, "two-phase": 1e-4}[cfg.recipe]
        base *= 50 if c.d["optimizer"] == "sgd" else 1
        lr = base * (gb / 128) ** 0.5 if cfg.recipe == "scratch" else base
        c.auto("lr", float(f"{lr:.3g}"), f"{cfg.recipe} with {c.d['optimizer']}, global batch {gb}")


def ema_decay_for(cfg: TrainConfig, total_steps: int) -> float:
    """The EMA decay: the config's number, or for ``schedule`` an average over the last ~10% of the phase's
    ``total_steps`` (at least 10 steps)."""
    if cfg.ema_decay != "schedule":
        return cfg.ema_decay
    return 1.0 - 1.0 / max(10.0, 0.1 * total_steps)


def whitening_batch(images: np.ndarray, rows: np.ndarray, pp: Preprocess, seed: int) -> torch.Tensor:
    """Up to :data:`WHITEN_IMAGES` training images (seeded choice), preprocessed as the model sees them."""
    from nextclass.data.batch_aug import BatchEval

    pick = np.sort(np.random.default_rng(seed).permutation(np.asarray(rows))[:WHITEN_IMAGES])
    return BatchEval(pp)(torch.from_numpy(np.ascontiguousarray(images[pick])).permute(0, 3, 1, 2))


def _epochs_default(c: _Choices, cfg: TrainConfig) -> None:
    """10 epochs, unless a time budget will plan them (scratch and finetune; see training.plan and
    :func:`settle_budget`); then random erasing, which depends on the epochs."""
    if not c.unset("epochs"):
        pass
    elif cfg.max_minutes and cfg.recipe in PLANNED_RECIPES:
        c.notes.append(f"epochs = auto until planned (--max-minutes {cfg.max_minutes:g}: measured, then planned to fit)")
    else:
        c.auto("epochs", 10, "default" + (f"; the {cfg.recipe} recipe is not planned by --max-minutes, which stops it"
                                           if cfg.max_minutes else "; --max-minutes plans epochs for a time budget"))
    if c.unset("random_erasing") and not c.unset("epochs"):
        c.set(*erasing_for(c.d, c.d["epochs"]))


def epochs_cap(cfg: TrainConfig) -> int | None:
    """The most epochs a budget's plan may choose: the epochs the user gave, or None (``auto``: no cap)."""
    return None if cfg.epochs == AUTO else cfg.epochs


def settle_hflip(cfg: TrainConfig, images: np.ndarray, rows: np.ndarray, labels: np.ndarray, seed: int = 0,
                 key: str = "", cache_dir=None) -> tuple[TrainConfig, str | None]:
    """``hflip: auto`` once the images are decoded: the mirror check of :mod:`nextclass.data.mirror` decides
    (kept under ``cache_dir`` by the decoded pixels' cache ``key`` when both are given)."""
    if cfg.hflip != AUTO:
        return cfg, None
    from nextclass.data.mirror import kept_mirror_check

    check = kept_mirror_check(images, rows, labels, seed, key, cache_dir)
    return cfg.model_copy(update={"hflip": check.hflip}), f"hflip = {check.hflip} ({check.why})"


def settle_budget(cfg: TrainConfig, epochs: int) -> tuple[TrainConfig, list[str]]:
    """A budget's plan settles what waited for it: ``epochs`` and, if ``auto``, ``random_erasing``.

    Returns the config (nothing left ``auto``) and the notes to log. Called on each (re-)plan; a re-plan
    changes the epochs but keeps the random erasing the first plan chose.
    """
    update, notes = {"epochs": int(epochs)}, []
    if cfg.random_erasing == AUTO:
        key, p, why = erasing_for(cfg.model_dump(), int(epochs))
        update[key] = p
        if why:
            notes.append(f"{key} = {p} ({why})")
    return cfg.model_copy(update=update), notes


def _process_defaults(c: _Choices) -> None:
    """Loader workers, torch threads and the augmentation level's numbers."""
    cuda = c.d["device"].startswith("cuda")
    if c.unset("workers"):
        w = min(8, max(1, (os.cpu_count() or 1) - 1)) if cuda else 0
        c.auto("workers", w, "decoded-image cache makes loading cheap; "
               + ("feed the GPU" if cuda else "on CPU the main process keeps every core for the model"))
    if c.unset("threads"):
        lw = local_world_size()  # DDP on one machine: the local processes share the cores
        c.auto("threads", max(1, (os.cpu_count() or 1) // lw), "all cores" if lw == 1 else f"cores shared by {lw} local processes")
    scale, rotation, _ = _LEVELS[c.d["augment"]]
    c.d["scale_min"] = scale if c.unset("scale_min") else c.d["scale_min"]
    c.d["rotation"] = rotation if c.unset("rotation") else c.d["rotation"]


#: Settings that read a class index per image: a multi-label run cannot use them (the message names the field).
_SINGLE_LABEL_ONLY = {
    "balance": ("sampler", "draws images by class; use balance: loss or none (a multi-label loss always weighs each "
                "label's positives by its negatives)"),
    "mixup": (None, "mixes class targets (timm Mixup); set mixup: 0 for a multi-label run"),
    "cutmix": (None, "mixes class targets (timm Mixup); set cutmix: 0 for a multi-label run"),
    "target_accuracy": (None, "abstains on a top-1 answer; a multi-label model answers per label (its thresholds)"),
    "coverage": (None, "prediction sets are for single-label models; a multi-label model answers per label"),
}


def _task_defaults(c: _Choices, source: DataSource) -> None:
    """``task`` from the data (the source already applied ``--task``); a multi-label run refuses the settings
    that need one class per image, naming the field."""
    if c.unset("task"):
        c.set("task", source.task)  # the source logged how it was detected
    if c.d["task"] != source.task:
        raise ValueError(f"task: the config says {c.d['task']} but {source.name} was read as {source.task}")
    if not source.multilabel:
        if c.d["target_precision"] is not None:
            raise ValueError("target_precision: per-label thresholds are for multi-label runs; a single-label run "
                             "abstains with target_accuracy")
        return
    for key, (bad, why) in _SINGLE_LABEL_ONLY.items():
        v = c.d[key]
        if (v == bad) if bad is not None else v not in (None, 0, 0.0, False):
            raise ValueError(f"{key}: {v!r} {why}")


def resolve(cfg: TrainConfig, source: DataSource, n_train: int, probe: DataProbe | None = None) -> Resolved:
    """Turn every ``auto`` field of ``cfg`` into a value, build the model once and derive the preprocessing.

    ``probe`` is the data probe if the caller already ran it (else it runs here, once, when a choice needs it).
    On resume the saved config is already complete: nothing changes, no file is probed, and the model is
    built the same way. Only a budget's ``epochs``/``random_erasing`` may stay ``auto`` (:func:`settle_budget`).

    Raises:
        RuntimeError: a field is left ``auto`` that nothing resolves (a bug: every ``auto`` has a rule here).

    Example:
        >>> r = resolve(make_config(data="digits"), load_source("digits"), 1259)  # doctest: +SKIP
        >>> r.cfg.img_size, r.notes[0]                                            # doctest: +SKIP
        (16, 'in_chans = 1 (all probed images are grayscale)')
    """
    c = _Choices(cfg, source, probe)
    _task_defaults(c, source)
    model, dc = _model_defaults(c, cfg, source)
    cfg = make_config(**c.d)  # model, pretrained, recipe and max_minutes are settled from here on
    pp = _preprocess(c, bool(cfg.pretrained), dc)
    _recipe_defaults(c)
    _device_defaults(c, model)
    _optim_defaults(c, cfg, n_train)
    _epochs_default(c, cfg)
    _process_defaults(c)
    if c.unset("name"):
        c.set("name", run_name(make_config(**c.d), source), "<model>-<data>")
    out = make_config(**c.d)
    left = set(unresolved(out)) - {"epochs", "random_erasing", "hflip"}  # hflip: settle_hflip, after decoding
    waiting = set(unresolved(out)) - {"hflip"}  # what only a budget's plan settles
    if left or (waiting and not (out.max_minutes and out.recipe in PLANNED_RECIPES)):
        raise RuntimeError(f"resolve left {sorted(unresolved(out))} as auto: every auto field needs a rule here")
    return Resolved(out, pp, model, c.notes)


def augment_for(cfg: TrainConfig) -> Augment | None:
    """The training augmentation the config asks for (None: no augmentation at all)."""
    erasing = 0.0 if cfg.random_erasing == AUTO else cfg.random_erasing  # auto: a budget not planned yet
    if cfg.augment == "none" and cfg.auto_augment == "none" and not erasing:
        return None
    strength = _LEVELS[cfg.augment][2]
    shift = translate_pixels(cfg.img_size or 32) if cfg.augment == "translate" else 0
    return Augment(scale=(cfg.scale_min, 1.0), hflip=cfg.hflip and cfg.augment != "none", vflip=cfg.vflip,
                   translate=shift,
                   rotation=cfg.rotation, brightness=strength, contrast=strength, auto=cfg.auto_augment,
                   erasing=erasing)


def amp_dtype_for(amp: bool | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``: bf16 where supported, fp16 on older GPUs, None when off."""
    if not amp:
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16
