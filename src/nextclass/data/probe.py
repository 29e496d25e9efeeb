"""The data probe: image size, channels and count of a dataset, read from a few file headers.

Everything that chooses for the user from the data (the training defaults' model, input size and
channels; the curation embedding) asks :func:`probe_data`, so they all see the same numbers and one
definition of grayscale (:func:`is_gray_mode`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nextclass.data.samples import DataSource

__all__ = ["DataProbe", "probe_data", "is_gray_mode", "PROBE_IMAGES", "FALLBACK_SIDE"]

PROBE_IMAGES = 64  # file headers read (evenly spaced over the samples): opening a header costs ~0.1 ms
FALLBACK_SIDE = 32  # the side reported when no probed file could be opened (decoding will then say why)


@dataclass(frozen=True)
class DataProbe:
    """What the probe saw.

    Attributes:
        side: median shorter side of the probed images, in pixels.
        channels: 1 when every probed image is grayscale (:func:`is_gray_mode`), else 3.
        count: images in the source (all of them, not only the probed ones).
        probed: images whose header was read; 0 means none could be opened and ``side`` is the fallback.
    """

    side: int
    channels: int
    count: int
    probed: int

    @property
    def gray(self) -> bool:
        return self.channels == 1


def is_gray_mode(mode: str) -> bool:
    """Whether a PIL mode stores one luma band: ``1``, ``L``, ``LA``, ``La``, ``I``, ``I;16*`` and ``F``.

    This is the one definition of grayscale in nextclass: PIL's base mode of the image is ``L``, so an
    alpha band does not make an image colour (decoding composites it on white) and 16-bit / float scans
    are gray. Palette (``P``) and every three-band mode count as colour, even when the pixels happen to be
    gray: the probe reads headers, not pixels.

    Example:
        >>> [m for m in ("1", "L", "LA", "I;16", "F", "P", "RGB", "RGBA") if is_gray_mode(m)]
        ['1', 'L', 'LA', 'I;16', 'F']
    """
    from PIL import ImageMode

    try:
        return ImageMode.getmode(mode).basemode == "L"
    except KeyError:  # a mode PIL does not know: not something we call gray
        return False


def _array_probe(a: np.ndarray, count: int) -> DataProbe:
    """An in-memory ``(N, H, W[, C])`` uint8 set: every image has the array's size; gray without a colour axis."""
    gray = a.ndim == 3 or a.shape[-1] == 1
    return DataProbe(side=int(min(a.shape[1], a.shape[2])), channels=1 if gray else 3, count=count, probed=len(a))


def probe_data(source: DataSource, n: int = PROBE_IMAGES) -> DataProbe:
    """Probe up to ``n`` evenly spaced images of ``source`` (all of an in-memory array) from their headers.

    Unreadable files are skipped here: reporting them is the decode step's job (``skipped.csv``).

    Example:
        >>> p = probe_data(load_source("digits"))  # doctest: +SKIP
        >>> p.side, p.channels, p.count            # doctest: +SKIP
        (8, 1, 1797)
    """
    from PIL import Image

    if source.array is not None:
        return _array_probe(source.array, len(source.samples))
    sides, gray = [], True
    for s in source.samples[:: max(1, len(source.samples) // n)][:n]:
        try:
            with Image.open(s.path) as im:
                sides.append(min(im.size))
                gray = gray and is_gray_mode(im.mode)
        except Exception:  # noqa: BLE001 - unreadable files are the decode step's business
            continue
    side = int(np.median(sides)) if sides else FALLBACK_SIDE
    return DataProbe(side=side, channels=1 if gray and sides else 3, count=len(source.samples), probed=len(sides))
