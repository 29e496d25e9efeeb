"""``nextclass compare RUN_A RUN_B``: is B better than A on the same test images, or is it noise?"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nextclass.commands._common import run_guarded, wide_console

__all__ = ["compare", "register"]


def compare(
    run_a: Path = typer.Argument(..., help="The baseline run (A), e.g. trained on the data as it was."),
    run_b: Path = typer.Argument(..., help="The run to judge (B), e.g. trained with --corrections."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write the page here. Default: beside RUN_B, "
                                        "RUN_B/compare-<RUN_A name>.html."),
    no_html: bool = typer.Option(False, "--no-html", help="No page: the terminal only."),
    split: str = typer.Option("test", help="Which saved predictions to pair: test (predictions.csv) or val."),
    n_boot: int = typer.Option(2000, "--n-boot", min=100, help="Paired bootstrap resamples for the intervals."),
    seed: int = typer.Option(0, help="Bootstrap seed."),
    json_out: bool = typer.Option(False, "--json", help="Print the whole comparison as JSON instead of the table."),
):
    """Compare two runs image by image on the same test images: accuracy and macro-F1 differences (per class too)
    with paired bootstrap intervals, an exact McNemar test on the images only one run gets right, and the images
    that flipped right->wrong and wrong->right (thumbnails in the HTML page). The last line answers "is B better
    than A, or is it noise?". Refused, naming the difference, when the runs were tested on other images (another
    dataset, split seed or fractions, classes, or changed files); a test image that B's --corrections dropped is
    left out of both, and a test label they changed is scored with B's label for both.

    Examples:

      nextclass compare runs/fast_resnet-photos runs/fast_resnet-photos-2

      nextclass compare runs/noisy runs/reviewed --html compare.html --n-boot 5000
    """
    import nextclass
    from nextclass.report.compare import compare_lines, compare_table
    from nextclass.report.console import json_text

    c = run_guarded(nextclass.compare, str(run_a), str(run_b), html=False if no_html else html, split=split,
                    n_boot=n_boot, seed=seed)
    if json_out:
        typer.echo(json_text(c))
        return
    con = wide_console()
    con.print(compare_table(c))
    for line in compare_lines(c):
        con.print(line)
    if c.get("html"):
        con.print(f"page: {c['html']}")
    con.print(f"[bold]{c['verdict']}[/]")


def register(app: typer.Typer) -> None:
    """Attach ``compare`` to the app."""
    app.command(rich_help_panel="Evaluate")(compare)
