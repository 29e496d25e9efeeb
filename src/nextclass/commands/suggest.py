"""``nextclass suggest``: which unlabelled images to label next, ranked for a finished run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nextclass.commands._common import run_guarded

__all__ = ["suggest", "register"]


def suggest(
    run: str = typer.Argument(..., help="A finished run directory (its bundle, config.yaml and split.csv are used)."),
    unlabeled: str = typer.Argument(..., help="A folder of unlabelled images (recursive), or a CSV with a 'path' column."),
    n: int = typer.Option(100, "-n", "--n", help="How many images to suggest."),
    output: Optional[Path] = typer.Option(Path("next.csv"), "--output", "-o",
                                          help="CSV: rank, path, predicted, probability, margin, score, reason, "
                                               "unfamiliar."),
    strategy: str = typer.Option("suggest", help="suggest (uncertainty x diversity) | uncertainty | random."),
    seed: int = typer.Option(0, help="Seed of the weighted draws."),
    skip_unfamiliar: bool = typer.Option(False, "--skip-unfamiliar", help=(
        "Leave out images farther from every training image than the bundle's 'unfamiliar' distance (noise, blank "
        "or off-topic images; the same test predict flags with). Without it such picks are kept and marked.")),
    cache_dir: Optional[str] = typer.Option(None, help="Cache root (decoded images)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON instead of the table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Rank unlabelled images by how much labelling them should help: uncertain under the run's calibrated
    probabilities, spread over its embedding space, and not near-duplicates of images it was trained on.

    Examples:

      nextclass suggest runs/simple_cnn-photos new-photos/ -n 100 -o next.csv

      nextclass suggest runs/simple_cnn-photos pool.csv -n 50 --strategy uncertainty

      nextclass suggest runs/simple_cnn-photos new-photos/ --skip-unfamiliar   (no noise or blank images)

      label the images in next.csv, add them to the data, then train again
    """
    import nextclass
    from nextclass.report.console import json_text

    res = run_guarded(nextclass.suggest, run, unlabeled, n=n, output=output, strategy=strategy, seed=seed,
                      cache_dir=cache_dir, progress=not quiet, skip_unfamiliar=skip_unfamiliar)
    if json_out:
        typer.echo(json_text(res))
        return
    from nextclass.commands._common import wide_console
    from nextclass.report.console import suggest_lines

    con = wide_console()  # paths are never cut at 80 columns
    for line in suggest_lines(res):
        con.print(line)


def register(app: typer.Typer) -> None:
    """Attach ``suggest`` to the app."""
    app.command(rich_help_panel="Start here")(suggest)
