"""Multi-label datasets (issue 26): the CSV manifest, task detection, the multi-hot matrix and label statistics.

A multi-label manifest is a CSV with a header ``path,labels[,split]``: the ``labels`` cell holds the image's labels
separated by ``;`` (``cat;dog``), an empty cell means the image has none of the labels (a true negative for all of
them, not a missing value). Whitespace around a label is trimmed, a label repeated in one cell counts once, empty
pieces (``cat;;dog``, a trailing ``;``) are ignored, and the vocabulary is every label seen, sorted naturally
(:func:`nextclass.utils.natural_key`, as class folders are). A bad row raises :class:`DataError` naming the file,
the line and the column, as the single-label manifest (:func:`nextclass.data.folders.from_csv`) does.

The task is detected from the data (:func:`detect_task`): a ``labels`` column, a ``;`` in a label cell, or a Hugging
Face column whose feature is a sequence of ``ClassLabel``. ``--task`` overrides it (:func:`check_task`,
:func:`resolve_task`).

Integration (a later session): ``data.sources.load_source`` calls :func:`detect_csv_task` on a ``.csv`` (and
:func:`detect_task` on a Hugging Face dataset's ``features``), logs the ``why``, and for ``multi-label`` builds a
multi-label :class:`~nextclass.data.samples.DataSource` (``task="multi-label"``, ``Sample.labels``) with
:func:`read_multilabel_csv`; ``data.audit`` adds :func:`label_stats` and
:func:`conflicting_sets` (over its duplicate groups); splits come from
:func:`nextclass.data.multilabel_splits.assign_multilabel_splits`.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nextclass.utils import natural_key
from nextclass.data.samples import SPLIT_ALIASES, DataError, DataSource, Sample

__all__ = ["SEPARATOR", "TASKS", "split_labels", "read_multilabel_csv",
           "detect_task", "detect_csv_task", "check_task", "resolve_task", "multi_hot", "set_ids", "label_counts",
           "cooccurrence", "unlabelled", "label_stats", "conflicting_sets"]

SEPARATOR = ";"
TASKS = ("single-label", "multi-label")
_TASK_ALIASES = {"auto": "auto", "single-label": "single-label", "single": "single-label",
                 "singlelabel": "single-label", "single_label": "single-label", "multi-label": "multi-label",
                 "multi": "multi-label", "multilabel": "multi-label", "multi_label": "multi-label"}


def split_labels(cell: str | None, where: str = "labels") -> list[str]:
    """The labels of one cell: split on ``;``, trimmed, empty pieces dropped, repeats collapsed (first order kept).

    Raises:
        DataError: a label holding ``,`` (the wrong separator, in a quoted cell); ``where`` starts the message.

    Example:
        >>> split_labels(" cat ; dog;cat;; "), split_labels("")
        (['cat', 'dog'], [])
    """
    out: list[str] = []
    for piece in (cell or "").split(SEPARATOR):
        name = piece.strip()
        if "," in name:
            raise DataError(f"{where}: {name!r} holds ','; separate labels with ';' (e.g. \"cat;dog\")")
        if name and name not in out:
            out.append(name)
    return out


def _header(path: Path, header: list[str] | None, column: str | None) -> tuple[list[str], str]:
    cols = [c.strip().lower() for c in header or []]
    label_col = column or ("labels" if "labels" in cols else "label")
    if "path" not in cols or label_col not in cols:
        raise DataError(f"{path}: a multi-label manifest needs a header with 'path' and 'labels' (labels separated "
                        f"by ';', optional 'split'), got {cols}")
    return cols, label_col


def _row(path: Path, line: int, fields: list[str], cols: list[str], label_col: str) -> tuple[str, list[str], str | None]:
    """(image path as written, label names, canonical split) of one manifest row."""
    if len(fields) != len(cols):
        what = f"column {cols[len(fields)]!r} is missing" if len(fields) < len(cols) else \
            f"{len(fields) - len(cols)} field(s) beyond the last column {cols[-1]!r}"
        raise DataError(f"{path}:{line}: {len(fields)} fields for {len(cols)} columns ({','.join(cols)}): {what}")
    row = {c: f.strip() for c, f in zip(cols, fields)}
    if not row["path"]:
        raise DataError(f"{path}:{line}: column 'path' is empty")
    names = split_labels(row[label_col], f"{path}:{line}: column {label_col!r}")
    split = row.get("split") or None
    if split is not None:
        if split.lower() not in SPLIT_ALIASES:
            raise DataError(f"{path}:{line}: column 'split': unknown split {split!r}; use train, val or test")
        split = SPLIT_ALIASES[split.lower()]
    return row["path"], names, split


def read_multilabel_csv(path: str | Path, column: str | None = None) -> DataSource:
    """A multi-label :class:`~nextclass.data.samples.DataSource` from a ``path,labels[,split]`` manifest (see the module docstring).

    Args:
        column: the label column (default ``labels``, else ``label``: a ``label`` column with ``;`` in its cells).

    Raises:
        DataError: no header or no rows, a missing column, a row with the wrong number of fields, an empty path, an
            unknown split, a split on some rows only, or no label at all; the message names the line and column.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.csv"
        >>> _ = p.write_text("path,labels\\na.png,dog;cat\\nb.png,\\n")
        >>> src = read_multilabel_csv(p)
        >>> src.classes, [s.labels for s in src.samples]
        (['cat', 'dog'], [(0, 1), ()])
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        cols, label_col = _header(path, next(reader, None), column)
        rows = [(reader.line_num, *_row(path, reader.line_num, fields, cols, label_col))
                for fields in reader if any(x.strip() for x in fields)]
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    classes = sorted({n for r in rows for n in r[2]}, key=natural_key)
    if not classes:
        raise DataError(f"{path}: no row has a label in column {label_col!r} (labels separated by ';')")
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for line, p, names, split in rows:
        q = Path(p) if Path(p).is_absolute() else path.parent / p
        samples.append(Sample(str(q.resolve()), -1, split, labels=tuple(sorted(index[n] for n in names))))
    if any(s.split for s in samples) and not all(s.split for s in samples):
        line = next(r[0] for r, s in zip(rows, samples) if not s.split)
        raise DataError(f"{path}:{line}: column 'split' is empty; fill it on every row or on none")
    return DataSource(path.stem, str(path.parent.resolve()), "csv-multilabel", classes, samples, task="multi-label")


