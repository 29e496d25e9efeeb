"""The bundle: the self-describing model artifact that predict, evaluate, export and serve load.

``<run>/model/model.safetensors`` holds the weights; ``model.json`` holds the architecture and
its constructor arguments, class names, the exact eval preprocessing, the calibration
temperature, the metrics the model earned (with split names and sizes), library versions and a
hash of the training data. Loading never unpickles anything.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path

import torch
from torch import nn

from nextclass.data.transforms import Preprocess
from nextclass.rundir import RunDir
from nextclass.utils import atomic_write_json, publish_file

__all__ = ["save_bundle", "read_meta", "load_model", "resolve_bundle_dir", "BundleError", "FORMAT"]

FORMAT = "nextclass.bundle"
FORMAT_VERSION = 1


class BundleError(ValueError):
    """A path that is not a usable bundle; the message says what is missing."""


def versions() -> dict:
    import timm
    import torchvision

    from nextclass.utils import VERSION as __version__

    return {"nextclass": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "python": platform.python_version()}


def save_bundle(folder: str | os.PathLike, model: nn.Module, *, arch: dict, classes: list[str],
                preprocess: Preprocess, metrics: dict | None = None, data_hash: str = "", temperature: float = 1.0,
                extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``folder`` (each atomically)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / f".model.safetensors.{os.getpid()}.tmp"
    save_file(sd, str(tmp), metadata={"format": FORMAT})
    publish_file(tmp, folder / "model.safetensors")
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "arch": arch, "classes": list(classes), "preprocess": preprocess.to_dict(),
        "temperature": float(temperature), "metrics": metrics or {}, "data_hash": data_hash,
        "versions": versions(), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "num_params": int(sum(p.numel() for p in model.parameters())),
    }
    meta.update(extra or {})
    atomic_write_json(folder / "model.json", meta)
    return folder


def update_meta(folder: str | os.PathLike, **fields) -> dict:
    """Merge ``fields`` into ``model.json`` (atomically)."""
    meta = read_meta(folder)
    meta.update(fields)
    atomic_write_json(Path(resolve_bundle_dir(folder)) / "model.json", meta)
    return meta


def resolve_bundle_dir(path: str | os.PathLike) -> Path:
    """A bundle folder, a run folder (uses ``<run>/model``) or a ``model.json`` path → bundle folder."""
    p = Path(path).expanduser()
    if p.is_file() and p.name == "model.json":
        p = p.parent
    for cand in (p, p / "model"):
        if (cand / "model.json").is_file():
            return cand
    if RunDir(p).is_run():  # a run directory whose finish step never saved the bundle
        raise BundleError(f"{path}: this run did not finish (no bundle in {p / 'model'}); "
                          f"`nextclass train --resume {path}` finishes it")
    raise BundleError(f"{path}: not a bundle (no model.json here or in {p / 'model'}); "
                      "give a run directory, a bundle directory or a model store name")


def read_meta(path: str | os.PathLike) -> dict:
    folder = resolve_bundle_dir(path)
    meta = json.loads((folder / "model.json").read_text())
    if meta.get("format") != FORMAT:
        raise BundleError(f"{folder}/model.json: not a nextclass bundle (format={meta.get('format')!r})")
    return meta


def build_model(meta: dict) -> nn.Module:
    """Rebuild the architecture described by ``meta['arch']`` (random weights)."""
    from nextclass.models.factory import build

    return build(meta["arch"])  # the builder training used (random weights: the bundle's are loaded next)


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict]:
    """Rebuild the model and load its weights (safetensors only). Returns ``(model.eval(), meta)``."""
    from safetensors.torch import load_file

    folder = resolve_bundle_dir(path)
    meta = read_meta(folder)
    model = build_model(meta)
    sd = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise BundleError(f"{folder}: weights do not match {meta['arch']['name']}: missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]}")
    return model.eval(), meta
