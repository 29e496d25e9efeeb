"""Everything the report reads from a run directory: tables, images by path, model size and speed.

The report must build both at the end of training (a live ``ctx`` with decoded images in memory)
and later from the run directory alone. :class:`RunImages` hides the difference: with a ``ctx``
it reads the decoded-image array; without one it reopens the config's data source and decodes
only the few images the report shows (array-backed built-ins such as Fashion-MNIST have pseudo
paths and are read from ``source.array[sample.index]``).
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from nextclass.utils import log, natural_key
from nextclass.rundir import RunDir

__all__ = ["read_rows", "read_json", "RunImages", "dataset_summary", "audit_summary", "model_info", "audit_label",
           "AUDIT_LABELS", "NO_LABEL"]


def read_rows(path: Path) -> list[dict]:
    """Rows of a CSV file as dicts ([] when the file does not exist)."""
    if not Path(path).exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class RunImages:
    """Decoded square uint8 images (``S x S x C`` at the run's cache size) of a run's samples, by path."""

    def __init__(self, run_dir: Path, preprocess, ctx=None, config: dict | None = None):
        self.pp = preprocess
        self.ctx = ctx
        self.problem: str | None = None
        self._source = None
        self._pos: dict[str, int] = {}
        if ctx is not None:
            self._source = ctx.source
        else:
            try:
                from nextclass.data.sources import load_source

                cfg = config or {}
                self._source = load_source(cfg["data"], cache_dir=cfg.get("cache_dir"))
            except Exception as e:  # the data moved or is gone: the report still builds, without pictures
                self.problem = f"images unavailable: {cfg.get('data')!r} could not be opened ({e})"
                log(f"[yellow]NOTE[/]: report: {self.problem}")
        if self._source is not None:
            self._pos = {s.path: i for i, s in enumerate(self._source.samples)}

    def get(self, path: str) -> np.ndarray | None:
        """The image at ``path`` (a sample path from split.csv / predictions.csv), or None if it cannot be read."""
        from PIL import Image

        from nextclass.data.decode import DecodeError, open_image
        from nextclass.data.transforms import to_square

        pos = self._pos.get(path)
        if pos is None:
            return None
        if self.ctx is not None and self.ctx.images.ok[pos]:
            return np.asarray(self.ctx.images.array[pos])
        s = self._source.samples[pos]
        try:
            if s.index is not None and self._source.array is not None:
                a = np.asarray(self._source.array[s.index])
                img = open_image(Image.fromarray(a[:, :, 0] if a.ndim == 3 and a.shape[2] == 1 else a), self.pp.channels)
            else:
                img = open_image(s.path, self.pp.channels)
        except (DecodeError, OSError, ValueError):
            return None
        return to_square(img, self.pp.size, self.pp.interpolation)

    def pil(self, path: str):
        from PIL import Image

        a = self.get(path)
        if a is None:
            return None
        return Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)


NO_LABEL = "(no label)"  # the dataset table's row of a multi-label run's images that carry none of the labels


def dataset_summary(run_dir: Path, multilabel: bool = False) -> dict:
    """Counts per class and split (``split.csv``), the skipped files (``skipped.csv``) and what ``--corrections``
    changed (``corrections.applied.json``). A multi-label run (``multilabel``) counts the images carrying each label
    (its ``class`` cells are ``a;b``), and the images carrying none as a last row (:data:`NO_LABEL`)."""
    run = RunDir(run_dir)
    rows = read_rows(run.split)
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        names = [n for n in (r.get("class") or "").split(";") if n] or [NO_LABEL] if multilabel \
            else [r.get("class") or r.get("label", "?")]
        for name in names:
            counts[name][r.get("split") or "-"] += 1
    splits = [s for s in ("train", "val", "test") if any(c[s] for c in counts.values())]
    skipped = read_rows(run.skipped)
    per_split = {s: sum(1 for r in rows if (r.get("split") or "-") == s) for s in splits}
    sizes = [sum(c.values()) for k, c in counts.items() if k != NO_LABEL or not multilabel]
    order = sorted((k for k in counts if k != NO_LABEL or not multilabel), key=natural_key) \
        + ([NO_LABEL] if multilabel and NO_LABEL in counts else [])
    return {
        "splits": splits,
        "classes": [{"name": k, "counts": [counts[k][s] for s in splits], "total": sum(counts[k].values())}
                    for k in order],
        "per_split": per_split,
        "total": len(rows),
        "imbalance": (max(sizes) / max(min(sizes), 1)) if sizes else None,
        "skipped": skipped,
        "skipped_reasons": Counter((r.get("reason") or "?").split(":")[0] for r in skipped).most_common(),
        "corrections": {k: v for k, v in (run.read_corrections_applied() or {}).items() if k != "left_out"} or None,
        "multilabel": multilabel,
    }


#: Readable names for the keys of ``audit.json`` (:func:`nextclass.data.audit.audit`, the label check's block), as
#: the report shows them; the raw key stays in the cell's tooltip, for looking it up in the file.
AUDIT_LABELS = {
    "version": "format version", "data": "data", "kind": "kind of source",
    "quick": "quick audit (no image statistics)", "n_images": "images", "n_readable": "readable images",
    "classes": "classes", "names": "names", "counts": "images per class", "totals": "images per class, all splits",
    "imbalance_ratio": "largest / smallest class", "few_images": "classes with few images",
    "missing_in_split": "classes missing from a split", "splits": "splits", "mode": "how split", "note": "note",
    "images": "image sizes and formats", "sizes": "sizes", "distinct_sizes": "distinct sizes",
    "min_side": "smallest side (px)", "median_side": "median side (px)", "max_side": "largest side (px)",
    "formats": "file formats", "modes": "colour modes", "unreadable": "unreadable files", "method": "method",
    "exact": "exact copies", "near": "near copies", "near_threshold": "near-copy hash threshold (bits)",
    "pixel_tolerance": "thumbnail tolerance (grey levels)", "picture_tolerance": "same-picture tolerance",
    "groups": "groups", "search": "search", "summary": "summary", "exact_groups": "groups of exact copies",
    "exact_extra_copies": "extra exact copies", "near_candidates": "near-copy candidates",
    "near_pairs": "near-copy pairs", "duplicate_clusters": "duplicate groups", "near_clusters": "near-copy groups",
    "cross_split": "leaks between splits", "within_split": "copies within a split",
    "label_conflict_groups": "duplicate groups with different labels",
    "label_conflict_images": "images in duplicate groups with different labels",
    "fix_would_drop": "images audit --fix would drop", "duplicates": "duplicate groups",
    "duplicates_listed": "duplicate groups listed", "findings": "findings", "seconds": "seconds",
    "duplicates.kind": "kind", "duplicates.cross_split": "across splits", "unreadable.reason": "reason",
    "size": "images", "max_distance": "largest hash distance (bits)", "label_conflict": "different labels",
    "members": "members (split:label)", "label_issues": "label check", "checked": "images checked",
    "label_issues.n": "flagged", "n": "images", "pairs": "most frequent (given -> suggested)",
    "items": "flagged images", "csv": "CSV file", "source": "judged by", "gate": "quality gate", "ok": "passed",
    "accuracy": "accuracy", "chance": "chance", "low": "low end of the 95% interval", "needed": "needed",
    "reason": "reason", "skipped": "not checked because", "head_accuracy": "head accuracy (cross-validated)",
    "rank": "rank", "label": "label", "suggested": "suggested", "score": "p(label)", "split": "split",
    "path": "path", "value": "value",
    # multi-label data (issue 26)
    "task": "task", "label_sets": "label sets", "label_sets.images": "images", "label_sets.labels": "labels",
    "cardinality": "labels per image (mean)", "density": "share of labels carried", "label_sets.counts": "images per label",
    "label_sets.pairs": "most frequent label pairs", "label_sets.no_label": "images with no label",
    "cooccurrence": "co-occurrence (images carrying both)", "no_label_per_split": "images with no label, per split",
    "no_label_examples": "examples of images with no label", "labels": "labels", "pairs.images": "images",
    "judged": "labels judged", "not_judged": "labels not judged", "per_label": "per label", "add": "to add",
    "remove": "to remove", "added": "add", "removed": "remove",
}


def audit_label(key: str) -> str:
    """The readable name of an ``audit.json`` key or dotted path (``classes.imbalance_ratio`` -> ``classes:
    largest / smallest class``); an unknown key reads with spaces for underscores.

    Example:
        >>> audit_label("n_images"), audit_label("summary.fix_would_drop"), audit_label("some_new_key")
        ('images', 'summary: images audit --fix would drop', 'some new key')
    """
    parts = key.split(".")
    return ": ".join(_known(parts[i - 1] if i else "", k) or k.replace("_", " ") for i, k in enumerate(parts))


def _known(parent: str, key) -> str | None:
    """Our name for ``key`` under ``parent`` (``label_issues.n`` is the flagged count, ``gate.n`` the images)."""
    return AUDIT_LABELS.get(f"{parent}.{key}") or AUDIT_LABELS.get(key) if isinstance(key, str) else None


def _scalar(v) -> bool:
    return isinstance(v, (str, int, float, bool)) or v is None


def audit_summary(run_dir: Path, max_rows: int = 12) -> dict | None:
    """A view of ``audit.json`` (written by ``nextclass audit`` and at the start of every run), or None.

    Returns ``{"findings": [str], "highlights": [(label, value, key)], "lists": [...], "facts": [(label, value,
    key)]}`` (``label``: :func:`audit_label` of the JSON ``key``, which the page keeps as a tooltip):
    the audit's own one-line findings, its ``summary`` counts, the listed problems (duplicates, label
    suspects, unreadable files; each row with the image ``paths`` it names, for thumbnails) and every
    other scalar field (shown folded). Unknown layouts still render: lists and scalars are found generically.
    """
    data = RunDir(run_dir).read_audit()
    if not data:
        return None
    facts: list = []
    lists: list = []

    def add_list(key: str, v: list) -> None:
        entries = [e if isinstance(e, dict) else {"value": e} for e in v[:max_rows]]
        cols: list[str] = []
        for e in entries:
            cols += [c for c in e if c not in cols and c not in ("path", "paths", "members")]
        has_members = any("members" in e for e in entries)
        rows = [[_short(e.get(c)) for c in cols[:7]] + ([_members(e.get("members"))] if has_members else []) for e in entries]
        keys = cols[:7] + (["members"] if has_members else [])
        lists.append({"name": audit_label(key), "key": key, "count": len(v),
                      "columns": [_known(key.split(".")[-1], c) or c.replace("_", " ") for c in keys],
                      "paths": [_paths_of(e) for e in entries], "rows": rows})

    def walk(obj: dict, prefix: str = "") -> None:
        for k, v in obj.items():
            key = f"{prefix}{k}"
            if key in ("findings", "summary"):
                continue
            if _scalar(v):
                facts.append((audit_label(key), v, key))
            elif isinstance(v, dict) and all(_scalar(x) for x in v.values()) and len(v) <= 30:
                text = ", ".join(f"{_inner(a, k)}: {_short(b, 40)}" for a, b in v.items())
                facts.append((audit_label(key), text, key))
            elif isinstance(v, dict):
                walk(v, key + ".")
            elif isinstance(v, list) and (not v or isinstance(v[0], dict)):
                add_list(key, v)
            elif isinstance(v, list):
                facts.append((audit_label(key), _short(", ".join(_short(x, 30) for x in v), 200), key))

    walk(data)
    highlights = []
    summary = data.get("summary")
    if isinstance(summary, dict):
        highlights = [(audit_label(k), _flat(v), f"summary.{k}") for k, v in summary.items()]
    findings = [str(f) for f in data.get("findings", [])] if isinstance(data.get("findings"), list) else []
    return {"findings": findings, "highlights": highlights, "lists": lists, "facts": facts}


def _inner(key, parent: str = "") -> str:
    """A key inside a value: readable when it is one of ours, as it is otherwise (class names, split pairs)."""
    return _known(parent, key) or str(key)


def _flat(v, depth: int = 0) -> str:
    """``{"train-val": {"exact": 0, "near": 6}}`` -> ``train-val: (exact copies 0, near copies 6)``."""
    if isinstance(v, dict):
        inner = ", ".join(f"{_inner(k)}{': ' if depth == 0 else ' '}{_flat(x, depth + 1)}" for k, x in v.items())
        return f"({inner})" if depth else inner
    return _short(v, 60)


def _paths_of(entry: dict) -> list[str]:
    """Image paths a listed problem names (``path``, ``paths`` or ``members[].path``), at most 4."""
    if isinstance(entry.get("path"), str):
        return [entry["path"]]
    items = entry.get("paths") or entry.get("members") or []
    out = [x if isinstance(x, str) else x.get("path") for x in items if isinstance(x, (str, dict))]
    return [p for p in out if isinstance(p, str)][:4]


def _members(members) -> str:
    if not isinstance(members, list):
        return ""
    return ", ".join(f"{m.get('split', '?')}:{m.get('label', '?')}" if isinstance(m, dict) else str(m) for m in members)


def _short(v, n: int = 80) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= n else s[: n - 1] + "\u2026"


def model_info(model, bundle_dir: Path, preprocess, device: str = "cpu", budget_s: float = 1.5) -> dict:
    """Parameters, weight-file size, and measured inference speed (img/s on a batch, ms for one image)."""
    import torch

    params = int(sum(p.numel() for p in model.parameters()))
    f = Path(bundle_dir) / "model.safetensors"
    info = {"params": params, "file_bytes": f.stat().st_size if f.exists() else None, "device": str(device),
            "threads": torch.get_num_threads(), "input": f"{preprocess.channels}x{preprocess.crop}x{preprocess.crop}"}
    batch = 32 if preprocess.crop <= 64 else 8
    x = torch.randn(batch, preprocess.channels, preprocess.crop, preprocess.crop, device=device)
    model.eval()
    with torch.no_grad():
        model(x[:1])  # warm-up (lazy init, allocator)
        t0, n = time.perf_counter(), 0
        while n < 3 or (time.perf_counter() - t0 < budget_s / 2 and n < 50):
            model(x)
            n += 1
        info["images_per_second"] = batch * n / (time.perf_counter() - t0)
        t0, m = time.perf_counter(), 0
        while m < 3 or (time.perf_counter() - t0 < budget_s / 4 and m < 100):
            model(x[:1])
            m += 1
        info["latency_ms"] = 1000 * (time.perf_counter() - t0) / m
    info["batch"] = batch
    info["cpu_count"] = os.cpu_count()
    return info
