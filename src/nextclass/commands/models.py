"""``nextclass models add|list|show``: the versioned model store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nextclass.commands._common import run_guarded

__all__ = ["add", "list_", "register", "show"]

STORE_HELP = "Model store folder (default $NEXTCLASS_HOME/models or ~/.local/share/nextclass/models)."


def add(
    run: Path = typer.Argument(..., help="Run directory or bundle directory."),
    name: str = typer.Option(..., "--name", "-n", help="Model name (letters, digits, . _ -)."),
    note: str = typer.Option("", help="Free text stored in the manifest."),
    store: Optional[str] = typer.Option(None, help=STORE_HELP),
):
    """Copy the bundle (and its ONNX files) into the store as the next immutable version."""
    from rich.console import Console

    from nextclass.deploy.store import add as _add
    from nextclass.deploy.store import identical_version
    from nextclass.deploy.store import show as _show

    same = run_guarded(identical_version, str(run), name, store=store)
    if same is not None:
        Console(highlight=False, soft_wrap=True).print(f"unchanged: [bold]{name}@{same.name}[/] already holds this "
                                                       "bundle (every file identical); nothing added")
        return
    dest = run_guarded(_add, str(run), name, store=store, note=note)
    m = _show(f"{name}@{dest.name}", store=store)
    Console(highlight=False, soft_wrap=True).print(f"added [bold]{m['ref']}[/] -> {dest} ({len(m['files'])} files: "
                                                   f"{', '.join(m['files'])})")


def list_(store: Optional[str] = typer.Option(None, help=STORE_HELP),
          as_json: bool = typer.Option(False, "--json", help="JSON instead of a table.")):
    """Every model name with its latest version."""
    from rich.console import Console

    from nextclass.deploy.store import list_models, store_dir
    from nextclass.report.console import json_text, models_table

    rows = list_models(store=store)
    if as_json:
        typer.echo(json_text(rows))
        return
    Console(width=200).print(models_table(rows, title=f"models in {store_dir(store)}"))


def show(ref: str = typer.Argument(..., help="NAME (latest) or NAME@vN."),
         store: Optional[str] = typer.Option(None, help=STORE_HELP)):
    """The manifest of one version (JSON)."""
    from nextclass.deploy.store import show as _show
    from nextclass.report.console import json_text

    typer.echo(json_text(run_guarded(_show, ref, store=store)))


def register(app: typer.Typer) -> None:
    """Attach the ``models`` group (``add``, ``list``, ``show``) to the app."""
    models = typer.Typer(help="Versioned model store: add a run's bundle as NAME/vN, list, show.", no_args_is_help=True)
    app.add_typer(models, name="models", rich_help_panel="Use")
    models.command("add")(add)
    models.command("list")(list_)
    models.command("show")(show)
