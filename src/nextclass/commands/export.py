"""``nextclass export RUN --format onnx [--int8]``."""

from __future__ import annotations

from pathlib import Path

import typer

from nextclass.commands._common import run_guarded

__all__ = ["export", "register"]


def export(
    run: Path = typer.Argument(..., help="Run directory or bundle directory."),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx (the only format for now)."),
    int8: bool = typer.Option(False, "--int8", help="Also write model.int8.onnx (static quantisation, "
                              "calibrated on the run's training images) and compare it with fp32."),
    opset: int = typer.Option(18, help="ONNX opset (the legacy exporter caps it at 17)."),
    exporter: str = typer.Option("auto", help="auto (dynamo, legacy on failure) | dynamo | legacy."),
    parity_images: int = typer.Option(256, help="Validation images for the parity / int8 accuracy check."),
    calib_images: int = typer.Option(256, help="Training images to calibrate int8 ranges."),
):
    """ONNX model beside the bundle, checked against PyTorch on the run's validation images."""
    from rich.console import Console

    from nextclass import export as _export
    from nextclass.report.console import export_table

    info = run_guarded(_export, str(run), format=fmt, int8=int8, opset=opset, exporter=exporter,
                       parity_images=parity_images, calib_images=calib_images)
    Console(width=max(100, Console().width)).print(export_table(info))
    if info["parity"]["images"].startswith("random"):
        Console(stderr=True).print("[yellow]NOTE[/]: no run data found: parity measured on random inputs")


def register(app: typer.Typer) -> None:
    """Attach ``export`` to the app."""
    app.command(rich_help_panel="Use")(export)
