"""``nextclass review RUN|DATA``: a local web page to decide on what the audit and the model found."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nextclass.commands._common import run_guarded

__all__ = ["register", "review"]


def review(
    target: str = typer.Argument(..., metavar="RUN|DATA", help="A finished run directory, or data as `nextclass "
                                 "audit` takes it (a folder, a CSV manifest...) to review what the audit finds."),
    corrections: Optional[Path] = typer.Option(
        None, "--corrections", help="The corrections file decisions are appended to (created if absent; reopening "
        "resumes). Default: RUN/corrections.jsonl, or ./corrections.jsonl for DATA. Never inside the data folder."),
    audit: Optional[Path] = typer.Option(None, "--audit", help="DATA: read this report of `nextclass audit -o` (its "
                                         "audit.json or folder, with label_issues.csv from --labels) instead of "
                                         "auditing again."),
    pool: Optional[str] = typer.Option(None, "--pool", help="RUN: also review the `suggest` picks of this folder (or "
                                       "CSV) of unlabelled images: label them from the page."),
    n: int = typer.Option(50, "-n", "--n", help="--pool: how many picks."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (the page can change your corrections: keep it "
                             "local)."),
    port: int = typer.Option(8001),
    cache_dir: Optional[str] = typer.Option(None, help="Cache root (built-in datasets, audit hashes, decoded images)."),
    items_only: bool = typer.Option(False, "--list", help="Print the items as JSON and exit, without the page."),
    log_level: str = typer.Option("warning", help="uvicorn's log level."),
):
    """Decide on what the audit and the model found, image by image, in a local web page.

    It walks through probable label issues, leaks, duplicates, unreadable files, the model's confident mistakes,
    unfamiliar images and suggest picks, with thumbnails and the evidence, and you decide on each: keep, relabel,
    drop or duplicate of. Each decision is saved as it is made; your data folder is never changed.

    Keys on the page: k keep, d drop, 1-9 relabel to class n, u duplicate of, arrows or j/l move, n next undecided.

    Examples:

      nextclass review runs/simple_cnn-photos           (decisions: runs/simple_cnn-photos/corrections.jsonl)

      nextclass train photos/ --corrections runs/simple_cnn-photos/corrections.jsonl     (retrain with them)

      nextclass review photos/ --corrections photos-fixes.jsonl      (no run yet: what the audit finds)

      nextclass review runs/simple_cnn-photos --pool new-photos/ -n 30      (label the suggest picks too)
    """
    from nextclass.report.console import json_text
    from nextclass.review.app import run_server
    from nextclass.review.collect import collect, corrections_file
    from nextclass.review.decisions import decided, read_rows
    from nextclass.utils import log

    rs = run_guarded(collect, target, audit=audit, pool=pool, suggest_n=n, cache_dir=cache_dir)
    file = run_guarded(corrections_file, target, corrections, rs.images.root)
    if items_only:
        typer.echo(json_text(rs.to_dict()))
        return
    done = run_guarded(lambda: decided(rs, read_rows(file)))  # a damaged file: one red line before the page opens
    from nextclass.serve.app import check_port

    run_guarded(check_port, host, port)
    log(f"{len(done)} of {len(rs.items)} decided so far; decisions go to {file}")
    log(f"review page: http://{host}:{port}/   (Ctrl+C to stop; reopening resumes)")
    run_guarded(run_server, rs, file, host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    """Attach ``review`` to the app."""
    app.command(rich_help_panel="Start here")(review)