def _is_classlabel(feature: Any) -> bool:
    if isinstance(feature, Mapping):
        return feature.get("_type") == "ClassLabel"
    return type(feature).__name__ == "ClassLabel"


def _sequence_of_classlabel(feature: Any) -> bool:
    """A ``Sequence``/``List`` of ``ClassLabel``: as ``features.to_dict()`` writes it, as ``[ClassLabel]``, or the
    ``datasets`` objects themselves (checked by name: no import of ``datasets`` here)."""
    if isinstance(feature, Mapping):
        return feature.get("_type") in ("Sequence", "List", "LargeList") and _is_classlabel(feature.get("feature"))
    if isinstance(feature, (list, tuple)):
        return len(feature) == 1 and _is_classlabel(feature[0])
    return type(feature).__name__ in ("Sequence", "List", "LargeList") and _is_classlabel(getattr(feature, "feature", None))


def _label_cells(header: list[str], rows) -> tuple[str | None, list]:
    cols = [str(c).strip().lower() for c in header]
    col = "label" if "label" in cols else None
    if col is None:
        return None, []
    k = cols.index(col)
    cells = [(r.get(header[k], r.get(col)) if isinstance(r, Mapping) else (r[k] if k < len(r) else None)) for r in rows]
    return col, cells


def detect_task(header, rows=()) -> tuple[str, str]:
    """``("single-label" | "multi-label", why)`` from a manifest's header and rows, or a Hugging Face ``features``.

    Args:
        header: the column names of a manifest, or a mapping column -> feature (``datasets.Features`` or its
            ``to_dict()``): multi-label when a column is a sequence of ``ClassLabel``.
        rows: the manifest's rows (dicts by column, or lists aligned with ``header``): multi-label when a ``label``
            cell holds ``;``.

    Example:
        >>> detect_task(["path", "labels"])[0], detect_task(["path", "label"], [["a.png", "cat;dog"]])[0]
        ('multi-label', 'multi-label')
        >>> detect_task({"labels": {"_type": "List", "feature": {"_type": "ClassLabel", "names": ["a"]}}})
        ('multi-label', "column 'labels' is a sequence of ClassLabel")
    """
    if isinstance(header, Mapping):
        for name, feature in header.items():
            if _sequence_of_classlabel(feature):
                return "multi-label", f"column {name!r} is a sequence of ClassLabel"
        return "single-label", "no column is a sequence of ClassLabel"
    cols = [str(c).strip().lower() for c in header]
    if "labels" in cols:
        return "multi-label", "the manifest has a 'labels' column"
    col, cells = _label_cells(list(header), rows)
    for i, cell in enumerate(cells):
        if cell is not None and SEPARATOR in str(cell):
            return "multi-label", f"row {i + 1}: the {col!r} cell {str(cell)!r} holds several labels separated by ';'"
    return "single-label", "one label per row (no 'labels' column, no ';' in a label cell)"


