"""What a dataset is before decoding: :class:`Sample`, :class:`DataSource` and :class:`DataError`.

The types every data module shares (sources, built-ins, splits, cache, audit); they import nothing
else of nextclass but :mod:`nextclass.utils`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from nextclass.utils import sha1_of

__all__ = ["Sample", "DataSource", "DataError", "SPLIT_ALIASES"]

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


