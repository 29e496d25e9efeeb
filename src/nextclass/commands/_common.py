"""What every command shares: turning user errors into a red line and exit code 2, ``--set`` parsing,
and expanding file/folder/glob arguments (naming the ones that matched nothing)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import typer

__all__ = ["expand_paths", "input_files", "parse_sets", "run_guarded", "wide_console", "CORRECTIONS_HELP"]

CORRECTIONS_HELP = ("Apply this corrections file first (review decisions: relabels and drops, matched by content hash; "
                    "written by `nextclass review`); the data folder is not touched.")


def run_guarded(fn, *args, **kwargs):
    """Call ``fn``; turn user errors (bad config, data, model, bundle) into a red line and exit code 2."""
    from rich.console import Console
    from rich.markup import escape

    # OSErrors a user's path causes (a file where a folder belongs, and the reverse): theirs to fix, not a traceback
    user_errors: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError, NotADirectoryError,
                                                    IsADirectoryError, FileExistsError)
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/] - resume a training run with `nextclass train --resume RUN`")
        raise typer.Exit(130)
    except user_errors as e:
        # one unbroken line (a long path stays copyable; the terminal wraps it for the eye), markup in the
        # message (a path with [brackets]) printed as text
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(e))}")
        raise typer.Exit(2)


def wide_console():
    """A stdout Console that never cuts a table row: tables of paths (suggest, audit) are as wide as their longest
    path, and the terminal wraps what it must (Rich crops each line at its width, 80 when not on a terminal)."""
    from rich.console import Console

    return Console(width=10_000)


def parse_sets(items: list[str] | None) -> dict:
    import yaml

    out = {}
    for it in items or []:
        if "=" not in it:
            raise typer.BadParameter(f"--set {it!r}: expected KEY=VALUE (any config field)")
        k, v = it.split("=", 1)
        out[k.strip().replace("-", "_")] = yaml.safe_load(v)
    return out


def expand_paths(items: list[str]) -> tuple[list[str], list[str]]:
    """Files, folders (recursive, image extensions) and globs → (files, patterns that matched nothing)."""
    from nextclass.data.decode import IMAGE_EXTENSIONS
    from nextclass.utils import natural_key

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


def input_files(items: list[str]) -> list[str]:
    """:func:`expand_paths`, naming each pattern that matched nothing on stderr; exit code 2 when no file is left."""
    from rich.console import Console

    from rich.markup import escape

    files, missing = expand_paths(items)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if not files:  # one line: what matched nothing
        err.print("[bold red]error:[/] no input files" + (f" (no such file or pattern: {escape(', '.join(missing))})"
                                                         if missing else " (the folders hold no images)"))
        raise typer.Exit(2)
    for m in missing:
        err.print(f"[yellow]no such file or pattern:[/] {escape(m)}")
    return files