def detect_csv_task(path: str | Path) -> tuple[str, str]:
    """:func:`detect_task` on a manifest file (its header and every row)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None) or []
        return detect_task(header, list(reader))


def check_task(value: str | None) -> str:
    """A ``--task`` value as ``auto``, ``single-label`` or ``multi-label`` (None: auto); ValueError otherwise.

    Example:
        >>> check_task("multilabel"), check_task(None)
        ('multi-label', 'auto')
    """
    key = "auto" if value is None else str(value).strip().lower()
    if key not in _TASK_ALIASES:
        raise ValueError(f"task {value!r}: use auto, single-label or multi-label")
    return _TASK_ALIASES[key]


def resolve_task(override: str | None, detected: tuple[str, str]) -> tuple[str, str]:
    """The task to run and why: the detected one, or ``--task`` when given (saying when it differs).

    Example:
        >>> resolve_task("multi-label", ("single-label", "one label per row"))
        ('multi-label', '--task multi-label (the data looked single-label: one label per row)')
    """
    task = check_task(override)
    if task == "auto":
        return detected
    if task == detected[0]:
        return task, f"--task {task} (as detected: {detected[1]})"
    return task, f"--task {task} (the data looked {detected[0]}: {detected[1]})"


def multi_hot(label_sets, n_labels: int) -> np.ndarray:
    """The (N, L) uint8 matrix with a 1 where image i has label j.

    Example:
        >>> multi_hot([(0, 2), ()], 3).tolist()
        [[1, 0, 1], [0, 0, 0]]
    """
    y = np.zeros((len(label_sets), int(n_labels)), np.uint8)
    for i, s in enumerate(label_sets):
        y[i, list(s)] = 1
    return y


def set_ids(labels: np.ndarray) -> np.ndarray:
    """One integer per image naming its label set: class indices pass through, a multi-hot matrix becomes the index
    of each row among its distinct rows (two images get the same id exactly when they carry the same labels), so
    checks written for class indices (1-NN agreement, label conflicts among duplicates) read label sets.

    Example:
        >>> set_ids(np.array([[1, 0], [0, 1], [1, 0]])).tolist(), set_ids(np.array([2, 0])).tolist()
        ([1, 0, 1], [2, 0])
    """
    y = np.asarray(labels)
    if y.ndim == 1:
        return y.astype(np.int64)
    if not len(y):
        return np.zeros(0, np.int64)
    return np.unique(y, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def label_counts(y: np.ndarray, classes: list[str]) -> dict[str, int]:
    """Images per label.

    Example:
        >>> label_counts(np.array([[1, 0], [1, 1]]), ["a", "b"])
        {'a': 2, 'b': 1}
    """
    return {c: int(v) for c, v in zip(classes, np.asarray(y).sum(axis=0))}


def cooccurrence(y: np.ndarray) -> np.ndarray:
    """(L, L) counts of images carrying both labels (the diagonal: images per label).

    Example:
        >>> cooccurrence(np.array([[1, 1], [1, 0]])).tolist()
        [[2, 1], [1, 1]]
    """
    y = np.asarray(y, np.int64)
    return y.T @ y


def unlabelled(y: np.ndarray) -> np.ndarray:
    """Row indices of the images with no label."""
    return np.flatnonzero(np.asarray(y).sum(axis=1) == 0)


def label_stats(y: np.ndarray, classes: list[str], top: int = 10) -> dict:
    """The audit's JSON-ready block: images, label cardinality and density, per-label counts (rarest first), the
    ``top`` most frequent label pairs, and the images with no label.

    Example:
        >>> s = label_stats(np.array([[1, 1], [1, 0], [0, 0]]), ["a", "b"])
        >>> s["cardinality"], s["no_label"], s["pairs"]
        (1.0, 1, [{'labels': ['a', 'b'], 'images': 1}])
    """
    y = np.asarray(y, np.int64)
    n = len(y)
    co = cooccurrence(y)
    iu = np.triu_indices(len(classes), 1)
    order = np.argsort(-co[iu], kind="stable")[:top]
    pairs = [{"labels": [classes[iu[0][k]], classes[iu[1][k]]], "images": int(co[iu][k])}
             for k in order if co[iu][k] > 0]
    counts = label_counts(y, classes)
    return {"images": int(n), "labels": len(classes),
            "cardinality": round(float(y.sum(1).mean()), 6) if n else None,
            "density": round(float(y.mean()), 6) if n and len(classes) else None,
            "counts": dict(sorted(counts.items(), key=lambda kv: (kv[1], natural_key(kv[0])))),
            "pairs": pairs, "no_label": int(len(unlabelled(y))) if n else 0,
            "cooccurrence": co.tolist()}


def conflicting_sets(groups, label_sets) -> list[dict]:
    """Groups of duplicate images (index lists, e.g. the audit's exact/near duplicate groups) whose label sets
    differ: the same picture labelled two ways is a labelling mistake in one of them.

    Example:
        >>> conflicting_sets([[0, 1], [2, 3]], [(0,), (0, 1), (2,), (2,)])
        [{'images': [0, 1], 'sets': [[0], [0, 1]]}]
    """
    out = []
    for g in groups:
        sets = sorted({tuple(sorted(label_sets[i])) for i in g})
        if len(sets) > 1:
            out.append({"images": [int(i) for i in g], "sets": [list(s) for s in sets]})
    return out
