"""What ``nextclass evaluate`` scores, built from a run directory and its bundle: the same
:class:`~nextclass.evaluation.scorer.EvalImages` and :class:`~nextclass.evaluation.scorer.Scoring` that the
run's finish step scored with (:mod:`nextclass.training.scoring`), so the blocks agree field by field.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from nextclass.config import TrainConfig
from nextclass.data.cache import decode_all
from nextclass.data.samples import DataSource
from nextclass.data.transforms import Preprocess
from nextclass.engine.loop import Device
from nextclass.evaluation.scorer import EvalImages, Scoring
from nextclass.metrics.tta import views_for
from nextclass.neighbors import INDEX_FILE, NeighborIndex
from nextclass.rundir import RunDir

__all__ = ["run_split", "run_source", "other_data", "load_data", "bundle_scoring", "OTHER_PREFIX"]

OTHER_PREFIX = "data:"  # blocks of other datasets: never the name of one of the run's own splits


def _decoded(source: DataSource, positions: list[int], pp: Preprocess, cache_dir: str | None, progress: bool):
    return decode_all(source, positions, pp, cache_dir=cache_dir, progress=progress)


def load_data(data, cache_dir: str | None, corrections: str | os.PathLike | None = None,
              upto: int | None = None, task: str = "auto") -> tuple[DataSource, dict | None]:
    """A dataset with a corrections file applied on top (:func:`nextclass.data.corrections.correct_source`), and
    what the corrections changed (None without them)."""
    from nextclass.data.corrections import correct_source
    from nextclass.data.sources import load_source

    source = load_source(data, cache_dir=cache_dir, task=task)
    if not corrections:
        return source, None
    return source, correct_source(source, corrections, cache_dir=cache_dir, upto=upto).to_dict()


def run_source(run: RunDir, cfg: TrainConfig, cache_dir: str | None,
               corrections: str | os.PathLike | None = None) -> tuple[DataSource, dict | None]:
    """The run's data with its labels: the run's own corrections (the rows it trained with) unless ``corrections``
    names another file (all of its rows)."""
    if corrections:
        return load_data(cfg.data, cache_dir, corrections, task=cfg.task)
    own = run.read_corrections_applied()
    return load_data(cfg.data, cache_dir, cfg.corrections, upto=own["n_rows"] if own else None, task=cfg.task)


def run_split(run: RunDir, cfg: TrainConfig, split: str, pp: Preprocess, cache_dir: str | None,
              progress: bool = True, *, source: DataSource | None = None) -> tuple[EvalImages, bool]:
    """One split of the run's own data, decoded exactly as training decoded it (the same cache entry), and
    whether it is the run's headline block (its final split: test, or val when there is no test).
    ``source``: the run's data already loaded (:func:`run_source`; by default with the run's own corrections)."""
    from nextclass.data.splits import read_split_csv, split_rows

    source = source if source is not None else run_source(run, cfg, cache_dir)[0]
    read_split_csv(run.split, source)
    positions = list(range(len(source.samples)))
    decoded = _decoded(source, positions, pp, cache_dir, progress)
    rows, labels = split_rows(source, decoded)
    if split not in rows:
        raise ValueError(f"split {split!r}: choose one of {', '.join(rows)}")
    last = "test" if cfg.evaluate_test and len(rows["test"]) else "val"
    ids = [source.samples[r].path for r in rows[split]]
    return EvalImages(split, decoded.array, rows[split], labels[split], ids, key=decoded.key,
                      skipped=decoded.skipped(source.samples, split)), split == last


def _as_model_classes(source: DataSource, classes: list[str], data, task: str) -> None:
    """Renumber ``source``'s labels into the model's classes (an unknown class is an error); a single-label set
    scored by a multi-label model becomes a multi-label one (each image carries its one label)."""
    unknown = sorted(set(source.classes) - set(classes))
    if unknown:
        raise ValueError(f"{data}: classes {unknown[:5]} are not known to the model ({len(classes)} classes)")
    if task == "single-label" and source.multilabel:
        raise ValueError(f"{data}: a multi-label dataset cannot be scored by a single-label model")
    remap = [classes.index(c) for c in source.classes]
    for s in source.samples:
        if source.multilabel or task == "multi-label":
            s.labels, s.label = tuple(sorted(remap[j] for j in (s.labels if source.multilabel else (s.label,)))), -1
        else:
            s.label = remap[s.label]
    source.classes, source.task = list(classes), task


def other_data(data, classes: list[str], pp: Preprocess, cache_dir: str | None, progress: bool = True, *,
               source: DataSource | None = None, task: str = "single-label") -> EvalImages:
    """Another dataset with the model's class names: its test split if it has one, else all of it. Its block is
    named ``data:<folder>[:test]``, so the run's own blocks are never overwritten. ``source``: ``data`` already
    loaded (:func:`load_data`, e.g. with corrections); ``task``: the model's."""
    source = source if source is not None else load_data(data, cache_dir)[0]
    _as_model_classes(source, classes, data, task)
    has_test = any(s.split == "test" for s in source.samples)
    positions = [i for i, s in enumerate(source.samples) if (s.split == "test" or not has_test)]
    decoded = _decoded(source, positions, pp, cache_dir, progress)
    ok = np.flatnonzero(decoded.ok)
    name = f"{OTHER_PREFIX}{Path(str(data).rstrip('/')).name}" + (":test" if has_test else "")
    return EvalImages(name, decoded.array, ok, source.targets([source.samples[positions[i]] for i in ok]),
                      [source.samples[positions[i]].path for i in ok], key=decoded.key,
                      skipped=decoded.skipped([source.samples[p] for p in positions]))


def bundle_scoring(run: RunDir, meta: dict, cfg: TrainConfig, *, tta: bool | None, batch_size: int | None,
                   robustness: bool | None, cache_dir: str | None) -> Scoring:
    """The :class:`Scoring` the run's finish step ended with, read back from the bundle and the run's config."""
    if tta is None:  # as the bundle's own numbers were measured
        tta = bool((meta.get("tta") or {}).get("default", False))
    index = NeighborIndex.load(run.bundle)
    unfamiliar = ((meta.get("neighbors") or {}).get("unfamiliar") or {}).get("distance")
    return Scoring(classes=list(meta["classes"]), pp=Preprocess.from_dict(meta["preprocess"]),
                   runtime=Device(torch.device("cpu"), None, bool(cfg.channels_last)),
                   batch_size=batch_size or max(cfg.batch_size, 64), views=views_for(meta) if tta else ["identity"],
                   temperature=float(meta.get("temperature", 1.0)), abstain=meta.get("abstain"), sets=meta.get("sets"),
                   index=index, index_bytes=(run.bundle / INDEX_FILE).stat().st_size if index is not None else 0,
                   unfamiliar=unfamiliar, robustness=bool(cfg.robustness) if robustness is None else robustness,
                   cache_dir=cache_dir, seed=cfg.seed, model_name=cfg.model, task=meta.get("task", "single-label"),
                   label_fit=_label_fit(meta))


def _label_fit(meta: dict) -> dict | None:
    """A multi-label bundle's per-label temperatures and thresholds, as the finish step fitted them (None: single-label)."""
    if meta.get("task") != "multi-label":
        return None
    return {"temperatures": meta["temperatures"], "thresholds": meta["thresholds"], "offsets": meta.get("offsets"),
            "threshold_rule": meta.get("threshold_rule", "max-f1"), **(meta.get("label_fit") or {})}
