import json
import subprocess
import sys
from pathlib import Path

from conftest import cli


def test_tiny_run_has_every_artifact(tiny_run: Path):
    for f in ("config.yaml", "split.csv", "skipped.csv", "history.csv", "metrics.json", "predictions.csv",
              "model/model.safetensors", "model/model.json", "checkpoints/last.safetensors", "checkpoints/best.safetensors"):
        assert (tiny_run / f).exists(), f
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["test"]["split"] == "test" and m["test"]["n"] > 0
    assert m["test"]["accuracy"] > 0.6  # 3 easy synthetic classes


# Imported only when a command runs: ``--help`` (of the app and of every command) must not pay for them.
HEAVY = ("torch", "torchvision", "timm", "onnxruntime", "fastapi", "uvicorn", "sklearn", "cleanlab", "optuna")


def test_cli_help_is_fast_and_lists_commands():
    """A real ``nextclass`` process prints the help of the app and of every command without importing the heavy
    libraries (what makes ``--help`` fast, checked deterministically instead of timed)."""
    code = (
        "import json, sys\n"
        "from nextclass.cli import app, main\n"
        "import typer.main\n"
        "names = sorted(typer.main.get_command(app).commands)\n"
        "for argv in [['--help']] + [[n, '--help'] for n in names]:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), (argv, e.code)\n"
        f"print(json.dumps({{'commands': names, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    got = json.loads(p.stdout.splitlines()[-1])
    assert got["heavy"] == [], f"--help imported {got['heavy']}"
    assert {"train", "evaluate", "predict", "export", "serve", "audit", "tune", "demo"} <= set(got["commands"])
    for cmd in got["commands"]:
        assert f"Usage: nextclass {cmd} [OPTIONS]" in p.stdout, cmd  # each command's own help was printed
    top = cli("--help").stdout  # the top-level help lists the commands
    for cmd in ("train", "evaluate", "predict", "demo"):
        assert cmd in top


def test_public_api_is_functions_whatever_is_imported(tiny_run_copy):
    """No package shadows an API function: importing every job module leaves nextclass.train etc. functions."""
    import importlib
    import inspect
    import pkgutil

    import nextclass

    for m in pkgutil.walk_packages(nextclass.__path__, "nextclass."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)
    for name in ("train", "evaluate", "export", "load", "audit", "tune", "predict"):
        assert inspect.isfunction(getattr(nextclass, name)), name
    m = nextclass.evaluate(tiny_run_copy, split="val", progress=False)  # writes metrics.json: on a copy
    assert m["split"] == "val"
