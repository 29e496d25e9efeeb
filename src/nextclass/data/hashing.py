"""Image fingerprints for the data audit: exact pixel hashes, perceptual hashes, tiny thumbnails,
and a near-duplicate search that never compares all pairs.

Three fingerprints per image, computed in one pass over the files:

* ``exact``: BLAKE2b-128 of the *decoded* RGB pixels and their shape, so a file saved again
  losslessly, converted PNG -> BMP, or copied under another name hashes the same.
* ``phash``: the 64-bit DCT perceptual hash of :func:`imagehash.phash` (luma resized to 32x32 with
  Lanczos, 2-D DCT, the 8x8 lowest frequencies compared with their median). Files go through
  ``imagehash.phash``'s exact preprocessing; in-memory arrays (built-ins, the decoded-image cache)
  go through :func:`phash_batch`, the same algorithm batched in numpy.
* ``gray``: the 32x32 luma image itself (uint8, 1 KiB per image), kept for the pixel check of
  :mod:`nextclass.data.same_picture`, which decides whether a candidate pair is the same picture;
* ``thumb``: the 16x16 luma thumbnail (2x2 means of ``gray``), a cheap filter on candidate pairs:
  on small, similar-looking images (Fashion-MNIST) the hash alone calls millions of pairs near.

:func:`near_pairs` finds every pair within ``threshold`` bits by multi-index hashing (Norouzi et al.,
"Fast search in Hamming space with multi-index hashing", CVPR 2012): the hash is cut into 4 bands of
16 bits; two hashes within ``threshold`` bits agree within ``threshold // 4`` bits on at least one
band (pigeonhole), so each band is probed at every key within that radius through a 65,536-bucket
table. The work grows with the number of candidates, not with the square of the dataset.
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import combinations
from typing import Callable

import numpy as np

__all__ = ["Fingerprints", "hash_files", "hash_arrays", "phash_batch", "gray32_batch", "near_pairs", "candidate_count",
           "exact_hash", "hash_one_file", "save_fingerprints", "load_fingerprints"]

_BANDS = 4  # 4 x 16-bit bands: direct bucket tables, and radius threshold // 4 per band
_CAND_CHUNK = 2_000_000  # candidate pairs materialised at once (bounds memory on clumpy hashes)


@dataclass
class Fingerprints:
    """Per-image fingerprints; row ``i`` belongs to the ``i``-th input. ``ok[i]`` is False if unreadable."""

    ok: np.ndarray  # (N,) bool
    exact: np.ndarray  # (N,) bytes16 ('S16')
    phash: np.ndarray  # (N,) uint64
    thumb: np.ndarray  # (N, 256) uint8
    gray: np.ndarray  # (N, 32, 32) uint8: the luma image the hash and thumbnail come from
    width: np.ndarray  # (N,) int32, 0 if unknown
    height: np.ndarray  # (N,) int32
    mode: list[str]
    fmt: list[str]
    errors: dict[int, str]


def save_fingerprints(path: str | os.PathLike, fp: Fingerprints) -> None:
    """Store fingerprints as a plain ``.npz`` (no pickle), atomically."""
    import json

    path = str(path)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, ok=fp.ok, exact=fp.exact, phash=fp.phash, thumb=fp.thumb, gray=fp.gray, width=fp.width,
             height=fp.height,
             mode=np.array(fp.mode, dtype=str), fmt=np.array(fp.fmt, dtype=str),
             errors=np.array(json.dumps({str(k): v for k, v in fp.errors.items()})))
    os.replace(tmp, path)


def load_fingerprints(path: str | os.PathLike) -> Fingerprints:
    """Read fingerprints written by :func:`save_fingerprints` (``allow_pickle=False``)."""
    import json

    with np.load(path, allow_pickle=False) as z:
        return Fingerprints(z["ok"], z["exact"], z["phash"], z["thumb"], z["gray"], z["width"], z["height"],
                            z["mode"].tolist(), z["fmt"].tolist(),
                            {int(k): v for k, v in json.loads(str(z["errors"])).items()})


def exact_hash(pixels: np.ndarray) -> bytes:
    """BLAKE2b-128 of a decoded uint8 image (its shape included)."""
    a = np.ascontiguousarray(pixels)
    h = hashlib.blake2b(repr(a.shape).encode(), digest_size=16)
    h.update(memoryview(a).cast("B"))
    return h.digest()


def _dct_rows() -> np.ndarray:
    """The 8 lowest rows of the unnormalised DCT-II on 32 points (scipy.fftpack.dct's default)."""
    n = np.arange(32)
    k = np.arange(8)[:, None]
    return (2.0 * np.cos(np.pi * k * (2 * n + 1) / 64.0)).astype(np.float64)


def _sandwich(a: np.ndarray, left: np.ndarray, right_t: np.ndarray | None = None) -> np.ndarray:
    """``left @ a[n] @ right_t.T`` for every n, as two large GEMMs (batched small matmuls are slow)."""
    right_t = left if right_t is None else right_t
    n, h, w = a.shape
    t = (a.reshape(n * h, w) @ right_t.T).reshape(n, h, -1)  # (n, h, k2)
    t = t.transpose(0, 2, 1).reshape(-1, h) @ left.T  # (n*k2, k1)
    return t.reshape(n, right_t.shape[0], left.shape[0]).transpose(0, 2, 1)


def phash_batch(gray32: np.ndarray) -> np.ndarray:
    """``imagehash.phash`` for a stack of 32x32 luma images -> uint64 (bit order of ``str(hash)``)."""
    low = _sandwich(gray32.astype(np.float64), _dct_rows()).reshape(len(gray32), 64)
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def _thumb16(gray32: np.ndarray) -> np.ndarray:
    g = gray32.astype(np.float32).reshape(-1, 16, 2, 16, 2).mean(axis=(2, 4))
    return np.clip(np.rint(g), 0, 255).astype(np.uint8).reshape(len(gray32), 256)


def _lanczos_matrix(n_in: int, n_out: int = 32) -> np.ndarray:
    """Resampling matrix with PIL's Lanczos-3 weights (float, no intermediate rounding)."""
    scale = n_in / n_out
    fscale = max(scale, 1.0)
    support = 3.0 * fscale
    m = np.zeros((n_out, n_in))
    for o in range(n_out):
        center = (o + 0.5) * scale
        lo, hi = max(int(center - support + 0.5), 0), min(int(center + support + 0.5), n_in)
        x = (np.arange(lo, hi) - center + 0.5) / fscale
        w = np.where(np.abs(x) < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)
        m[o, lo:hi] = w / w.sum() if w.sum() else 0.0
    return m


def gray32_batch(images: np.ndarray, rows: np.ndarray | None = None, chunk_bytes: int = 1 << 27) -> np.ndarray:
    """32x32 luma (ITU-R 601 weights, as PIL's ``convert("L")``) of ``images[rows]`` -> (N,32,32) float32.

    ``images`` is (N,H,W) or (N,H,W,C) uint8 and may be a memory map; it is read in chunks.
    """
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    h, w = images.shape[1], images.shape[2]
    rh, rw = _lanczos_matrix(h).astype(np.float32), _lanczos_matrix(w).astype(np.float32)
    luma = np.array([0.299, 0.587, 0.114], np.float32)
    out = np.empty((len(rows), 32, 32), np.float32)
    step = max(1, chunk_bytes // max(1, images[0].nbytes * 4))
    for s in range(0, len(rows), step):
        a = np.asarray(images[rows[s:s + step]], dtype=np.float32)
        if a.ndim == 4:
            a = a[..., 0] if a.shape[3] == 1 else np.tensordot(a[..., :3], luma, axes=([3], [0]))
        out[s:s + step] = _sandwich(a, rh, rw)
    return np.clip(out, 0, 255)


def hash_one_file(path: str) -> tuple:
    """Read one file once -> (exact, phash, 32x32 luma bytes, width, height, mode, format, error)."""
    from PIL import Image

    from nextclass.data.decode import DecodeError, open_image

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        return None, 0, None, 0, 0, "", "", f"cannot read file: {e.strerror or e}"
    mode = fmt = ""
    try:
        with Image.open(io.BytesIO(raw)) as im:  # header only: the stored size, mode and format
            mode, fmt = im.mode, im.format or ""
    except Exception:
        pass
    try:
        img = open_image(raw, channels=3)
    except DecodeError as e:
        return None, 0, None, 0, 0, mode, fmt, str(e)
    except Exception as e:  # one bad file never stops the pass
        return None, 0, None, 0, 0, mode, fmt, f"cannot decode: {type(e).__name__}: {e}"
    g = np.asarray(img.convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float32)[None]
    return (exact_hash(np.asarray(img)), int(phash_batch(g)[0]), g.astype(np.uint8)[0].tobytes(),
            img.width, img.height, mode, fmt, None)


def _empty(n: int) -> Fingerprints:
    return Fingerprints(np.zeros(n, bool), np.zeros(n, "S16"), np.zeros(n, np.uint64), np.zeros((n, 256), np.uint8),
                        np.zeros((n, 32, 32), np.uint8), np.zeros(n, np.int32), np.zeros(n, np.int32), [""] * n, [""] * n, {})


def hash_files(paths: list[str], *, workers: int | None = None,
               advance: Callable[[int], None] | None = None) -> Fingerprints:
    """Fingerprint image files, each read once, over ``workers`` processes (default: all cores)."""
    n = len(paths)
    fp = _empty(n)
    nw = workers or min(os.cpu_count() or 1, 8)
    if nw > 1 and n >= 64:
        ex = ProcessPoolExecutor(nw)
        results = ex.map(hash_one_file, paths, chunksize=max(1, min(128, n // (nw * 8))))
    else:
        ex, results = None, map(hash_one_file, paths)
    try:
        for i, (ex_h, ph, th, w, h, mode, fmt, err) in enumerate(results):
            fp.mode[i], fp.fmt[i] = mode, fmt
            if err is not None:
                fp.errors[i] = err
            else:
                fp.ok[i], fp.exact[i], fp.phash[i] = True, ex_h, ph
                fp.gray[i] = np.frombuffer(th, np.uint8).reshape(32, 32)
                fp.thumb[i] = _thumb16(fp.gray[i][None])[0]
                fp.width[i], fp.height[i] = w, h
            if advance is not None:
                advance(1)
    finally:
        if ex is not None:
            ex.shutdown()
    return fp


def hash_arrays(images: np.ndarray, rows: np.ndarray | None = None, *, fmt: str = "array",
                advance: Callable[[int], None] | None = None, chunk: int = 8192) -> Fingerprints:
    """Fingerprint in-memory uint8 images ``images[rows]`` ((N,H,W) or (N,H,W,C)), vectorised."""
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    fp = _empty(len(rows))
    fp.ok[:] = True
    shape = images.shape[1:]
    mode = "L" if len(shape) == 2 or shape[-1] == 1 else "RGB"
    fp.mode, fp.fmt = [mode] * len(rows), [fmt] * len(rows)
    fp.height[:], fp.width[:] = shape[0], shape[1]
    for s in range(0, len(rows), chunk):
        part = rows[s:s + chunk]
        block = np.asarray(images[part])
        if block.ndim == 4 and block.shape[3] == 1:
            block = block[..., 0]
        fp.exact[s:s + len(part)] = [exact_hash(x) for x in block]
        g = gray32_batch(block)
        fp.phash[s:s + len(part)] = phash_batch(g)
        fp.gray[s:s + len(part)] = np.rint(g).astype(np.uint8)  # gray32_batch clips to 0..255
        fp.thumb[s:s + len(part)] = _thumb16(fp.gray[s:s + len(part)])
        if advance is not None:
            advance(len(part))
    return fp


_BYTE_BITS = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)


def _popcount(x: np.ndarray) -> np.ndarray:
    """Bits set per element (numpy >= 2 has it built in; a byte table otherwise)."""
    x = np.asarray(x)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _BYTE_BITS[x.astype(np.uint64).view(np.uint8).reshape(*x.shape, 8)].sum(axis=-1)


def _masks(radius: int, bits: int = 16) -> np.ndarray:
    out = [0]
    for r in range(1, radius + 1):
        out += [sum(1 << b for b in c) for c in combinations(range(bits), r)]
    return np.array(out, dtype=np.int64)


def _band(h: np.ndarray, b: int) -> np.ndarray:
    return ((h >> np.uint64(16 * b)) & np.uint64(0xFFFF)).astype(np.int64)


def _candidates(keys: np.ndarray, mask: int, order: np.ndarray, rank: np.ndarray, start: np.ndarray,
                end: np.ndarray):
    """Yield (i, j) arrays with ``keys[j] == keys[i] ^ mask``, each unordered pair once, in bounded chunks.

    ``order`` sorts the items by key (stable, so a bucket lists its items by index) and ``rank`` is
    its inverse. With ``mask == 0`` an item pairs with the later items of its own bucket; otherwise
    only the item with the smaller key asks, so a pair is never produced from both sides.
    """
    q = keys ^ mask
    if mask == 0:
        lo = rank + 1
        cnt = end[q] - lo
    else:
        lo = start[q]
        cnt = np.where(keys < q, end[q] - lo, 0)
    qi = np.flatnonzero(cnt > 0)
    if len(qi) == 0:
        return
    cum = np.cumsum(cnt[qi])
    cuts = np.searchsorted(cum, np.arange(_CAND_CHUNK, int(cum[-1]), _CAND_CHUNK))
    edges = sorted({0, len(qi), *cuts.tolist()})  # (np.unique costs ~10 ms even on 3 numbers)
    for a, b in zip(edges[:-1], edges[1:]):
        sel = qi[a:b]
        c = cnt[sel]
        offs = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
        yield np.repeat(sel, c), order[np.repeat(lo[sel], c) + offs]


def _balance_bits(hashes: np.ndarray) -> np.ndarray:
    """Permute hash bits so each 16-bit band gets an equal share of informative bits.

    phash bits are far from uniform (the DC bit is always set, the lowest frequencies are
    predictable), and a band made of predictable bits puts most images in a few buckets. Bits are
    ranked by how close to 50/50 they are on this dataset and dealt to the bands in snake order;
    Hamming distances do not change.
    """
    bits = np.unpackbits(hashes.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)
    rank = np.argsort(np.abs(bits.mean(axis=0) - 0.5), kind="stable")
    band_of = np.array([(k % _BANDS) if (k // _BANDS) % 2 == 0 else _BANDS - 1 - k % _BANDS for k in range(64)])
    perm = np.concatenate([rank[band_of == b] for b in range(_BANDS)])
    packed = np.ascontiguousarray(np.packbits(bits[:, perm], axis=1))
    return packed.view(">u8").ravel().astype(np.uint64)


def candidate_count(hashes: np.ndarray, threshold: int = 8) -> int:
    """How many candidate pairs :func:`near_pairs` would enumerate (before its bit count) for ``threshold``: the
    work of the search, counted from the bucket sizes alone in well under a second. Images that all look alike
    (digits, sketches) crowd a few buckets and make it grow with the square of the data."""
    hashes = _balance_bits(np.asarray(hashes, dtype=np.uint64)) if len(hashes) > 1 else hashes
    total = 0
    for b in range(_BANDS):
        keys = _band(hashes, b)
        count = np.bincount(keys, minlength=1 << 16)
        for m in _masks(int(threshold) // _BANDS):
            total += int((count[keys] - 1).sum()) // 2 if m == 0 else int(count[keys ^ int(m)].sum()) // 2
    return total


def near_pairs(hashes: np.ndarray, thumbs: np.ndarray | None = None, *, threshold: int = 8,
               tolerance: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` with ``popcount(h_i ^ h_j) <= threshold`` (and, given ``thumbs``, a mean
    absolute thumbnail difference ``<= tolerance``), without comparing all pairs.

    Returns:
        ``(i, j, distance)`` int arrays.

    Example:
        >>> h = np.array([0, 1, 0xFFFF0000], dtype=np.uint64)
        >>> near_pairs(h, threshold=2)[0].tolist(), near_pairs(h, threshold=2)[1].tolist()
        ([0], [1])
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    if len(hashes) < 2:
        return (np.zeros(0, np.int64),) * 3
    hashes = _balance_bits(hashes)
    radius = int(threshold) // _BANDS
    masks = _masks(radius)
    n = len(hashes)
    found_i, found_j = [], []
    for b in range(_BANDS):
        keys = _band(hashes, b)
        order = np.argsort(keys, kind="stable")
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        count = np.bincount(keys, minlength=1 << 16)
        end = np.cumsum(count)
        for m in masks:
            for i, j in _candidates(keys, int(m), order, rank, end - count, end):
                keep = _popcount(hashes[i] ^ hashes[j]) <= threshold
                i, j = i[keep], j[keep]
                found_i.append(np.minimum(i, j)), found_j.append(np.maximum(i, j))
    # a pair close on several bands is found once per band: keep one (sort, not np.unique's hash table)
    if not found_i:
        return (np.zeros(0, np.int64),) * 3
    code = np.sort(np.concatenate(found_i) * n + np.concatenate(found_j))
    code = code[np.r_[True, code[1:] != code[:-1]]] if len(code) else code
    i, j = code // n, code % n
    d = _popcount(hashes[i] ^ hashes[j]).astype(np.int64)
    if thumbs is not None and tolerance is not None and len(i):
        keep = np.zeros(len(i), bool)
        for s in range(0, len(i), _CAND_CHUNK // 8):
            sl = slice(s, s + _CAND_CHUNK // 8)
            keep[sl] = np.abs(thumbs[i[sl]].astype(np.int16) - thumbs[j[sl]]).mean(axis=1) <= tolerance
        i, j, d = i[keep], j[keep], d[keep]
    return i, j, d
