"""The quick audit a training run starts with: exact and near duplicates, leaks and label conflicts of the images
the run already decoded (cache resolution), kept in the cache for the next run on the same data. A multi-label run's
report counts images per label, compares label sets in duplicate groups and adds the label statistics (``label_sets``:
co-occurrence, images with no label), as :func:`nextclass.data.audit.audit` does.

:func:`audit_decoded` is called by :func:`nextclass.training.setup.prepare`; it shares the report, the duplicate search
and its rule with :func:`nextclass.data.audit.audit` (which reads the original files), with the search bounded
(``QUICK_WORK``) so that it stays a few seconds of a time budget.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from nextclass.data.audit import (NEAR_THRESHOLD, PIXEL_TOLERANCE, QUICK_WORK, _NearRule, _report)
from nextclass.data.hashing import Fingerprints, hash_arrays
from nextclass.data.same_picture import PICTURE_TOLERANCE
from nextclass.data.sources import DataSource
from nextclass.utils import atomic_write_json, log, sha1_of

__all__ = ["audit_decoded", "QUICK_VERSION"]

QUICK_VERSION = 2  # bump when the quick audit's report changes: cached reports of older versions are ignored


def audit_decoded(source: DataSource, images, path: str | os.PathLike,
                  near_threshold: int = NEAR_THRESHOLD, pixel_tolerance: float = PIXEL_TOLERANCE,
                  picture_tolerance: float = PICTURE_TOLERANCE, cache_dir: str | os.PathLike | None = None) -> dict | None:
    """Quick audit of a run's already-decoded images (cache resolution) -> ``path``; never raises.

    Called by :func:`nextclass.training.setup.prepare`. Sizes and formats are not probed here (the cache
    holds resized pixels), so two originals that differ only below the cache resolution count as
    exact duplicates. ``nextclass audit DATA`` reads the original files. With ``cache_dir`` the report is
    kept under ``<cache_dir>/audit/``, keyed by the decoded pixels' cache key (the data's identity at this
    resolution), the split of every image and the thresholds: the next run on the same data reads it back.
    """
    try:
        t0 = time.time()
        rule = _NearRule(near_threshold, pixel_tolerance, picture_tolerance, bounded=True)
        kept = _quick_cache_path(source, images, rule, cache_dir)
        rep = json.loads(kept.read_text()) if kept is not None and kept.exists() else None
        cached = rep is not None
        if rep is None:
            rep = _quick_report(source, images, rule)
            if kept is not None:
                atomic_write_json(kept, rep)
        rep["seconds"], rep["cached"] = round(time.time() - t0, 2), cached
        old = Path(path)
        if old.exists():  # a resumed run keeps the label issues found before
            prev = json.loads(old.read_text())
            rep.update({k: prev[k] for k in ("label_issues",) if k in prev})
        atomic_write_json(path, rep)
        s = rep["summary"]
        leaks = ", ".join(f"{k} {v['exact'] + v['near']}" for k, v in s["cross_split"].items() if v["exact"] + v["near"])
        log(f"audit: {s['unreadable']} unreadable, {s['exact_extra_copies']} exact + {s['near_pairs']} near duplicate(s), "
            f"leaks: {leaks or 'none'}, label conflicts: {s['label_conflict_groups']} "
            f"({rep['seconds']}s{', cached' if cached else ''}, {path})")
        if "near_narrowed" in s:
            log(f"[dim]audit[/] near duplicates searched within {s['near_threshold']} hash bits: {s['near_narrowed']}; "
                f"`nextclass audit DATA` runs the full search")
        return rep
    except Exception as e:  # the audit informs; it must never stop a run
        log(f"[yellow]audit skipped[/]: {type(e).__name__}: {e}")
        return None


def _quick_cache_path(source: DataSource, images, rule: _NearRule, cache_dir) -> Path | None:
    """Where the quick audit of these decoded images and this split is kept (None: not kept)."""
    if cache_dir is None or not getattr(images, "key", ""):
        return None
    # the labels the report counts (a multi-label sample's label is -1: its label set names it)
    splits = sha1_of([(s.path, s.labels if source.multilabel else s.label, s.split) for s in source.samples])
    key = sha1_of([QUICK_VERSION, QUICK_WORK, images.key, splits, rule.threshold, rule.tolerance,
                   rule.picture_tolerance])
    return Path(cache_dir) / "audit" / f"quick-{key}.json"


def _quick_report(source: DataSource, images, rule: _NearRule) -> dict:
    """Fingerprint the decoded pixels and build the quick report (no label issues)."""
    ok = np.asarray(images.ok, bool)
    fp = hash_arrays(images.array, np.flatnonzero(ok))
    n = len(ok)
    full = Fingerprints(ok.copy(), np.zeros(n, "S16"), np.zeros(n, np.uint64), np.zeros((n, 256), np.uint8),
                        np.zeros((n, 32, 32), np.uint8), np.zeros(n, np.int32), np.zeros(n, np.int32),
                        [""] * n, [""] * n, dict(images.errors))
    for name in ("exact", "phash", "thumb", "gray", "width", "height"):
        getattr(full, name)[ok] = getattr(fp, name)
    info = {"mode": "run", "note": "the run's split (split.csv)"}
    rep, _ = _report(source, full, info, rule, quick=True)
    return rep
