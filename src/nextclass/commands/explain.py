"""``nextclass explain``: Grad-CAM overlays for given images."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Use")
    def explain(
        model: str = typer.Argument(..., help="Run dir, bundle dir, or model store NAME[@vN]."),
        images: List[str] = typer.Argument(..., help="Image files, folders (recursive) or globs."),
        output: Path = typer.Option(Path("explain"), "--output", "-o", help="Folder for the <name>_cam.png overlays."),
        class_name: Optional[str] = typer.Option(None, "--class", help="Explain this class instead of the predicted one."),
        size: int = typer.Option(224, help="Overlays are scaled up to at least this many pixels."),
    ):
        """Grad-CAM: where the model looked, as a heat-map over each image (written as PNGs)."""
        from rich.console import Console
        from rich.table import Table

        from .. import load
        from ..cli import run_guarded
        from ..report.cam import explain_files
        from .evaluate import expand_paths

        err = Console(stderr=True)
        files, missing = expand_paths(images)
        for m in missing:
            err.print(f"[yellow]no such file or pattern:[/] {m}")
        if not files:
            err.print("[red]error:[/] no input files")
            raise typer.Exit(2)
        pred = run_guarded(load, model)
        rows = run_guarded(explain_files, pred, files, output, class_name=class_name, size=size)
        t = Table()
        for c in ("image", "prediction", "prob", "explained", "overlay"):
            t.add_column(c)
        for r in rows:
            if r.get("error"):
                t.add_row(r["source"], "[red]unreadable", "", "", r["error"])
            else:
                t.add_row(r["source"], r["label"], f"{r['probability']:.3f}", r["explained"], r["output"])
        Console(width=200).print(t)
        if not any(not r.get("error") for r in rows):
            raise typer.Exit(2)
