"""Does a mirror image keep its class? The data decides ``hflip: auto``.

Horizontal flips are the most common augmentation and they double as a test-time view, but for digits, letters
and anything whose class has a handedness a mirror image is not a sample of its class (measured: on digits
``--no-hflip`` gave 0.9937 test accuracy against 0.9840 with flips, docs/speed.md). The check asks the data:

* a 1-nearest-neighbour classifier on small grey thumbnails (16 x 16, each standardised), fitted on half of up to
  :data:`CHECK_IMAGES` training images, labels the other half as they are and mirrored;
* ``kept`` = (accuracy on mirrored queries - chance) / (accuracy on the queries as they are - chance): how much of
  what the neighbours know about a class survives the mirror (1: mirrors look like their class; 0 or below: they
  look like another class or like nothing);
* flips stay on when ``kept`` >= :data:`KEEP_THRESHOLD`, and when the check cannot tell (the plain 1-NN barely
  beats chance, so nothing can be compared): the common default.

Measured with this check (bench/RESULTS.md): digits 0.26, letters (rendered, b/d/p/q...) well below, arrows
pointing left/right below 0, Fashion-MNIST 0.69, photo-like composites near 1. The threshold sits between the
two groups; the number and the decision are logged and saved with the run. The verdict is kept under
``<cache_dir>/mirror/`` by the decoded pixels' cache key, the rows, labels and seed (:func:`kept_mirror_check`): a
rerun on the same data reads it back instead of spending ~1.5 s on 2,000 thumbnails again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nextclass.utils import atomic_write_json, sha1_of

__all__ = ["mirror_check", "kept_mirror_check", "MirrorCheck", "KEEP_THRESHOLD", "CHECK_IMAGES"]

CHECK_IMAGES = 2000  # training images the check looks at (a seeded random subset above it)
KEEP_THRESHOLD = 0.5  # flips on when mirrors keep at least half of the above-chance 1-NN accuracy
MIN_SIGNAL = 0.1  # plain 1-NN accuracy must beat chance by this much for the comparison to mean anything
SIDE = 16


@dataclass(frozen=True)
class MirrorCheck:
    """The check's numbers and its verdict."""

    hflip: bool
    kept: float | None  # None: inconclusive
    plain: float  # 1-NN accuracy of the held-out half as it is
    mirrored: float  # ... and mirrored
    chance: float
    n: int

    @property
    def why(self) -> str:
        if self.kept is None:
            return (f"mirror check inconclusive: 1-NN on thumbnails {self.plain:.2f} vs chance {self.chance:.2f} on "
                    f"{self.n} images; flips kept (the usual default)")
        verdict = "mirror images look like their class" if self.hflip else "mirror images do not look like their class"
        return (f"{verdict}: a nearest-neighbour check keeps {self.kept:.0%} of its above-chance accuracy on mirrored "
                f"images ({self.mirrored:.2f} vs {self.plain:.2f}, chance {self.chance:.2f}, {self.n} images; flips "
                f"{'on' if self.hflip else 'off'} at >= {KEEP_THRESHOLD:.0%})")


def _thumbs(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(N, SIDE*SIDE) standardised grey thumbnails of ``array[rows]`` (uint8 N x S x S x C)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(array[rows])).float().mean(dim=3, keepdim=True).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(SIDE, SIDE), mode="area").flatten(1).numpy()
    x -= x.mean(axis=1, keepdims=True)
    return x / (x.std(axis=1, keepdims=True) + 1e-6)


def _one_nn(ref: np.ndarray, ref_y: np.ndarray, q: np.ndarray) -> np.ndarray:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=1).fit(ref, ref_y).predict(q)


def mirror_check(array: np.ndarray, rows: np.ndarray, labels: np.ndarray, seed: int = 0) -> MirrorCheck:
    """Whether horizontal flips keep the class, decided from training images (see the module docstring).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> arrows = np.zeros((200, 16, 16, 1), np.uint8); y = np.arange(200) % 2
        >>> for i in range(200): arrows[i, 6:10, (2 if y[i] else 8):(8 if y[i] else 14)] = 255
        >>> mirror_check(arrows, np.arange(200), y).hflip
        False
    """
    rows, labels = np.asarray(rows), np.asarray(labels)
    pick = np.random.default_rng(seed).permutation(len(rows))[:CHECK_IMAGES]
    half = len(pick) // 2
    x = _thumbs(array, rows[pick])
    y = labels[pick]
    ref, ref_y, q, q_y = x[:half], y[:half], x[half:], y[half:]
    mirrored = q.reshape(-1, SIDE, SIDE)[:, :, ::-1].reshape(len(q), -1)
    plain = float((_one_nn(ref, ref_y, q) == q_y).mean()) if len(q) else 0.0
    mirr = float((_one_nn(ref, ref_y, mirrored) == q_y).mean()) if len(q) else 0.0
    chance = float(np.bincount(y).max() / max(len(y), 1))
    if plain - chance < MIN_SIGNAL or len(q) < 10:
        return MirrorCheck(True, None, plain, mirr, chance, len(pick))
    kept = (mirr - chance) / (plain - chance)
    return MirrorCheck(kept >= KEEP_THRESHOLD, float(kept), plain, mirr, chance, len(pick))


def kept_mirror_check(array: np.ndarray, rows: np.ndarray, labels: np.ndarray, seed: int, key: str,
                      cache_dir: str | Path | None) -> MirrorCheck:
    """:func:`mirror_check`, kept under ``cache_dir/mirror/`` by the decoded pixels' cache ``key`` with the rows,
    labels, seed and the check's settings (no ``key`` or ``cache_dir``: computed every time; a damaged file: again)."""
    if not key or cache_dir is None:
        return mirror_check(array, rows, labels, seed)
    digest = sha1_of([key, np.asarray(rows, np.int64).tobytes(), np.asarray(labels, np.int64).tobytes(), seed,
                      CHECK_IMAGES, KEEP_THRESHOLD, MIN_SIGNAL, SIDE])
    path = Path(cache_dir) / "mirror" / f"{digest}.json"
    try:
        return MirrorCheck(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        check = mirror_check(array, rows, labels, seed)
        atomic_write_json(path, asdict(check))
        return check
