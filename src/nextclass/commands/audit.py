"""``nextclass audit``: what is in the data before training (and a cleaned manifest with ``--fix``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

__all__ = ["register", "print_summary"]


def print_summary(rep: dict, console=None, max_groups: int = 8) -> None:
    """Readable Rich summary of an audit report (counts, problems, the first duplicate groups)."""
    from rich.console import Console
    from rich.table import Table

    con = console or Console()
    s, cls = rep["summary"], rep["classes"]
    con.print(f"[bold]{rep['data']}[/]: {rep['n_images']} images ({rep['n_readable']} readable), "
              f"{len(cls['names'])} classes - {rep['splits']['note']}")
    t = Table(title="images per class and split", show_edge=False)
    t.add_column("class")
    for sp in cls["counts"]:
        t.add_column(sp, justify="right")
    t.add_column("total", justify="right")
    for c in cls["names"][:30]:
        few = c in cls["few_images"]
        t.add_row(f"[red]{c}[/]" if few else c, *[str(d[c]) for d in cls["counts"].values()], str(cls["totals"][c]))
    if len(cls["names"]) > 30:
        t.add_row(f"... {len(cls['names']) - 30} more", *[""] * (len(cls["counts"]) + 1))
    con.print(t)
    if rep.get("images"):
        im = rep["images"]
        con.print(f"sizes: {im['distinct_sizes']} distinct, shorter side {im['min_side']}-{im['max_side']} px "
                  f"(median {im['median_side']}); modes {im['modes']}; formats {im['formats']}")
    ratio = cls["imbalance_ratio"]
    con.print(f"imbalance (largest/smallest class{' in train' if 'train' in cls['counts'] else ''}): "
              + (f"{ratio:.2f}" if ratio else "[red]a class is empty[/]"))
    p = Table(title="problems", show_edge=False)
    p.add_column("check")
    p.add_column("found", justify="right")
    p.add_row("unreadable files", _n(s["unreadable"]))
    p.add_row("exact duplicate groups (extra copies)", f"{_n(s['exact_groups'])} ({s['exact_extra_copies']})")
    p.add_row(f"near-duplicate pairs (phash <= {rep['method']['near_threshold']} bits)", _n(s["near_pairs"]))
    for pair, c in s["cross_split"].items():
        p.add_row(f"leak {pair}: exact / near", f"{_n(c['exact'])} / {_n(c['near'])}")
    p.add_row("duplicate groups with different labels", _n(s["label_conflict_groups"]))
    p.add_row("classes with < 5 images", _n(len(cls["few_images"])))
    con.print(p)
    for u in rep["unreadable"][:10]:
        con.print(f"  [red]unreadable[/] {u['path']}: {u['reason']}")
    for g in rep["duplicates"][:max_groups]:
        tag = (("[red]labels differ[/] " if g["label_conflict"] else "")
               + ("[yellow]across splits[/] " if g["cross_split"] else ""))
        dist = f"(phash within {g['max_distance']} bits)" if g["kind"] == "near" else "(identical pixels)"
        con.print(f"  {g['kind']} x{g['size']} {tag}{dist}")
        for m in g["members"][:4]:
            con.print(f"    {m['split']:<5} {m['label']:<12} {m['path']}")
    if len(rep["duplicates"]) > max_groups:
        con.print(f"  ... {s['duplicate_clusters'] - max_groups} more group(s) in the JSON report")
    for f in rep["findings"]:
        con.print(f"[yellow]![/] {f}")
    if not rep["findings"]:
        con.print("[green]no problems found[/]")


def _n(v: int) -> str:
    return f"[red]{v}[/]" if v else "0"


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Start here")
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
        import json

        from rich.console import Console

        from ..cli import run_guarded
        from ..data.audit import audit as _audit

        rep = run_guarded(_audit, data, output=output, splits=split, near_threshold=near_threshold,
                          pixel_tolerance=pixel_tolerance, fix=fix, progress=not quiet, cache_dir=cache_dir,
                          seed=seed, workers=workers)
        if json_out:
            typer.echo(json.dumps(rep, indent=2))
            return
        con = Console()
        print_summary(rep, con)
        con.print(f"[dim]{rep['seconds']}s[/]" + (f"; report: {output}" if output else ""))
        if fix is not None:
            f = rep["fix"]
            con.print(f"cleaned manifest: {f['path']} ({f['rows']} rows, {f['dropped']} dropped) - "
                      f"train on it with `nextclass train {f['path']}`")
