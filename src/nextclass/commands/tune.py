"""``nextclass tune``: Optuna hyper-parameter search over training runs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from nextclass.commands._common import parse_sets, run_guarded

__all__ = ["register", "tune"]


def tune(
    data: Optional[str] = typer.Argument(None, help="Dataset (as for `train`), or omit and give --config."),
    trials: int = typer.Option(20, "--trials", "-n", min=1, help="Total trials wanted in the study (resumes)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Base YAML config; fields set there are not searched."),
    model: Optional[str] = typer.Option(None, help="timm model name or simple_cnn."),
    pretrained: Optional[str] = typer.Option(None, help="Pretrained weights (enables the transfer recipes in the search)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", "-e", help="Epochs per trial."),
    output: str = typer.Option("tune", "--output", "-o", help="Parent folder of the study folder."),
    study_name: Optional[str] = typer.Option(None, help="Study name (default <model>-<data>)."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default sqlite in the study folder)."),
    timeout: Optional[float] = typer.Option(None, help="Stop starting trials after this many seconds."),
    space: Optional[List[str]] = typer.Option(None, "--space", help="Override a range: lr=1e-4:1e-2, "
                                              "batch_size=16,32, augment=light (repeatable)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Fix any config field: --set img_size=28 (repeatable)."),
    seed: int = typer.Option(0, help="Sampler seed."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Search lr, weight decay, batch size, dropout, augmentation, label smoothing and recipe with Optuna.

    TPE sampling, median pruning on per-epoch validation accuracy, SQLite storage (re-run to resume).
    Writes trials.csv, trials.png, summary.json and best.yaml (train it with `nextclass train --config`).

    Example:

      nextclass tune photos/ --model resnet18 --epochs 5 --trials 20
    """
    from nextclass.tuning import parse_space
    from nextclass.tuning import tune as _tune

    over = dict(model=model, pretrained=pretrained, epochs=epochs)
    over.update(parse_sets(set_))
    over = {k: v for k, v in over.items() if v is not None}
    if data is None and config is None:
        raise typer.BadParameter("give DATA (or a --config that names it)")
    if data is not None:
        over["data"] = data
    sp = run_guarded(parse_space, space)
    res = run_guarded(_tune, str(config) if config else None, trials=trials, storage=storage, study_name=study_name,
                      output=output, space=sp, timeout=timeout, seed=seed, progress=not quiet, **over)
    _print_result(res)


def _print_result(res) -> None:
    """The trials table, the best value and parameters, the files written and the next command."""
    from rich.console import Console

    from nextclass.tuning import trials_table

    Console(width=160).print(trials_table(res.study))
    typer.echo(f"best: val accuracy {res.value:.4f} with {res.params}")
    for f in ("best.yaml", "trials.csv", "trials.png", "summary.json"):
        typer.echo(f"  {res.output / f}")
    typer.echo(f"next: nextclass train --config {res.output / 'best.yaml'}")


def register(app: typer.Typer) -> None:
    """Attach ``tune`` to the app."""
    app.command(rich_help_panel="Train")(tune)
