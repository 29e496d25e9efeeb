"""``nextclass export RUN --format onnx [--int8]``."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Use")
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
        from rich.table import Table

        from .. import export as _export
        from ..cli import run_guarded

        info = run_guarded(_export, str(run), format=fmt, int8=int8, opset=opset, exporter=exporter,
                           parity_images=parity_images, calib_images=calib_images)
        par = info["parity"]
        t = Table(title=f"ONNX export ({info['exporter']} exporter, opset {info['opset']})")
        for c in ("file", "MB", "images", "top-1 agree", "max |Δp|", "val acc", "img/s @32"):
            t.add_column(c, justify="left" if c == "file" else "right")
        acc = par.get("accuracy")
        t.add_row("pytorch", "", str(par["n"]), "", "", _f(par.get("accuracy_reference")), "")
        q = info.get("int8") or {}
        t.add_row(info["file"], f"{info['bytes'] / 1e6:.2f}", str(par["n"]), f"{par['top1_agreement']:.4f}",
                  f"{par['max_abs_prob_diff']:.2e}", _f(acc), str(q.get("fp32_img_per_s", "")))
        if q:
            t.add_row(q["file"], f"{q['bytes'] / 1e6:.2f}", str(q["images"]), f"{q['top1_agreement']:.4f}",
                      f"{q['max_abs_prob_diff']:.2e}", _f(q.get("accuracy")), str(q["int8_img_per_s"]))
        Console(width=max(100, Console().width)).print(t)
        if par["images"].startswith("random"):
            Console(stderr=True).print("[yellow]NOTE[/]: no run data found: parity measured on random inputs")


def _f(x) -> str:
    return "" if x is None else f"{x:.4f}"
