"""``nextclass evaluate`` and ``nextclass predict``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from nextclass.commands._common import CORRECTIONS_HELP, input_files, run_guarded

__all__ = ["evaluate", "predict", "register"]


def evaluate(
    run: Path = typer.Argument(..., help="Run directory (uses its bundle, config and split.csv)."),
    data: Optional[str] = typer.Argument(None, help="Another dataset to evaluate on (same class names)."),
    split: str = typer.Option("test", help="Split of the run's data: train | val | test."),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="Test-time augmentation (flip / multi-crop / shift "
                                       "views the model was trained with); reports the gain. Default: as the bundle "
                                       "was measured at training (on for the small-image recipe)."),
    corrections: Optional[Path] = typer.Option(None, "--corrections", help=CORRECTIONS_HELP + " Default: the "
                                               "corrections the run trained with (the rows it used), if any."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Metrics (top-1/5, per-class P/R/F1, confusion matrix) -> RUN/metrics.json and predictions CSV."""
    from rich.console import Console

    from nextclass import evaluate as _evaluate
    from nextclass.report.console import metrics_table, sets_table

    m = run_guarded(_evaluate, str(run), data, split=split, tta=tta, progress=not quiet, corrections=corrections)
    Console().print(metrics_table(m))
    if m.get("sets"):
        Console().print(sets_table(m))


