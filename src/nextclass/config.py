"""Typed training configuration.

One pydantic model, validated once: unknown keys are rejected and every error names its field.
``None`` means "choose for me"; :func:`nextclass.training.defaults.resolve` fills each such field from the
data, the model and the machine, logs what it chose, and the *resolved* config is what the run
saves as ``config.yaml`` (so the saved file never lies about what ran).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["TrainConfig", "ConfigError", "load_config", "save_config", "make_config", "coerce_config",
           "read_run_config"]


SCRATCH_MODELS = ("auto", "simple_cnn", "fast_resnet")  # nextclass's own models: no pretrained weights exist


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field(s)."""


class TrainConfig(BaseModel):
    """Everything a training run needs. Field comments are the documentation (``--help`` repeats them)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- data -------------------------------------------------------------------------------
    data: str = Field(..., description="folder, CSV manifest, 'digits', 'fashion-mnist[:DIR]', 'hf:DIR' (a "
                      "save_to_disk folder or parquet files) or 'hf:OWNER/NAME[:CONFIG]' (needs internet); "
                      "'?image=COL&label=COL' picks the columns of an hf: dataset")
    split: tuple[float, float, float] = Field((0.7, 0.2, 0.1), description="train/val/test fractions when the data has no splits")
    seed: int = Field(0, description="seed for the split, init, data order and augmentation")
    cache_dir: Optional[str] = Field(None, description="decoded-image and feature cache (default: user cache)")
    download: bool = Field(False, description="allow downloading a built-in dataset")
    # --- model ------------------------------------------------------------------------------
    model: str = Field("auto", description="timm model name, simple_cnn or fast_resnet; auto: fast_resnet for "
                       "images up to 64 px trained from scratch, else simple_cnn")
    pretrained: Optional[str] = Field(None, description="none, timm hub tag, local weights file or weights package")
    recipe: Literal["scratch", "linear-probe", "finetune", "two-phase"] = "scratch"
    head: Literal["linear", "mlp", "attention"] = Field("linear", description="classifier head on the backbone")
    img_size: Optional[int] = Field(None, ge=8, le=1024, description="model input (crop) size; None: from the data or the model")
    in_chans: Optional[Literal[1, 3]] = Field(None, description="1 for grayscale, 3 for RGB; None: from the data")
    drop_rate: Optional[float] = Field(None, ge=0, lt=1, description="dropout before the classifier")
    drop_path: Optional[float] = Field(None, ge=0, lt=1, description="stochastic depth rate (timm models that support it)")
    # --- optimisation -----------------------------------------------------------------------
    epochs: Optional[int] = Field(None, ge=1, le=10000, description="None: 10, or planned to fit max_minutes")
    batch_size: Optional[int] = Field(None, ge=1, le=65536, description="None: chosen from the image size")
    optimizer: Optional[Literal["adamw", "adam", "sgd"]] = Field(None, description="None: sgd (Nesterov) for "
                                                                  "fast_resnet, else adamw")
    lr: Optional[float] = Field(None, gt=0, lt=10, description="peak learning rate; None: by recipe and batch size")
    weight_decay: Optional[float] = Field(None, ge=0, lt=1, description="on weights, not biases/norms; "
                                          "None: 5e-4 with sgd, 0.05 with adamw/adam")
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Optional[Literal["cosine", "linear", "plateau", "onecycle", "none"]] = Field(
        None, description="None: linear (20% warm-up from 0.2, then down to the floor) for fast_resnet, else cosine")
    warmup_epochs: float = Field(1.0, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="cosine floor as a fraction of lr")
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    clip_grad: Optional[float] = Field(None, gt=0, description="max gradient norm")
    accumulate: int = Field(1, ge=1, description="gradient accumulation steps")
    patience: Optional[int] = Field(None, ge=1, description="early stopping: epochs without improvement")
    monitor: Literal["val_acc", "val_loss"] = "val_acc"
    ema: Optional[bool] = Field(None, description="evaluate an exponential moving average of the weights; "
                                "None: on for fast_resnet")
    ema_decay: Optional[float] = Field(None, gt=0, lt=1, description="None: averages the last ~10% of the steps")
    balance: Literal["none", "sampler", "loss"] = Field("none", description="class-balanced sampling or class-weighted loss")
    # --- augmentation -----------------------------------------------------------------------
    augment: Optional[Literal["none", "light", "standard", "strong", "translate"]] = Field(
        None, description="translate: flips + shifts of side/16 px (the small-image recipe); None: translate for "
        "fast_resnet, else standard")
    hflip: bool = True
    vflip: bool = False
    rotation: Optional[float] = Field(None, ge=0, le=180, description="max rotation degrees; None: by augment level")
    scale_min: Optional[float] = Field(None, gt=0, le=1, description="random-resized-crop min area; None: by augment level")
    auto_augment: Literal["none", "randaugment", "trivialaugment"] = "none"
    random_erasing: Optional[float] = Field(
        None, ge=0, le=1, description="probability of erasing a random box (cutout); None: 0.5 for a long fast_resnet "
        "schedule (>= 40 epochs, where the model starts to memorise its training images), else 0")
    tta: Optional[bool] = Field(None, description="final val/test numbers averaged over the test-time views that "
                                "match the augmentation; None: on for augment translate")
    mixup: float = Field(0.0, ge=0, description="mixup alpha (0 = off)")
    cutmix: float = Field(0.0, ge=0, description="cutmix alpha (0 = off)")
    # --- transfer learning ------------------------------------------------------------------
    probe_epochs: Optional[int] = Field(None, ge=1, description="two-phase: epochs of the head-only phase")
    tta_views: int = Field(0, ge=0, description="linear-probe: extra augmented views embedded per image")
    layer_decay: Optional[float] = Field(None, gt=0, le=1, description="finetune: layer-wise lr decay")
    # --- machine ----------------------------------------------------------------------------
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N, mps")
    amp: Optional[bool] = Field(None, description="mixed precision; None: on for CUDA only")
    channels_last: Optional[bool] = Field(None, description="NHWC memory format; None: on for CUDA")
    compile: bool = Field(False, description="torch.compile the model (costs 10-50 s up front)")
    workers: Optional[int] = Field(None, ge=0, description="data loader processes; None: by core count")
    threads: Optional[int] = Field(None, ge=1, description="torch intra-op threads; None: all cores")
    max_minutes: Optional[float] = Field(None, gt=0, description="wall-time budget of the whole job (data, training, "
                                         "evaluation, report): epochs are planned to fit it (epochs, if given, caps them)")
    # --- output -----------------------------------------------------------------------------
    output: str = Field("runs", description="parent folder of run directories")
    name: Optional[str] = Field(None, description="run directory name; None: <model>-<data>[-N]")
    evaluate_test: bool = Field(True, description="evaluate on the test split after training")
    report: bool = Field(True, description="write plots and report.html into the run")
    robustness: bool = Field(True, description="measure accuracy under blur/noise/JPEG/brightness/contrast on the "
                             "final split (cached by weights + images + seed; off in tune trials)")
    target_accuracy: Optional[float] = Field(None, gt=0, le=1, description="abstain below the confidence threshold "
                                             "chosen on val for this accuracy of the accepted predictions; None: never")
    neighbor_index: int = Field(10_000, ge=0, description="most training images kept in the bundle's nearest-neighbour "
                                "index (a seeded per-class subsample above it); 0: no index")
    track: Literal["none", "mlflow", "tensorboard"] = "none"
    tracking_uri: Optional[str] = Field(None, description="MLflow tracking URI; None: MLflow's own default "
                                        "($MLFLOW_TRACKING_URI, else a sqlite file in the run's parent folder)")

    @field_validator("split", mode="before")
    @classmethod
    def _split(cls, v):
        if isinstance(v, str):
            from nextclass.utils import parse_ratios

            try:
                return parse_ratios(v)
            except ValueError as e:
                raise ValueError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _check(self):
        if abs(sum(self.split) - 1.0) > 1e-6 and sum(self.split) > 0:
            s = sum(self.split)
            object.__setattr__(self, "split", tuple(x / s for x in self.split))
        if self.split[0] <= 0:
            raise ValueError("split: the train fraction must be > 0")
        if self.recipe in ("linear-probe", "finetune", "two-phase") and self.model in SCRATCH_MODELS and not self.pretrained:
            raise ValueError(f"recipe: {self.recipe!r} needs a pretrained backbone (--pretrained); use --recipe scratch")
        return self

    def to_yaml(self) -> str:
        d = self.model_dump(mode="json")
        d["split"] = list(d["split"])
        return yaml.safe_dump(d, sort_keys=False)


def _format(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "config"
        if e["type"] == "extra_forbidden":
            lines.append(f"{loc}: unknown field (allowed: see `nextclass train --help`)")
        else:
            lines.append(f"{loc}: {e['msg']} (got {e.get('input')!r})")
    return "invalid config: " + "; ".join(lines)


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



def read_run_config(run_dir: str | Path) -> TrainConfig:
    """The resolved config a run saved (``<run>/config.yaml``): the one way to read it back.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run directory.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a run directory (no config.yaml)")
    return load_config(path)
