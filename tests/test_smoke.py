from pathlib import Path
import json

from conftest import run_cli


def test_tiny_run_has_every_artifact(tiny_run: Path):
    for f in ("config.yaml", "split.csv", "skipped.csv", "history.csv", "metrics.json", "predictions.csv",
              "model/model.safetensors", "model/model.json", "checkpoints/last.safetensors", "checkpoints/best.safetensors"):
        assert (tiny_run / f).exists(), f
    m = json.loads((tiny_run / "metrics.json").read_text())
    assert m["test"]["split"] == "test" and m["test"]["n"] > 0
    assert m["test"]["accuracy"] > 0.6  # 3 easy synthetic classes


def test_cli_help_is_fast_and_lists_commands():
    p = run_cli("--help")
    for cmd in ("train", "evaluate", "predict", "demo"):
        assert cmd in p.stdout


def test_public_api_is_functions_whatever_is_imported(tiny_run):
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
    m = nextclass.evaluate(tiny_run, split="val", progress=False)
    assert m["split"] == "val"