def predict(
    model: str = typer.Argument(..., help="Run dir, bundle dir, or model store NAME[@vN]."),
    paths: List[str] = typer.Argument(..., help="Image files, folders (recursive) or globs ('imgs/*.jpg')."),
    topk: int = typer.Option(3, "--topk", "-k"),
    fmt: str = typer.Option("table", "--format", "-f", help="table | csv | json."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write CSV/JSON here instead of stdout."),
    tta: Optional[bool] = typer.Option(None, "--tta/--no-tta", help="Average over the bundle's TTA views (flip / "
                                       "multi-crop / shifts). Default: as the bundle's numbers were measured."),
    batch_size: int = typer.Option(32),
    backend: str = typer.Option("torch", help="torch | onnx | auto."),
    nproc: int = typer.Option(1, help="Processes for sharded prediction (torch.distributed, gloo)."),
    target_accuracy: Optional[float] = typer.Option(
        None, "--target-accuracy", help="Abstain below the threshold that gave this accuracy of the accepted "
        "predictions on validation (default: the bundle's threshold, if it was trained with one)."),
    neighbors: int = typer.Option(0, "--neighbors", min=0, help="Also show the K nearest training images."),
    unfamiliar: Optional[bool] = typer.Option(
        None, "--unfamiliar/--no-unfamiliar", help="Flag images farther from every training image than 95% of the "
        "validation images were (default: when the bundle keeps that threshold; costs one more trunk pass)."),
    coverage: Optional[float] = typer.Option(
        None, "--coverage", help="Also give each image's prediction set: the classes that hold the true class with "
        "this probability, e.g. 0.95 (split conformal on the bundle's validation scores; default: the bundle's "
        "coverage, if it was trained with one)."),
):
    """Predict images with a trained model. Unreadable files are reported, never fatal."""
    files = input_files(paths)
    opts = {"topk": topk, "batch_size": batch_size, "tta": tta}
    if nproc > 1 and (neighbors or target_accuracy is not None or unfamiliar is not None or coverage is not None):
        raise typer.BadParameter("--neighbors, --target-accuracy, --coverage and --[no-]unfamiliar work with "
                                 "--nproc 1 only")
    if nproc > 1:
        from nextclass.deploy.sharded import predict_distributed

        rows = run_guarded(predict_distributed, model, files, nproc=nproc, backend=backend, **opts)
    else:
        from nextclass import load

        pred = run_guarded(load, model, backend=backend)
        if target_accuracy is not None:
            _say_threshold(pred, target_accuracy)
        _say_sets(pred, coverage)
        rows = [r.to_dict() for r in run_guarded(pred.predict, files, target_accuracy=target_accuracy,
                                                 neighbors=neighbors, unfamiliar=unfamiliar, coverage=coverage, **opts)]
    _print_predictions(rows, fmt, topk, output)


def _say_threshold(pred, target_accuracy: float) -> None:
    """The abstain threshold ``--target-accuracy`` chose on validation, and the share of val it kept (stderr)."""
    from nextclass.metrics.selective import threshold_from_curve
    from nextclass.utils import log

    th = run_guarded(pred.abstain_threshold, target_accuracy)
    entry = pred.meta.get("abstain") or {}
    coverage = threshold_from_curve(entry["curve"], target_accuracy)[1]
    log(f"abstain threshold: {entry.get('score', 'probability')} below {th:.4f} (chosen on validation for accuracy "
        f">= {target_accuracy:g} of the accepted predictions; it kept {coverage:.1%} of the validation images)")


def _say_sets(pred, coverage: float | None) -> None:
    """The prediction-set threshold in use and the validation images it rests on (stderr); nothing without sets."""
    from nextclass.utils import log

    q = run_guarded(pred.set_threshold, coverage)
    if q is None:
        return
    e = pred.meta.get("sets") or {}
    c = coverage if coverage is not None else e.get("coverage")
    n = e.get("val_n") if coverage is None else len(e.get("val_scores") or [])
    if q == float("inf"):
        log(f"[yellow]prediction sets[/]: {n} validation images are too few for coverage {c:g} (the conformal "
            "quantile needs at least ceil(c / (1 - c))): every set is every class")
    else:
        log(f"prediction sets for coverage {c:g}: classes whose {e.get('score', 'aps').upper()} score is at most "
            f"{q:.4f} (split conformal on {n} validation images)")


def _print_predictions(rows: list[dict], fmt: str, topk: int, output: Path | None) -> None:
    """The rows as a table on stdout, or as CSV/JSON on stdout or in ``output``; then the unreadable count.

    Rows of a multi-label bundle (``task: multi-label``) get their own table and CSV columns (:func:`_labels_csv`);
    JSON is ``Prediction.to_dict`` either way."""
    from rich.console import Console

    from nextclass.report.console import (
        predictions_csv,
        predictions_json,
        predictions_table,
    )

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if fmt not in ("table", "csv", "json"):
        raise typer.BadParameter(f"--format {fmt!r}: choose table, csv or json")
    if rows and all(r.get("error") for r in rows):  # nothing was predicted: a failure, not an empty table
        from rich.markup import escape

        reasons = "; ".join(f"{Path(r['source']).name}: {r['error']}" for r in rows[:3])
        err.print(f"[bold red]error:[/] none of the {len(rows)} input(s) could be used as an image "
                  f"({escape(reasons)}{'; ...' if len(rows) > 3 else ''})")
        raise typer.Exit(2)
    multilabel = any(r.get("task") == "multi-label" for r in rows)  # Prediction.to_dict's multi-label shape
    if fmt == "table":
        Console(width=200).print(_labels_table(rows, topk) if multilabel else predictions_table(rows, topk))
    elif fmt in ("csv", "json"):
        text = predictions_json(rows) if fmt == "json" else _labels_csv(rows) if multilabel else predictions_csv(rows)
        if output:
            from nextclass.utils import atomic_write_text

            atomic_write_text(output, text)
            err.print(f"wrote {len(rows)} predictions to {output}")
        else:
            typer.echo(text, nl=False)
    bad = [r for r in rows if r.get("error")]
    if bad:
        err.print(f"[yellow]{len(bad)} unreadable file(s)[/] listed above with the reason")


def _label_names(rows: list[dict]) -> list[str]:
    """A multi-label bundle's labels, in its order (the keys of a predicted row's ``probabilities``)."""
    return next((list(r["probabilities"]) for r in rows if r.get("probabilities")), [])


def _labels_csv(rows: list[dict]) -> str:
    """Multi-label rows as CSV: ``path,labels,<one probability column per label>,unfamiliar,error``.

    ``labels``: those at or above their threshold, most probable first, joined by ``;`` (empty: none); each label's
    column holds its calibrated probability (empty for an unreadable file); ``unfamiliar`` as for single-label
    (1/0, empty when not checked); ``neighbors`` (``label:distance:id;...``) only when asked for.

    Example:
        >>> _labels_csv([{"source": "a.png", "task": "multi-label", "labels": [{"label": "cat", "probability": 0.9}],
        ...               "probabilities": {"cat": 0.9, "dog": 0.2}, "unfamiliar": None}]).splitlines()
        ['path,labels,cat,dog,unfamiliar,error', 'a.png,cat,0.90000,0.20000,,']
    """
    import csv
    import io

    names = _label_names(rows)
    with_nb = any("neighbors" in r for r in rows)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "labels", *names, "unfamiliar", "error"] + (["neighbors"] if with_nb else []))
    for r in rows:
        probs, far = r.get("probabilities") or {}, r.get("unfamiliar")
        nb = [";".join(f"{n['label']}:{n['distance']:.4f}:{n['id']}" for n in r.get("neighbors") or [])]
        w.writerow([r["source"], ";".join(t["label"] for t in r.get("labels") or []),
                    *(f"{probs[c]:.5f}" if c in probs else "" for c in names), "" if far is None else int(far),
                    r.get("error", "")] + (nb if with_nb else []))
    return buf.getvalue()


def _labels_table(rows: list[dict], topk: int):
    """Multi-label rows as a table: the labels at or above their thresholds with their probabilities, then the
    ``topk`` most probable labels below them (unreadable files in red)."""
    from rich.table import Table

    t = Table(show_lines=False)
    for c in ("file", "labels (at or above threshold)", f"below threshold (top {topk})"):
        t.add_column(c)
    for r in rows:
        if r.get("error"):
            t.add_row(r["source"], "[red]unreadable", r["error"])
            continue
        above = {x["label"] for x in r["labels"]}
        shown = ", ".join(f"{x['label']} {x['probability']:.3f}" for x in r["labels"]) or "[dim]no label"
        if r.get("unfamiliar"):
            shown += " [magenta]unfamiliar[/]"
        below = sorted(((p, c) for c, p in r["probabilities"].items() if c not in above), reverse=True)[:topk]
        t.add_row(r["source"], shown, ", ".join(f"{c} {p:.2f}" for p, c in below))
    return t


def register(app: typer.Typer) -> None:
    """Attach ``evaluate`` and ``predict`` to the app."""
    app.command(rich_help_panel="Evaluate")(evaluate)
    app.command(rich_help_panel="Use")(predict)
