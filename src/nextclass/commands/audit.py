"""``nextclass audit``: what is in the data before training (and a cleaned manifest with ``--fix``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nextclass.commands._common import run_guarded

__all__ = ["audit", "register"]


def audit(
    data: str = typer.Argument(..., help="Folder, CSV manifest (path,label[,split]), 'digits' or 'fashion-mnist[:DIR]'."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the JSON report here (default: none)."),
    fix: Optional[Path] = typer.Option(None, help="Write a cleaned manifest (path,label,split): unreadable files dropped, "
                                       "val/test copies of train (or val) images dropped. Your files are not touched."),
    split: Optional[str] = typer.Option(None, help="Ratios for data without splits (default 70/20/10, as train), or 'none'."),
    seed: int = typer.Option(0, help="Split seed for data without (complete) splits (train's default is 0)."),
    near_threshold: int = typer.Option(8, help="phash bits (of 64) for a near-duplicate candidate."),
    pixel_tolerance: float = typer.Option(4.0, help="Mean grey-level difference (16x16 thumbnails) confirming a candidate."),
    workers: Optional[int] = typer.Option(None, help="Hashing processes (default: all cores)."),
    cache_dir: Optional[str] = typer.Option(None, help="Cache root: built-in datasets and the audit fingerprints "
                                            "(reused while the files are unchanged)."),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON report to stdout instead of the summary."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Audit a dataset: counts, unreadable files, exact/near duplicates, train/val/test leakage, label conflicts.

    Examples:

      nextclass audit photos/ -o audit.json

      nextclass audit photos/ --fix photos-clean.csv   then   nextclass train photos-clean.csv
    """
    from nextclass.data.audit import audit as _audit
    from nextclass.report.console import json_text

    rep = run_guarded(_audit, data, output=output, splits=split, near_threshold=near_threshold,
                      pixel_tolerance=pixel_tolerance, fix=fix, progress=not quiet, cache_dir=cache_dir,
                      seed=seed, workers=workers)
    if json_out:
        typer.echo(json_text(rep))
    else:
        _print_summary(rep, output, fix)


def _print_summary(rep: dict, output: Path | None, fix: Path | None) -> None:
    """The Rich summary, the time taken and where the report and the cleaned manifest went."""
    from rich.console import Console

    from nextclass.report.console import audit_summary_lines

    con = Console()
    for line in audit_summary_lines(rep):
        con.print(line)
    con.print(f"[dim]{rep['seconds']}s[/]" + (f"; report: {output}" if output else ""))
    if fix is not None:
        f = rep["fix"]
        con.print(f"cleaned manifest: {f['path']} ({f['rows']} rows, {f['dropped']} dropped) - "
                  f"train on it with `nextclass train {f['path']}`")


def register(app: typer.Typer) -> None:
    """Attach ``audit`` to the app."""
    app.command(rich_help_panel="Start here")(audit)
