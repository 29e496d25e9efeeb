"""Is a near-duplicate candidate really the same picture? A pixel check at the images' own resolution.

Perceptual hashes and 16x16 thumbnails find *candidates*; on small, similar-looking images (28-px
garments shot the same way, faces, sandals on a white background) thousands of different pictures
pass them. This module decides, pair by pair, whether two images are the same picture re-encoded,
resized or slightly cropped:

1. both 32x32 luma fingerprints are resampled to ``s`` = the smaller image's own side (at most 32,
   at least 8): small images are compared at their own pixels, large ones at 32 px, where a crop of
   about 1 % per side moves content by a third of a pixel;
2. both are blurred with a Gaussian of ``sigma`` = 0.7 px at that scale, so the softening that
   resizing and JPEG add does not count, while an outline or a print that differs by a pixel does;
   as a resized copy is softer than its original, each side is also tried blurred 1.4x and 2x more
   and the best match counts;
3. the difference is taken pixel by pixel, except that when both originals are at least twice the
   comparison size a shift of up to half a pixel is forgiven (crops): each image must lie within the
   local envelope (min..max) of the other's half-pixel-shifted copies. Images compared at their own
   resolution get no slack: a true copy of a small image is not shifted;
4. the outer ring of pixels is ignored (a crop changes it), the difference is averaged over blocks of
   ``round(s / 14)`` px (a real difference covers a few pixels, noise does not), and the worst block
   is divided by the images' contrast (the larger standard deviation, at least 8 grey levels).

A pair is the same picture when that score is at most ``tolerance`` (default 0.2). Measured
(docs/audit.md): Fashion-MNIST copies re-encoded at JPEG q50-75, resized 1.5x or 0.7x pass 95-100 %;
photos resized, re-encoded or cropped 1 % per side pass; different garments that hashes call near
fail.
"""

from __future__ import annotations

import numpy as np

from nextclass.data.hashing import _lanczos_matrix, _sandwich

__all__ = ["same_picture_scores", "PICTURE_TOLERANCE", "BLUR_SIGMA"]

PICTURE_TOLERANCE = 0.2  # worst block difference / contrast; measured in docs/audit.md
BLUR_SIGMA = 0.7  # px at the comparison size: absorbs resampling and JPEG softening
# Extra blur (x sigma) tried on either side: a bilinear round trip 28 -> 40 -> 28 px matched best at
# 1.4x, two resamplings more at 2x; a fixed larger blur on both would also hide real differences.
SOFTER = (1.4, 2.0)
CONTRAST_FLOOR = 8.0  # grey levels: flat images are compared in absolute terms
_CHUNK = 2048  # pairs per vectorised step (bounds memory: 9 shifted copies of 32x32 float32 each)
_VARIANT_BYTES = 1 << 29  # the blurred copies made at once (512 MiB: ~55k images at 28 px); more pairs: in parts


def _resample(s: int, sigma: float) -> np.ndarray:
    """(s, 32) matrix: Lanczos from 32 to ``s`` px, then a Gaussian blur of ``sigma`` px (0: none)."""
    m = _lanczos_matrix(32, s) if s < 32 else np.eye(32)
    if sigma > 0:
        x = np.arange(s)
        g = np.exp(-0.5 * ((x[:, None] - x[None, :]) / sigma) ** 2)
        m = (g / g.sum(axis=1, keepdims=True)) @ m
    return m.astype(np.float32)


