"""``nextclass models add|list|show``: the versioned model store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

STORE_HELP = "Model store folder (default $NEXTCLASS_HOME/models or ~/.local/share/nextclass/models)."


def register(app: typer.Typer) -> None:
    models = typer.Typer(help="Versioned model store: add a run's bundle as NAME/vN, list, show.", no_args_is_help=True)
    app.add_typer(models, name="models", rich_help_panel="Use")

    @models.command("add")
    def add(
        run: Path = typer.Argument(..., help="Run directory or bundle directory."),
        name: str = typer.Option(..., "--name", "-n", help="Model name (letters, digits, . _ -)."),
        note: str = typer.Option("", help="Free text stored in the manifest."),
        store: Optional[str] = typer.Option(None, help=STORE_HELP),
    ):
        """Copy the bundle (and its ONNX files) into the store as the next immutable version."""
        from rich.console import Console

        from ..cli import run_guarded
        from ..store import add as _add, show as _show

        dest = run_guarded(_add, str(run), name, store=store, note=note)
        m = _show(f"{name}@{dest.name}", store=store)
        Console(highlight=False, soft_wrap=True).print(f"added [bold]{m['ref']}[/] -> {dest} ({len(m['files'])} files: "
                                       f"{', '.join(m['files'])})")

    @models.command("list")
    def list_(store: Optional[str] = typer.Option(None, help=STORE_HELP),
              as_json: bool = typer.Option(False, "--json", help="JSON instead of a table.")):
        """Every model name with its latest version."""
        from rich.console import Console
        from rich.table import Table

        from ..store import list_models, store_dir

        rows = list_models(store=store)
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        t = Table(title=f"models in {store_dir(store)}")
        for c in ("name", "latest", "versions", "arch", "classes", "val acc", "test acc", "onnx", "created"):
            t.add_column(c)
        for r in rows:
            t.add_row(r["name"], r["latest"], str(r["versions"]), str(r["arch"]), str(r["classes"]), _pct(r["val_accuracy"]),
                      _pct(r["test_accuracy"]), ", ".join(r["onnx"]) or "-", r["created"])
        Console(width=200).print(t)

    @models.command("show")
    def show(ref: str = typer.Argument(..., help="NAME (latest) or NAME@vN."),
             store: Optional[str] = typer.Option(None, help=STORE_HELP)):
        """The manifest of one version (JSON)."""
        from ..cli import run_guarded
        from ..store import show as _show

        typer.echo(json.dumps(run_guarded(_show, ref, store=store), indent=2))


def _pct(x) -> str:
    return "-" if x is None else f"{x:.4f}"
