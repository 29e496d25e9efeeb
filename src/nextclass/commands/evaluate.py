"""``nextclass evaluate`` and ``nextclass predict``."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import List, Optional

import typer


def expand_paths(items: list[str]) -> tuple[list[str], list[str]]:
    """Files, folders (recursive, image extensions) and globs → (files, patterns that matched nothing)."""
    from ..data.decode import IMAGE_EXTENSIONS
    from ..utils import natural_key

    files, missing = [], []
    for it in items:
        p = Path(it)
        if p.is_dir():
            found = [str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
            files += sorted(found, key=natural_key)
        elif p.exists():
            files.append(str(p))
        else:
            g = sorted(glob.glob(it, recursive=True), key=natural_key)
            if g:
                files += [f for f in g if os.path.isfile(f)]
            else:
                missing.append(it)
    return files, missing


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Evaluate")
    def evaluate(
        run: Path = typer.Argument(..., help="Run directory (uses its bundle, config and split.csv)."),
        data: Optional[str] = typer.Argument(None, help="Another dataset to evaluate on (same class names)."),
        split: str = typer.Option("test", help="Split of the run's data: train | val | test."),
        tta: bool = typer.Option(False, help="Test-time augmentation (flip + multi-crop views the model was trained with); reports the gain."),
        quiet: bool = typer.Option(False, "--quiet", "-q"),
    ):
        """Metrics (top-1/5, per-class P/R/F1, confusion matrix) -> RUN/metrics.json and predictions CSV."""
        from rich.console import Console
        from rich.table import Table

        from .. import evaluate as _evaluate
        from ..cli import run_guarded

        m = run_guarded(_evaluate, str(run), data, split=split, tta=tta, progress=not quiet)
        t = Table(title=f"{m['split']}: {m['n']} images - accuracy {m['accuracy']:.4f}, top-5 {m['top5']:.4f}")
        for c in ("class", "precision", "recall", "f1", "support"):
            t.add_column(c, justify="left" if c == "class" else "right")
        for c, r in m["per_class"].items():
            t.add_row(c, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}", str(r["support"]))
        for avg in ("macro", "weighted"):
            t.add_row(f"[bold]{avg} avg", f"{m[avg]['precision']:.3f}", f"{m[avg]['recall']:.3f}", f"{m[avg]['f1']:.3f}", str(m["n"]))
        Console().print(t)

    @app.command(rich_help_panel="Use")
    def predict(
        model: str = typer.Argument(..., help="Run dir, bundle dir, or model store NAME[@vN]."),
        paths: List[str] = typer.Argument(..., help="Image files, folders (recursive) or globs ('imgs/*.jpg')."),
        topk: int = typer.Option(3, "--topk", "-k"),
        fmt: str = typer.Option("table", "--format", "-f", help="table | csv | json."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write CSV/JSON here instead of stdout."),
        tta: bool = typer.Option(False, help="Average over the bundle's TTA views (flip / multi-crop)."),
        batch_size: int = typer.Option(32),
        backend: str = typer.Option("torch", help="torch | onnx | auto."),
        nproc: int = typer.Option(1, help="Processes for sharded prediction (torch.distributed, gloo)."),
    ):
        """Predict images with a trained model. Unreadable files are reported, never fatal."""
        import csv
        import io
        import json

        from rich.console import Console
        from rich.table import Table

        from .. import load
        from ..cli import run_guarded

        files, missing = expand_paths(paths)
        err = Console(stderr=True)
        for m in missing:
            err.print(f"[yellow]no such file or pattern:[/] {m}")
        if not files:
            err.print("[red]error:[/] no input files")
            raise typer.Exit(2)
        if nproc > 1:
            from ..distributed import predict_distributed

            rows = run_guarded(predict_distributed, model, files, nproc=nproc, topk=topk, batch_size=batch_size, tta=tta,
                               backend=backend)
        else:
            pred = run_guarded(load, model, backend=backend)
            rows = [r.to_dict() for r in pred.predict(files, topk=topk, batch_size=batch_size, tta=tta)]
        bad = [r for r in rows if r.get("error")]
        if fmt == "json":
            text = json.dumps(rows, indent=2)
        elif fmt == "csv":
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["path", "label", "probability", "topk", "error"])
            for r in rows:
                w.writerow([r["source"], r["label"] or "", f"{r['probability']:.5f}" if r["probability"] is not None else "",
                            ";".join(f"{t['label']}:{t['probability']:.4f}" for t in r["topk"]), r.get("error", "")])
            text = buf.getvalue()
        elif fmt == "table":
            t = Table(show_lines=False)
            for c in ("file", "prediction", "prob", f"top-{topk}"):
                t.add_column(c)
            for r in rows:
                if r.get("error"):
                    t.add_row(r["source"], "[red]unreadable", "", r["error"])
                else:
                    t.add_row(r["source"], r["label"], f"{r['probability']:.3f}",
                              ", ".join(f"{x['label']} {x['probability']:.2f}" for x in r["topk"][1:]))
            Console(width=200).print(t)
            text = None
        else:
            raise typer.BadParameter(f"--format {fmt!r}: choose table, csv or json")
        if text is not None:
            if output:
                from ..utils import atomic_write_text

                atomic_write_text(output, text)
                err.print(f"wrote {len(rows)} predictions to {output}")
            else:
                typer.echo(text, nl=False)
        if bad:
            err.print(f"[yellow]{len(bad)} unreadable file(s)[/] listed above with the reason")
