"""``nextclass train`` and ``nextclass demo``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from nextclass.commands._common import parse_sets, run_guarded
from nextclass.config import field_help

__all__ = ["demo", "register", "train", "DATA_HELP", "CONFIG_FILE_ONLY", "CLI_ONLY", "flag_fields"]

DATA_HELP = field_help("data")

#: TrainConfig fields without a ``train`` flag: set them in a ``--config`` file or with ``--set FIELD=VALUE``.
#: Every other field has a flag whose help and default come from the field (tests/test_cli_config.py checks both).
CONFIG_FILE_ONLY = (
    "in_chans", "drop_rate", "drop_path", "momentum", "warmup_epochs", "min_lr_ratio", "clip_grad", "accumulate",
    "monitor", "ema_decay", "balance", "vflip", "rotation", "scale_min", "auto_augment", "random_erasing", "mixup",
    "cutmix", "probe_epochs", "tta_views", "layer_decay", "amp", "channels_last", "evaluate_test", "report",
    "robustness", "neighbor_index", "target_precision",
)
NPROC_HELP = ("Local processes for DDP (gloo on CPU, NCCL on GPU); --batch-size is per process. Or launch with "
              "`torchrun -m nextclass train`.")
#: ``train`` parameters that are not config fields.
CLI_ONLY = ("config", "resume", "set_", "quiet", "nproc")


def _flag(field: str, *decls: str, **kw):
    """A ``train`` option for config field ``field``: help and shown default from the field; ``None`` = not given
    (the ``--config`` file's value, else the field's default)."""
    return typer.Option(None, *decls, help=field_help(field), show_default=False, **kw)


def flag_fields() -> dict[str, str]:
    """``train`` parameter name -> the config field it sets (``compile_`` -> ``compile``)."""
    import inspect

    return {p: p.rstrip("_") for p in inspect.signature(train).parameters if p not in CLI_ONLY}


def train(
    data: Optional[str] = typer.Argument(None, help=DATA_HELP, show_default=False),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config; flags override it."),
    model: Optional[str] = _flag("model"),
    pretrained: Optional[str] = _flag("pretrained"),
    recipe: Optional[str] = _flag("recipe"),
    head: Optional[str] = _flag("head"),
    img_size: Optional[int] = _flag("img_size"),
    epochs: Optional[int] = _flag("epochs", "--epochs", "-e"),
    max_minutes: Optional[float] = _flag("max_minutes"),
    batch_size: Optional[int] = _flag("batch_size", "--batch-size", "-b"),
    lr: Optional[float] = _flag("lr"),
    optimizer: Optional[str] = _flag("optimizer"),
    weight_decay: Optional[float] = _flag("weight_decay"),
    scheduler: Optional[str] = _flag("scheduler"),
    label_smoothing: Optional[float] = _flag("label_smoothing"),
    patience: Optional[int] = _flag("patience"),
    ema: Optional[bool] = _flag("ema", "--ema/--no-ema"),
    augment: Optional[str] = _flag("augment"),
    hflip: Optional[bool] = _flag("hflip", "--hflip/--no-hflip"),
    tta: Optional[bool] = _flag("tta", "--tta/--no-tta"),
    split: Optional[str] = _flag("split"),
    seed: Optional[int] = _flag("seed"),
    target_accuracy: Optional[float] = _flag("target_accuracy"),
    coverage: Optional[float] = _flag("coverage"),
    neighbor_thumbnails: Optional[bool] = _flag("neighbor_thumbnails", "--neighbor-thumbnails/--no-neighbor-thumbnails"),
    device: Optional[str] = _flag("device"),
    workers: Optional[int] = _flag("workers"),
    threads: Optional[int] = _flag("threads"),
    compile_: Optional[bool] = _flag("compile", "--compile/--no-compile"),
    cache_dir: Optional[str] = _flag("cache_dir"),
    download: Optional[bool] = _flag("download", "--download/--no-download"),
    corrections: Optional[str] = _flag("corrections"),
    task: Optional[str] = _flag("task"),
    output: Optional[str] = _flag("output", "--output", "-o"),
    name: Optional[str] = _flag("name"),
    track: Optional[str] = _flag("track"),
    tracking_uri: Optional[str] = _flag("tracking_uri", envvar="MLFLOW_TRACKING_URI"),
    resume: Optional[Path] = typer.Option(None, help="Resume a killed or stopped run directory."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Any config field: --set mixup=0.2 (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    nproc: int = typer.Option(1, "--nproc", min=1, help=NPROC_HELP),
):
    """Train a classifier: data -> splits -> decode once -> train -> evaluate -> bundle -> report. A flag left out
    takes the --config value, else the default; "auto" is chosen for you and logged.

    Examples:

      nextclass train photos/ --model resnet18 --pretrained timm --recipe two-phase

      nextclass train digits --epochs 20 --no-hflip

      nextclass train hf:zh-plus/tiny-imagenet --epochs 10   (hf:DIR reads a save_to_disk folder offline)

      nextclass train photos/ --corrections runs/resnet18-photos/corrections.jsonl   (review decisions applied)

      nextclass train --resume runs/resnet18-photos
    """
    _run_train(config, resume, _given(locals()), set_, quiet=quiet, nproc=nproc)


def _given(params: dict) -> dict:
    """Config field -> the ``train`` parameter's value (None: not given)."""
    return {field: params[param] for param, field in flag_fields().items()}


