"""Data sources: a folder tree, a CSV manifest, or a built-in set → samples + class names.

Layouts recognised for a folder ``root``:

* ``root/<class>/*`` - one folder per class, split later by :mod:`nextclass.data.splits`;
* ``root/{train,val|valid|validation,test}/<class>/*`` - the splits given are kept.

A CSV manifest has a header ``path,label`` and optionally ``split``; relative paths are
resolved against the CSV's folder. Built-ins are ``digits`` and ``fashion-mnist`` (see
:mod:`nextclass.data.builtin`). Class names are sorted naturally (``2`` before ``10``).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..utils import natural_key, sha1_of
from .decode import IMAGE_EXTENSIONS

__all__ = ["Sample", "DataSource", "load_source", "SPLIT_ALIASES", "DataError"]

#: Folder names accepted for each split.
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}


class DataError(ValueError):
    """The data cannot be used as given; the message says why and what was expected."""


@dataclass
class Sample:
    """One labelled image: a file path, or a row of the source's in-memory array."""

    path: str
    label: int
    split: str | None = None  # from the layout or manifest; None until data.splits assigns one
    index: int | None = None  # row in DataSource.array for array-backed sets


@dataclass
class DataSource:
    """Everything known about a dataset before decoding."""

    name: str
    root: str
    kind: str  # folder | split-folder | csv | digits | fashion-mnist
    classes: list[str]
    samples: list[Sample]
    array: np.ndarray | None = field(default=None, repr=False)  # (N,H,W[,C]) uint8 if array-backed

    @property
    def has_splits(self) -> bool:
        return any(s.split for s in self.samples)

    def fingerprint(self, samples: list[Sample] | None = None) -> str:
        """Cheap identity of the data: paths, labels, sizes and mtimes (content for arrays)."""
        rows = []
        for s in samples if samples is not None else self.samples:
            if s.index is not None and self.array is not None:
                rows.append((s.path, s.label))
            else:
                try:
                    st = os.stat(s.path)
                    rows.append((s.path, s.label, st.st_size, st.st_mtime_ns))
                except OSError:
                    rows.append((s.path, s.label, -1, -1))
        if self.array is not None:
            rows.append(("array", self.array.shape, sha1_of([self.array[:: max(1, len(self.array) // 64)].tobytes()])))
        return sha1_of(rows)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class: ``{split: {class: n}}``."""
        out: dict[str, dict[str, int]] = {}
        for s in self.samples:
            d = out.setdefault(s.split or "all", {c: 0 for c in self.classes})
            d[self.classes[s.label]] += 1
        return out


def _list_images(folder: Path) -> list[Path]:
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(files, key=lambda p: natural_key(str(p)))


def _class_dirs(folder: Path) -> list[Path]:
    return sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: natural_key(d.name))


def _from_folder(root: Path) -> DataSource:
    subdirs = _class_dirs(root)
    split_dirs = {SPLIT_ALIASES[d.name.lower()]: d for d in subdirs if d.name.lower() in SPLIT_ALIASES}
    if "train" in split_dirs and len(split_dirs) >= 2:
        classes = sorted({c.name for d in split_dirs.values() for c in _class_dirs(d)}, key=natural_key)
        if not classes:
            raise DataError(f"{root}: split folders {sorted(split_dirs)} hold no class folders")
        index = {c: i for i, c in enumerate(classes)}
        samples = [Sample(str(p.resolve()), index[c.name], split)
                   for split, d in split_dirs.items() for c in _class_dirs(d) for p in _list_images(c)]
        kind = "split-folder"
    else:
        classes = [d.name for d in subdirs]
        if len(classes) < 2:
            raise DataError(
                f"{root}: expected one folder per class (root/<class>/*.jpg) or split folders "
                f"(root/train/<class>/...), found {len(classes)} class folder(s)")
        samples = [Sample(str(p.resolve()), i, None) for i, d in enumerate(subdirs) for p in _list_images(d)]
        kind = "folder"
    if not samples:
        raise DataError(f"{root}: no image files found (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return DataSource(root.name, str(root.resolve()), kind, classes, samples)


def _from_csv(path: Path) -> DataSource:
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


def load_source(spec: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                download: bool = False) -> DataSource:
    """Resolve a data spec to a :class:`DataSource`.

    Args:
        spec: a folder, a ``.csv`` manifest, ``digits``, or ``fashion-mnist[:DIR]``.
        cache_dir: where built-ins are materialised (default: the user cache).
        download: allow ``fashion-mnist`` to be downloaded when its files are absent.

    Example:
        >>> src = load_source("digits")  # doctest: +SKIP
        >>> src.classes[:3]
        ['0', '1', '2']
    """
    from . import builtin

    s = str(spec)
    name = s.split(":", 1)[0].lower()
    if name in builtin.BUILTINS and not Path(s).exists():
        arg = s.split(":", 1)[1] if ":" in s else None
        return builtin.BUILTINS[name](arg, cache_dir=cache_dir, download=download)
    p = Path(s).expanduser()
    if not p.exists():
        raise DataError(f"{s}: no such folder or file; give a folder, a .csv manifest, or one of "
                        f"{', '.join(sorted(builtin.BUILTINS))}")
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise DataError(f"{s}: a data file must be a .csv manifest (path,label[,split])")
        return _from_csv(p)
    return _from_folder(p)
