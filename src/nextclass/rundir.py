"""The run directory, owned by one type: :class:`RunDir`.

A run directory is nextclass's in-between-processes interface (``nextclass evaluate``, ``report``, ``export``,
``train --resume`` and the model card all read it). Every module that reads or writes a run goes through
this handle, so the layout is written down once (below) and the config is read back through the typed
config, never as raw YAML::

    runs/<name>/
      config.yaml            resolved config (every "auto" filled in)
      split.csv              path,label,class,split
      skipped.csv            unreadable files and why
      audit.json             quick audit, then label issues after training
      label_issues.csv       the label issues found at the end of the run
      corrections.jsonl      decisions of `nextclass review RUN` (append-only; data/corrections.py)
      corrections.applied.json  what --corrections changed: file name, sha256, rows used, counts, images left out
      plan.json              the --max-minutes plan
      history.csv            one row per epoch
      checkpoints/last.safetensors, best.safetensors
      metrics.json           one block per split (and per other dataset evaluated)
      predictions.csv        the test split; predictions_<name>.csv for the others
      report.html, plots/    the report
      model/                 the bundle (model.safetensors, model.json, neighbors.safetensors, README.md)

Inside one process, steps hand each other values (the scorer's probabilities, the resolved config); the
files are what a later process reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from nextclass.config import TrainConfig, load_config
from nextclass.utils import atomic_write_json

__all__ = ["RunDir", "NotARunError", "UnfinishedRunError"]


class NotARunError(FileNotFoundError):
    """The folder is not a run directory (no ``config.yaml``)."""


class UnfinishedRunError(FileNotFoundError):
    """A run directory without a bundle: the run stopped before its finish step."""


class RunDir:
    """Paths and the few reads/writes of one run directory.

    Example:
        >>> rd = RunDir("runs/demo-digits")
        >>> rd.predictions("test").name, rd.predictions("val").name
        ('predictions.csv', 'predictions_val.csv')
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # --- the layout ----------------------------------------------------------------------------
    config = property(lambda self: self.path / "config.yaml")
    split = property(lambda self: self.path / "split.csv")
    skipped = property(lambda self: self.path / "skipped.csv")
    audit = property(lambda self: self.path / "audit.json")
    label_issues = property(lambda self: self.path / "label_issues.csv")
    corrections = property(lambda self: self.path / "corrections.jsonl")
    corrections_applied = property(lambda self: self.path / "corrections.applied.json")
    plan = property(lambda self: self.path / "plan.json")
    history = property(lambda self: self.path / "history.csv")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last_checkpoint = property(lambda self: self.path / "checkpoints" / "last.safetensors")
    best_checkpoint = property(lambda self: self.path / "checkpoints" / "best.safetensors")
    metrics = property(lambda self: self.path / "metrics.json")
    report = property(lambda self: self.path / "report.html")
    plots = property(lambda self: self.path / "plots")
    bundle = property(lambda self: self.path / "model")

    def predictions(self, name: str) -> Path:
        """``predictions.csv`` for the test split, ``predictions_<name>.csv`` otherwise (file-name safe)."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.path / ("predictions.csv" if name == "test" else f"predictions_{safe}.csv")

    # --- state ---------------------------------------------------------------------------------
    def is_run(self) -> bool:
        return self.config.is_file()

    def is_finished(self) -> bool:
        """The finish step saved the bundle."""
        return (self.bundle / "model.json").is_file()

    def require_finished(self) -> "RunDir":
        """Self, or a clear error: not a run at all, or a run that did not finish (resume it)."""
        if not self.is_finished():
            if self.is_run():
                raise UnfinishedRunError(f"{self.path}: this run did not finish (no bundle in model/); "
                                         f"resume it with `nextclass train --resume {self.path}`")
            raise NotARunError(f"{self.path}: not a run directory (no config.yaml)")
        return self

    # --- reads and writes ----------------------------------------------------------------------
    def read_config(self) -> TrainConfig:
        """The resolved config the run saved, through the typed config.

        Raises:
            NotARunError: no ``config.yaml``.
        """
        if not self.is_run():
            raise NotARunError(f"{self.path}: not a run directory (no config.yaml)")
        return load_config(self.config)

    def read_metrics(self) -> dict:
        return _read_json(self.metrics)

    def merge_metrics(self, blocks: dict) -> dict:
        """Merge ``blocks`` (one per split or dataset) into ``metrics.json``, atomically; returns the whole file."""
        data = self.read_metrics()
        data.update(blocks)
        atomic_write_json(self.metrics, data)
        return data

    def read_audit(self) -> dict:
        return _read_json(self.audit)

    def write_audit(self, report: dict) -> None:
        atomic_write_json(self.audit, report)

    def read_corrections_applied(self) -> dict | None:
        """What the run's ``--corrections`` changed (None for a run without corrections)."""
        return _read_json(self.corrections_applied) or None

    def read_plan(self) -> dict | None:
        return _read_json(self.plan) or None

    def read_bundle_meta(self) -> dict | None:
        """The bundle's ``model.json`` (None before the run finished)."""
        return _read_json(self.bundle / "model.json") or None


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``; ``{}`` when it is missing or damaged (a damaged file is never trusted)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
