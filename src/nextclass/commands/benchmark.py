"""``nextclass benchmark``: images/s of decoding, loading, the model and the whole training step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def print_benchmark(r: dict, console=None) -> None:
    """Rich table of a :func:`nextclass.benchmark.benchmark` result, then the verdict."""
    from rich.console import Console
    from rich.table import Table

    con = console or Console(highlight=False)
    con.print(f"[bold]{r['data']}[/] | {r['model']} at {r['img_size']}px x{r['channels']}, batch {r['batch_size']}, "
              f"{r['device']} ({r['threads']} threads), channels_last {r['channels_last']}, amp {r['amp']}, "
              f"augment {r['augment']}; {r['steps']} timed steps after {r['warmup']} warm-up")
    t = Table(show_edge=False)
    t.add_column("part")
    t.add_column("img/s", justify="right")
    t.add_column("what was timed")
    d = r["decode"]
    t.add_row(f"decode ({d['cache']})", f"{d['images_per_second']:,.0f}",
              f"{d['images']:,} images into the uint8 cache at {r['cache_size']}px ({d['seconds']:.1f} s"
              + ("; read once, then every epoch reads the cache)" if d["cache"] == "hit" else "; once per dataset)"))
    if d.get("per_file"):
        pf = d["per_file"]
        t.add_row("decode per file", f"{pf['images_per_second_one_process']:,.0f}",
                  f"what a loop decoding files every epoch pays, 1 process ({pf['files']} files; "
                  f"~{pf['images_per_second_all_cores_estimate']:,.0f} on all cores)")
    t.add_row("loader alone", f"{r['loader']['images_per_second']:,.0f}", r["loader"]["kind"])
    t.add_row("model alone: train step", f"{r['model_alone']['train_step_images_per_second']:,.0f}",
              "forward + backward + optimiser on one batch held in memory")
    t.add_row("model alone: inference", f"{r['model_alone']['inference_images_per_second']:,.0f}", "forward, no grad")
    t.add_row("[bold]whole training step[/]", f"[bold]{r['step']['images_per_second']:,.0f}[/]",
              f"loader + augmentation + step; epoch of {r['train_images']:,} images ~ "
              f"{r['step']['epoch_seconds_estimate']:.1f} s")
    if r.get("compile"):
        c = r["compile"]
        t.add_row("compiled training step", f"{c['images_per_second']:,.0f}",
                  f"{c['speedup']:.2f}x eager; first step {c['first_step_seconds']:.1f} s (compiling)")
    con.print(t)
    for line in r["verdict"]:
        con.print(f"[yellow]>[/] {line}")


def register(app: typer.Typer) -> None:
    @app.command(rich_help_panel="Train")
    def benchmark(
        data: str = typer.Argument("digits", help="Folder, CSV manifest, 'digits' or 'fashion-mnist[:DIR]' (as for train)."),
        model: str = typer.Option("simple_cnn", help="timm model name or simple_cnn."),
        pretrained: Optional[str] = typer.Option(None, help="As for train (changes the input size and preprocessing)."),
        img_size: Optional[int] = typer.Option(None, help="Model input size (default: train's automatic choice)."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", help="Default: train's automatic choice."),
        augment: str = typer.Option("standard", help="none | light | standard | strong."),
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
        from ..benchmark import benchmark as _benchmark
        from ..cli import run_guarded
        from ..utils import atomic_write_json
        from .train import _parse_sets

        r = run_guarded(_benchmark, data, model=model, pretrained=pretrained, img_size=img_size, batch_size=batch_size,
                        augment=augment, steps=steps, warmup=warmup, compile=compile_, channels_last=channels_last,
                        device=device, threads=threads, cache_dir=cache_dir, progress=not as_json,
                        **_parse_sets(set_))
        if output is not None:
            atomic_write_json(output, r)
        if as_json:
            typer.echo(json.dumps(r, indent=2, default=float))
        else:
            print_benchmark(r)