def _envelope(x: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise min and max of ``x`` moved by ``shift`` px (0..0.5, per pair) in the 8 directions and not."""
    n, h, w = x.shape
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    f = shift.reshape(-1, 1, 1).astype(np.float32)
    lo, hi = x.copy(), x.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                moved = (1 - f) * x + f * p[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                np.minimum(lo, moved, out=lo)
                np.maximum(hi, moved, out=hi)
    return lo, hi


def _worst_block(d: np.ndarray, k: int) -> np.ndarray:
    """Largest mean of ``d`` over any k x k block, per image (summed-area table)."""
    if k <= 1:
        return d.reshape(len(d), -1).max(axis=1)
    c = np.pad(d, ((0, 0), (1, 0), (1, 0))).cumsum(axis=1).cumsum(axis=2)
    s = c[:, k:, k:] - c[:, :-k, k:] - c[:, k:, :-k] + c[:, :-k, :-k]
    return s.reshape(len(d), -1).max(axis=1) / (k * k)


def _difference(a: np.ndarray, b: np.ndarray, shift: np.ndarray, s: int) -> np.ndarray:
    """Worst block of the pointwise difference, each image against the other's shifted envelope."""
    if not shift.any():  # compared at their own resolution: no slack, a plain difference
        d = np.abs(a - b)
    else:
        lo_b, hi_b = _envelope(b, shift)
        lo_a, hi_a = _envelope(a, shift)
        d = np.maximum(np.maximum(a - hi_b, lo_b - a), np.maximum(b - hi_a, lo_a - b)).clip(min=0)
    if s >= 16:  # a crop changes the outer ring: judge the inside
        d = d[:, 1:-1, 1:-1]
    return _worst_block(d, max(1, round(s / 14)))


def _variants(gray: np.ndarray, s: int, sigma: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per image at comparison size ``s``: its contrast (std of the plain resample, floored) and its blurred
    copies, at ``sigma`` first, then at each ``SOFTER`` factor. Computed once per image, however many candidate
    pairs it is in (on images that all look alike, one image is in dozens)."""
    g = gray.astype(np.float32)
    contrast = np.maximum(_sandwich(g, _resample(s, 0.0)).reshape(len(g), -1).std(axis=1), CONTRAST_FLOOR)
    return contrast, [_sandwich(g, _resample(s, sigma * f)) for f in (1.0, *SOFTER)]


def _scores_at(va: tuple, vb: tuple, s: int, shift: np.ndarray) -> np.ndarray:
    """Scores for pairs compared at one size ``s``, from each side's :func:`_variants` (rows = pairs).

    A resized copy is softer than its original (each resampling blurs), so besides the same blur on
    both, each side in turn is blurred more (``SOFTER`` x sigma) and the best match counts.
    """
    (ca, (a, *soft_a)), (cb, (b, *soft_b)) = va, vb
    worst = _difference(a, b, shift, s)
    for sa, sb in zip(soft_a, soft_b):
        np.minimum(worst, _difference(sa, b, shift, s), out=worst)
        np.minimum(worst, _difference(a, sb, shift, s), out=worst)
    return worst / np.maximum(ca, cb)


def _pick(v: tuple, rows: np.ndarray) -> tuple:
    return v[0][rows], [x[rows] for x in v[1]]


def same_picture_scores(gray: np.ndarray, sides: np.ndarray, i: np.ndarray, j: np.ndarray, *,
                        sigma: float = BLUR_SIGMA) -> np.ndarray:
    """How different images ``i[k]`` and ``j[k]`` are, in units of their contrast (0: identical).

    Args:
        gray: (N, 32, 32) uint8 luma fingerprints (:attr:`Fingerprints.gray`).
        sides: (N,) shorter side of each original image in pixels (0: unknown, taken as 32).
        i, j: the candidate pairs (indices into ``gray``).
        sigma: blur at the comparison size, px.

    Returns:
        (len(i),) float scores; ``score <= PICTURE_TOLERANCE`` means the same picture.

    Example:
        >>> g = np.random.default_rng(0).integers(0, 255, (2, 32, 32)).astype(np.uint8)
        >>> g[1] = g[0]
        >>> same_picture_scores(g, np.array([32, 32]), np.array([0]), np.array([1])).tolist()
        [0.0]
    """
    i, j = np.asarray(i, np.int64), np.asarray(j, np.int64)
    side = np.where(np.asarray(sides) > 0, sides, 32).astype(np.float64)
    small = np.minimum(side[i], side[j])
    s_pair = np.clip(small, 8, 32).astype(np.int64)
    # slack for crops only when both originals are >= 2x the comparison size (0 at 1x, 0.5 px from 2x)
    shift = np.clip(0.5 * (small / s_pair - 1.0), 0.0, 0.5)
    out = np.zeros(len(i), np.float64)
    for s in np.unique(s_pair):
        at = np.flatnonzero(s_pair == s)
        per_image = 4 * s * s * (1 + len(SOFTER))
        n_images = len(np.unique(np.concatenate([i[at], j[at]])))
        for part in np.array_split(at, -(-n_images * per_image // _VARIANT_BYTES)):  # bounds the variants' memory
            if not len(part):
                continue
            images, pos = np.unique(np.concatenate([i[part], j[part]]), return_inverse=True)
            v = _variants(gray[images], int(s), sigma)
            ia, jb = pos[:len(part)], pos[len(part):]
            for k in range(0, len(part), _CHUNK):
                sl = slice(k, k + _CHUNK)
                out[part[sl]] = _scores_at(_pick(v, ia[sl]), _pick(v, jb[sl]), int(s), shift[part[sl]])
    return out
