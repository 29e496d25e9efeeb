"""``nextclass report``: (re)build a run's self-contained report.html."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Evaluate")
    def report(
        run: Path = typer.Argument(..., help="Run directory."),
        cam_images: int = typer.Option(8, help="Test images with a Grad-CAM overlay (half right, half wrong)."),
    ):
        """Plots, tables, Grad-CAM, size and speed in one self-contained RUN/report.html."""
        from ..cli import run_guarded
        from ..report.html import build_report

        out = run_guarded(build_report, run, cam_images=cam_images)
        typer.echo(str(out))
