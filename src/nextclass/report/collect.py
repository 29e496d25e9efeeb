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

__all__ = ["read_rows", "read_json", "RunImages", "dataset_summary", "audit_summary", "model_info"]


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


def dataset_summary(run_dir: Path) -> dict:
    """Counts per class and split (``split.csv``) and the skipped files (``skipped.csv``)."""
    run = RunDir(run_dir)
    rows = read_rows(run.split)
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        counts[r.get("class") or r.get("label", "?")][r.get("split") or "-"] += 1
    splits = [s for s in ("train", "val", "test") if any(c[s] for c in counts.values())]
    skipped = read_rows(run.skipped)
    per_split = {s: sum(c[s] for c in counts.values()) for s in splits}
    sizes = [sum(c.values()) for c in counts.values()]
    return {
        "splits": splits,
        "classes": [{"name": k, "counts": [counts[k][s] for s in splits], "total": sum(counts[k].values())}
                    for k in sorted(counts, key=natural_key)],
        "per_split": per_split,
        "total": len(rows),
        "imbalance": (max(sizes) / max(min(sizes), 1)) if sizes else None,
        "skipped": skipped,
        "skipped_reasons": Counter((r.get("reason") or "?").split(":")[0] for r in skipped).most_common(),
    }


def _scalar(v) -> bool:
    return isinstance(v, (str, int, float, bool)) or v is None


def audit_summary(run_dir: Path, max_rows: int = 12) -> dict | None:
    """A view of ``audit.json`` (written by ``nextclass audit`` and at the start of every run), or None.

    Returns ``{"findings": [str], "highlights": [(key, value)], "lists": [...], "facts": [(key, value)]}``:
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
        lists.append({"name": key, "count": len(v), "columns": cols[:7] + (["members"] if has_members else []),
                      "paths": [_paths_of(e) for e in entries], "rows": rows})

    def walk(obj: dict, prefix: str = "") -> None:
        for k, v in obj.items():
            key = f"{prefix}{k}"
            if key in ("findings", "summary"):
                continue
            if _scalar(v):
                facts.append((key, v))
            elif isinstance(v, dict) and all(_scalar(x) for x in v.values()) and len(v) <= 30:
                facts.append((key, ", ".join(f"{a}: {_short(b, 40)}" for a, b in v.items())))
            elif isinstance(v, dict):
                walk(v, key + ".")
            elif isinstance(v, list) and (not v or isinstance(v[0], dict)):
                add_list(key, v)
            elif isinstance(v, list):
                facts.append((key, _short(", ".join(_short(x, 30) for x in v), 200)))

    walk(data)
    highlights = []
    summary = data.get("summary")
    if isinstance(summary, dict):
        highlights = [(k, _flat(v)) for k, v in summary.items()]
    findings = [str(f) for f in data.get("findings", [])] if isinstance(data.get("findings"), list) else []
    return {"findings": findings, "highlights": highlights, "lists": lists, "facts": facts}


def _flat(v, depth: int = 0) -> str:
    """``{"train-val": {"exact": 0, "near": 6}}`` -> ``train-val: (exact 0, near 6)``."""
    if isinstance(v, dict):
        inner = ", ".join(f"{k}{': ' if depth == 0 else ' '}{_flat(x, depth + 1)}" for k, x in v.items())
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
