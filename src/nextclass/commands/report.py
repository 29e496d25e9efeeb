"""``nextclass report``: (re)build a run's self-contained report.html."""

from __future__ import annotations

from pathlib import Path

import typer

from nextclass.commands._common import run_guarded

__all__ = ["register", "report"]


def report(
    run: Path = typer.Argument(..., help="Run directory."),
    cam_images: int = typer.Option(8, help="Test images with a Grad-CAM overlay (half right, half wrong)."),
):
    """Plots, tables, Grad-CAM, size and speed in one self-contained RUN/report.html."""
    from nextclass.report.html import build_report

    out = run_guarded(build_report, run, cam_images=cam_images)
    typer.echo(str(out))


def register(app: typer.Typer) -> None:
    """Attach ``report`` to the app."""
    app.command(rich_help_panel="Evaluate")(report)
