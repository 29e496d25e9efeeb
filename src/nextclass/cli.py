"""The ``nextclass`` command line: a thin Typer app. Each command parses, builds a config and makes
one library call. Commands live in :mod:`nextclass.commands` (one module each, discovered at start-up;
each exposes ``register(app)``), and import torch/timm only when they run, so ``--help`` is fast.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="nextclass",
    help="From a folder of labelled images to an audited, calibrated, deployable image classifier.\n\n"
         "Start with `nextclass demo` (no download), then `nextclass train DATA`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _register_all() -> None:
    from nextclass import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        reg = getattr(mod, "register", None)
        if reg is not None:
            reg(app)


_register_all()


def main(argv: list[str] | None = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="nextclass")


if __name__ == "__main__":  # pragma: no cover
    main()
