"""Decode once: a uint8 array cache of every image at the cache resolution.

The first use of a dataset decodes each file once (safe decoding, in parallel processes), resizes
it with :func:`~nextclass.data.transforms.to_square`, and stores the result as a ``.npy`` file
(memory-mapped) keyed by (data fingerprint, size, channels, interpolation). Later epochs and later
runs read the array; small sets are loaded into RAM. Files that fail to decode are recorded with
their reason and never reach the training loop.

The cache lives under the cache directory (``--cache-dir``), never beside the user's images.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nextclass.utils import atomic_write_json, default_cache_dir, sha1_of
from nextclass.data.decode import DecodeError, open_image
from nextclass.data.samples import DataSource
from nextclass.data.transforms import Preprocess, to_square

__all__ = ["DecodeSpec", "DecodedImages", "decode_all", "CACHE_VERSION", "RAM_LIMIT_BYTES"]

CACHE_VERSION = 1
RAM_LIMIT_BYTES = 1 << 30  # arrays up to 1 GiB are read into RAM, larger ones stay memory-mapped


@dataclass(frozen=True)
class DecodeSpec:
    """What the cached pixels are: square side, channels and resize filter (with the data, the cache key).

    A :class:`~nextclass.data.transforms.Preprocess` carries the same three fields, so :func:`decode_all`
    takes either; this is for callers without one.
    """

    size: int  # cache resolution (square side)
    channels: int  # 1 or 3
    interpolation: str = "bilinear"  # resize filter


@dataclass
class DecodedImages:
    """Decoded images for a list of samples: ``array[i]`` is sample ``i`` (zeros if it failed)."""

    array: np.ndarray  # (N, S, S, C) uint8
    ok: np.ndarray  # (N,) bool
    errors: dict[int, str] = field(default_factory=dict)  # position -> reason
    key: str = ""
    hit: bool = False

    def skipped(self, samples: list, split: str | None = None) -> list[dict]:
        """``{"path", "reason"}`` of each file that could not be decoded (of ``split`` only, when given);
        ``samples[i]`` is the sample decoded into ``array[i]``."""
        return [{"path": samples[i].path, "reason": r} for i, r in sorted(self.errors.items())
                if split is None or samples[i].split == split]


def _decode_one(args) -> tuple[np.ndarray | None, str | None]:
    path, size, channels, interpolation = args
    try:
        img = open_image(path, channels)
        return to_square(img, size, interpolation), None
    except DecodeError as e:
        return None, str(e)
    except Exception as e:  # never let one file stop the pass
        return None, f"cannot decode: {type(e).__name__}: {e}"


def _array_item(arr: np.ndarray, size: int, channels: int, interpolation: str) -> np.ndarray:
    from PIL import Image

    a = arr if arr.ndim == 3 else arr[:, :, None]
    if a.shape[0] == size and a.shape[1] == size and a.shape[2] == channels:
        return a
    img = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
    img = img.convert("L" if channels == 1 else "RGB")
    return to_square(img, size, interpolation)


def decode_all(source: DataSource, positions: list[int], spec: DecodeSpec | Preprocess, *,
               cache_dir: str | os.PathLike | None = None, workers: int | None = None, progress: bool = True,
               use_cache: bool = True) -> DecodedImages:
    """Decode ``source.samples[positions]`` into one uint8 array, through the on-disk cache.

    Args:
        source: the data source.
        positions: indices into ``source.samples``.
        spec: ``size``, ``channels`` and ``interpolation`` of the cached pixels: a :class:`DecodeSpec`, or the
            run's :class:`~nextclass.data.transforms.Preprocess` (which carries the same three fields).
        cache_dir: cache root (default: user cache).
        workers: decoding processes (default: number of cores).
        progress: show a Rich progress bar.
        use_cache: read/write the on-disk cache (``False`` decodes in memory only).

    Example:
        >>> imgs = decode_all(source, list(range(len(source.samples))), DecodeSpec(64, 3))  # doctest: +SKIP
        >>> imgs.array.shape, imgs.hit  # doctest: +SKIP
        ((120, 64, 64, 3), False)
    """
    size, channels, interpolation = spec.size, spec.channels, spec.interpolation
    samples = [source.samples[i] for i in positions]
    key = sha1_of([CACHE_VERSION, source.fingerprint(samples), size, channels, interpolation])
    folder = Path(cache_dir or default_cache_dir()) / "images"
    npy, meta = folder / f"{key}.npy", folder / f"{key}.json"
    n = len(samples)
    if use_cache and npy.exists() and meta.exists():
        errors = {int(k): v for k, v in json.loads(meta.read_text())["errors"].items()}
        return DecodedImages(_open_cached(npy), _ok_mask(n, errors), errors, key, hit=True)
    shape = (n, size, size, channels)
    if use_cache:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.npy"
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    else:
        arr = np.zeros(shape, dtype=np.uint8)
    errors = _decode_into(arr, source, samples, (size, channels, interpolation), workers, progress)
    if use_cache:
        arr.flush()
        del arr
        os.replace(tmp, npy)
        atomic_write_json(meta, {"version": CACHE_VERSION, "n": n, "size": size, "channels": channels,
                                 "interpolation": interpolation, "errors": {str(k): v for k, v in errors.items()}})
        arr = _open_cached(npy)
    return DecodedImages(arr, _ok_mask(n, errors), errors, key, hit=False)


def _ok_mask(n: int, errors: dict) -> np.ndarray:
    ok = np.ones(n, dtype=bool)
    ok[list(errors)] = False
    return ok


def _open_cached(npy: Path) -> np.ndarray:
    """The cache file memory-mapped, or read into RAM (writable) when small enough."""
    arr = np.load(npy, mmap_mode="r")
    return np.array(arr) if arr.nbytes <= RAM_LIMIT_BYTES else arr


def _decode_into(arr: np.ndarray, source: DataSource, samples: list, spec: tuple, workers: int | None,
                 progress: bool) -> dict[int, str]:
    """Fill ``arr`` row by row (array-backed rows in-process, files in a process pool); returns errors by row."""
    from nextclass.utils import progress_bar

    size, channels, interpolation = spec
    errors: dict[int, str] = {}
    n = len(samples)
    with progress_bar(progress) as bar:
        task = bar.add_task("decode", total=n, metrics="")
        if source.array is not None and all(s.index is not None for s in samples):
            for j, s in enumerate(samples):
                arr[j] = _array_item(source.array[s.index], size, channels, interpolation)
                if j % 2048 == 0:
                    bar.update(task, completed=j)
        else:
            jobs = [(s.path, size, channels, interpolation) for s in samples]
            nw = workers or min(os.cpu_count() or 1, 8)
            if nw > 1 and n >= 64:
                with ProcessPoolExecutor(nw) as ex:
                    results = ex.map(_decode_one, jobs, chunksize=max(1, min(256, n // (nw * 8))))
                    for j, (img, err) in enumerate(results):
                        _store(arr, errors, j, img, err)
                        bar.advance(task)
            else:
                for j, job in enumerate(jobs):
                    _store(arr, errors, j, *_decode_one(job))
                    bar.advance(task)
        bar.update(task, completed=n)
    return errors


def _store(arr, errors, j, img, err):
    if err is not None:
        errors[j] = err
    else:
        arr[j] = img
