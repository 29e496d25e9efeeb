"""Datasets on disk: a folder per class, split folders, or a CSV manifest (``path,label[,split]``)."""

from __future__ import annotations

import csv
from pathlib import Path

from nextclass.utils import natural_key
from nextclass.data.decode import IMAGE_EXTENSIONS
from nextclass.data.samples import SPLIT_ALIASES, DataError, DataSource, Sample

__all__ = ["from_folder", "from_csv", "list_images"]


def list_images(folder: Path) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(files, key=lambda p: natural_key(str(p)))


def _class_dirs(folder: Path) -> list[Path]:
    return sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: natural_key(d.name))


def from_folder(root: Path) -> DataSource:
    subdirs = _class_dirs(root)
    split_dirs = {SPLIT_ALIASES[d.name.lower()]: d for d in subdirs if d.name.lower() in SPLIT_ALIASES}
    # split folders: train/ with val/ or test/, or train/ alone (val and test are then carved from it, and said so);
    # a lone train/ beside other folders is a class named "train"
    if "train" in split_dirs and (len(split_dirs) >= 2 or len(subdirs) == 1):
        classes = sorted({c.name for d in split_dirs.values() for c in _class_dirs(d)}, key=natural_key)
        if not classes:
            raise DataError(f"{root}: split folders {sorted(split_dirs)} hold no class folders")
        index = {c: i for i, c in enumerate(classes)}
        samples = [Sample(str(p.resolve()), index[c.name], split)
                   for split, d in split_dirs.items() for c in _class_dirs(d) for p in list_images(c)]
        kind = "split-folder"
    else:
        classes = [d.name for d in subdirs]
        if len(classes) < 2:
            raise DataError(
                f"{root}: expected one folder per class (root/<class>/*.jpg) or split folders "
                f"(root/train/<class>/...), found {len(classes)} class folder(s)")
        samples = [Sample(str(p.resolve()), i, None) for i, d in enumerate(subdirs) for p in list_images(d)]
        kind = "folder"
    if not samples:
        raise DataError(f"{root}: no image files found (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return DataSource(root.name, str(root.resolve()), kind, classes, samples)


def from_csv(path: Path) -> DataSource:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        if "path" not in cols or "label" not in cols:
            raise DataError(f"{path}: a manifest needs a header with 'path' and 'label' (optional 'split'), got {cols}")
        rows = [{k.strip().lower(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    classes = sorted({r["label"] for r in rows}, key=natural_key)
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for n, r in enumerate(rows, start=2):
        split = r.get("split") or None
        if split is not None:
            if split.lower() not in SPLIT_ALIASES:
                raise DataError(f"{path}:{n}: unknown split {split!r}; use train, val or test")
            split = SPLIT_ALIASES[split.lower()]
        p = Path(r["path"])
        p = p if p.is_absolute() else (path.parent / p)
        samples.append(Sample(str(p.resolve()), index[r["label"]], split))
    if any(s.split for s in samples) and not all(s.split for s in samples):
        raise DataError(f"{path}: the 'split' column must be filled on every row or on none")
    return DataSource(path.stem, str(path.parent.resolve()), "csv", classes, samples)


