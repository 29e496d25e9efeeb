"""``nextclass explain``: Grad-CAM overlays for given images."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from nextclass.commands._common import input_files, run_guarded

__all__ = ["explain", "register"]


def explain(
    model: str = typer.Argument(..., help="Run dir, bundle dir, or model store NAME[@vN]."),
    images: List[str] = typer.Argument(..., help="Image files, folders (recursive) or globs."),
    output: Path = typer.Option(Path("explain"), "--output", "-o", help="Folder for the <name>_cam.png overlays."),
    class_name: Optional[str] = typer.Option(None, "--class", help="Explain this class instead of the predicted one."),
    size: int = typer.Option(224, help="Overlays are scaled up to at least this many pixels."),
    feature_maps: bool = typer.Option(False, "--feature-maps", help="Instead of Grad-CAM: the activation maps of "
                                      "each backbone stage as an image grid (<name>_features.png)."),
):
    """Grad-CAM: where the model looked, as a heat-map over each image (written as PNGs); or --feature-maps."""
    from rich.console import Console

    from nextclass import load
    from nextclass.report.cam import explain_files
    from nextclass.report.console import explain_table

    files = input_files(images)
    pred = run_guarded(load, model)
    if feature_maps:
        from nextclass.report.feature_maps import feature_map_files

        rows = run_guarded(feature_map_files, pred, files, output)
    else:
        rows = run_guarded(explain_files, pred, files, output, class_name=class_name, size=size)
    Console(width=200).print(explain_table(rows))
    if not any(not r.get("error") for r in rows):
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Attach ``explain`` to the app."""
    app.command(rich_help_panel="Use")(explain)
