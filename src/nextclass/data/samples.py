"""What a dataset is before decoding: :class:`Sample`, :class:`DataSource` and :class:`DataError`.

The types every data module shares (sources, built-ins, splits, cache, audit); they import nothing
else of nextclass but :mod:`nextclass.utils`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from nextclass.utils import log, sha1_of

__all__ = ["Sample", "DataSource", "DataError", "SPLIT_ALIASES", "log_carved"]

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
    label: int  # the class index; -1 in a multi-label source (whose labels are in ``labels``)
    split: str | None = None  # from the layout or manifest; None until data.splits assigns one
    index: int | None = None  # row in DataSource.array for array-backed sets
    labels: tuple[int, ...] | None = None  # multi-label: the indices of the image's labels (sorted; () = none)


@dataclass
class DataSource:
    """Everything known about a dataset before decoding."""

    name: str
    root: str
    kind: str  # folder | split-folder | csv | digits | fashion-mnist
    classes: list[str]
    samples: list[Sample]
    array: np.ndarray | None = field(default=None, repr=False)  # (N,H,W[,C]) uint8 if array-backed
    task: str = "single-label"  # or "multi-label": every sample's labels are in Sample.labels, Sample.label is -1

    @property
    def has_splits(self) -> bool:
        return any(s.split for s in self.samples)

    @property
    def multilabel(self) -> bool:
        return self.task == "multi-label"

    def targets(self, samples: list[Sample] | None = None) -> np.ndarray:
        """The labels of ``samples`` (default: all) as training targets: class indices (N,) for a single-label
        source, the (N, L) 0/1 uint8 multi-hot matrix for a multi-label one."""
        samples = self.samples if samples is None else samples
        if not self.multilabel:
            return np.array([s.label for s in samples], dtype=np.int64)
        y = np.zeros((len(samples), len(self.classes)), np.uint8)
        for i, s in enumerate(samples):
            y[i, list(s.labels or ())] = 1
        return y

    def label_text(self, sample: Sample) -> str:
        """A sample's label(s) as written in a manifest: the class name, or the label names joined by ``;``."""
        if self.multilabel:
            return ";".join(self.classes[j] for j in sample.labels or ())
        return self.classes[sample.label]

    def fingerprint(self, samples: list[Sample] | None = None) -> str:
        """Cheap identity of the data: paths, labels, sizes and mtimes (content for arrays)."""
        rows = []
        for s in samples if samples is not None else self.samples:
            lab = s.labels if self.multilabel else s.label
            if s.index is not None and self.array is not None:
                rows.append((s.path, lab))
            else:
                try:
                    st = os.stat(s.path)
                    rows.append((s.path, lab, st.st_size, st.st_mtime_ns))
                except OSError:
                    rows.append((s.path, lab, -1, -1))
        if self.array is not None:
            rows.append(("array", self.array.shape, sha1_of([self.array[:: max(1, len(self.array) // 64)].tobytes()])))
        return sha1_of(rows)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class: ``{split: {class: n}}`` (multi-label: images carrying each label)."""
        out: dict[str, dict[str, int]] = {}
        for s in self.samples:
            d = out.setdefault(s.split or "all", {c: 0 for c in self.classes})
            for j in (s.labels or ()) if self.multilabel else (s.label,):
                d[self.classes[j]] += 1
        return out


def log_carved(name: str, missing: list[str], sub: np.ndarray, how: str) -> None:
    """Say which splits were carved from train, how many images each got, and how (``how``: method and seed)."""
    log(f"[yellow]NOTE[/]: {name} has no {' or '.join(missing)} split; carved "
        f"{', '.join(f'{m} ({int((sub == m).sum())} images)' for m in missing)} from train "
        f"({how}). Model selection uses val, never test.")