def _run_train(config: Path | None, resume: Path | None, fields: dict, sets: list[str] | None, *,
               quiet: bool, nproc: int) -> None:
    """Resume ``resume``, or train ``config`` with the flags that were given (``None`` = not given) and ``--set``s;
    then say the run directory."""
    from nextclass import train as _train
    from nextclass.dist import is_main

    if resume is not None:
        run = run_guarded(_train, resume=str(resume), progress=not quiet, nproc=nproc)
    else:
        over = {**fields, **parse_sets(sets)}
        over = {k: v for k, v in over.items() if v is not None}
        if config is None and "data" not in over:
            raise typer.BadParameter("give DATA (or a --config that names it)")
        run = run_guarded(_train, str(config) if config else None, progress=not quiet, nproc=nproc, **over)
    if is_main():  # under torchrun every rank returns; rank 0 speaks
        typer.echo(f"run: {run}")


def demo(
    output: str = typer.Option("runs", "--output", "-o"),
    epochs: int = typer.Option(15, help="Epochs on digits (under a minute on 2 cores)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Train on the bundled digits set (no download) with what `nextclass train digits` would choose, evaluate on
    its test split, write the run."""
    from nextclass import train as _train
    from nextclass.rundir import RunDir

    # only the epochs and where the run goes: the model and its recipe are the train defaults (no demo-only recipe)
    run = run_guarded(_train, {"data": "digits", "epochs": epochs, "output": output,
                               "name": "demo-digits"}, progress=not quiet)
    rd = RunDir(run)
    m = rd.read_metrics()["test"]
    ci = m.get("accuracy_ci")
    typer.echo(f"\ndemo done: test accuracy {m['accuracy']:.4f}" + (f" (95% CI {ci[0]:.4f}-{ci[1]:.4f})" if ci else "")
               + f" on {m['n']} held-out digits")
    typer.echo(f"run directory: {run}")
    for f in (rd.metrics, rd.predictions("test"), rd.history, rd.report, rd.bundle / "model.json"):
        if f.exists():
            typer.echo(f"  {f}")
    typer.echo(f"next: nextclass predict {run} some_image.png")


def register(app: typer.Typer) -> None:
    """Attach ``train`` and ``demo`` to the app."""
    app.command(rich_help_panel="Train")(train)
    app.command(rich_help_panel="Start here")(demo)
