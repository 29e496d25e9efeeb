"""``nextclass benchmark``: images/s of decoding, loading, the model and the whole training step."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from nextclass.commands._common import parse_sets, run_guarded

__all__ = ["benchmark", "register"]


def benchmark(
    data: str = typer.Argument("digits", help="Folder, CSV manifest, 'digits' or 'fashion-mnist[:DIR]' (as for train)."),
    model: str = typer.Option("auto", help="timm model name, simple_cnn or fast_resnet; auto: what training would pick."),
    pretrained: Optional[str] = typer.Option(None, help="As for train (changes the input size and preprocessing)."),
    img_size: Optional[int] = typer.Option(None, help="Model input size (default: train's automatic choice)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Default: train's automatic choice."),
    augment: Optional[str] = typer.Option(None, help="none | light | standard | strong | translate (default: what training would pick)."),
    steps: int = typer.Option(20, min=1, help="Timed steps per measurement."),
    warmup: int = typer.Option(3, min=0, help="Untimed steps before each measurement."),
    compile_: bool = typer.Option(False, "--compile", help="Also time torch.compile: compile seconds, compiled "
                                  "step rate, and after how many epochs it pays back."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last",
                                                 help="Default: measured, as train does."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps."),
    threads: Optional[int] = typer.Option(None, help="torch threads (default: all cores)."),
    cache_dir: Optional[str] = typer.Option(None, help="Decoded-image cache (default ~/.cache/nextclass)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Any other training config field, KEY=VALUE."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON instead of a table."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write the JSON result to this file."),
):
    """Where does training time go? Images/s for decoding, the loader alone, the model alone and the
    whole training step, with the same defaults, loader and step as `nextclass train`.

    Examples:

      nextclass benchmark digits

      nextclass benchmark photos/ --model resnet18 --img-size 128 --compile

      nextclass benchmark fashion-mnist --json -o bench.json
    """
    from nextclass.benchmark import benchmark as _benchmark
    from nextclass.report.console import json_text
    from nextclass.utils import atomic_write_json

    r = run_guarded(_benchmark, data, model=model, pretrained=pretrained, img_size=img_size, batch_size=batch_size,
                    augment=augment, steps=steps, warmup=warmup, compile=compile_, channels_last=channels_last,
                    device=device, threads=threads, cache_dir=cache_dir, progress=not as_json,
                    **parse_sets(set_))
    if output is not None:
        atomic_write_json(output, r)
    if as_json:
        typer.echo(json_text(r, default=float))
    else:
        _print_result(r)


def _print_result(r: dict) -> None:
    """The benchmark's setup line, table and verdict on stdout."""
    from rich.console import Console

    from nextclass.report.console import benchmark_summary_lines

    con = Console(highlight=False)
    for line in benchmark_summary_lines(r):
        con.print(line)


def register(app: typer.Typer) -> None:
    """Attach ``benchmark`` to the app."""
    app.command(rich_help_panel="Train")(benchmark)
