"""Built-in datasets that need no download.

* ``digits``: scikit-learn's bundled 1,797 8x8 handwritten digits, written once as PNG files
  (class-per-folder) into the cache directory, so they flow through the same path as a user's
  folder.
* ``fashion-mnist[:DIR]``: the 60k/10k IDX files from ``DIR`` (default
  ``/usr/share/datasets/fashion-mnist``, Debian's ``dataset-fashion-mnist``), kept in memory as
  one uint8 array; the official train/test split is kept. With ``download=True`` and the files
  absent, they are fetched from the official source and MD5-verified.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable

import numpy as np

from nextclass.utils import default_cache_dir, log
from nextclass.data.folders import from_folder
from nextclass.data.samples import DataError, DataSource, Sample

__all__ = ["BUILTINS", "digits", "fashion_mnist", "read_idx", "FASHION_CLASSES"]

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]
# Official files and MD5s (Zalando Research's repository; also torchvision's resources list).
FASHION_URL = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"
FASHION_FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a numpy array (uint8 payloads)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(dims)):
        raise DataError(f"{path}: IDX header says {dims} but holds {payload.size} bytes (truncated?)")
    return payload.reshape(dims)


def digits(arg: str | None = None, *, cache_dir=None, download: bool = False) -> DataSource:
    """scikit-learn's digits as a PNG folder tree in the cache (written on first use)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(cache_dir or default_cache_dir()) / "datasets" / "digits"
    if not (root / ".complete").exists():
        d = load_digits()
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".digits.", dir=root.parent))
        for i, (img, y) in enumerate(zip(d.images, d.target)):
            folder = tmp / str(int(y))
            folder.mkdir(exist_ok=True)
            px = np.clip(np.round(img * (255.0 / 16.0)), 0, 255).astype(np.uint8)
            Image.fromarray(px, "L").save(folder / f"{i:04d}.png")
        (tmp / ".complete").write_text("sklearn digits\n")
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)  # atomic: a half-written tree is never visible
    src = from_folder(root)
    src.name, src.kind = "digits", "digits"
    return src


def _download_fashion(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, md5 in FASHION_FILES.items():
        target = folder / name
        if target.exists() and hashlib.md5(target.read_bytes()).hexdigest() == md5:
            continue
        log(f"downloading {FASHION_URL}{name}")
        with urllib.request.urlopen(FASHION_URL + name, timeout=60) as r:
            data = r.read()
        got = hashlib.md5(data).hexdigest()
        if got != md5:
            raise DataError(f"{name}: checksum mismatch (md5 {got}, expected {md5}); not saved")
        tmp = target.with_suffix(".part")
        tmp.write_bytes(data)
        os.replace(tmp, target)


def _find(folder: Path, stem: str) -> Path | None:
    for cand in (folder / f"{stem}.gz", folder / stem):
        if cand.exists():
            return cand
    return None


def fashion_mnist(arg: str | None = None, *, cache_dir=None, download: bool = False) -> DataSource:
    """Fashion-MNIST from IDX files: 60k train + 10k test, array-backed, official split kept."""
    folder = Path(arg or FASHION_DIR)
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = [_find(folder, s) for s in stems]
    if any(p is None for p in paths):
        if not download:
            raise DataError(
                f"Fashion-MNIST IDX files not found in {folder}. Install them (Debian: apt-get install "
                f"dataset-fashion-mnist), point to them with fashion-mnist:DIR, or pass --download.")
        folder = Path(cache_dir or default_cache_dir()) / "datasets" / "fashion-mnist"
        _download_fashion(folder)
        paths = [_find(folder, s) for s in stems]
    xtr, ytr, xte, yte = (read_idx(p) for p in paths)  # type: ignore[arg-type]
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise DataError(f"{folder}: image and label counts differ")
    array = np.concatenate([xtr, xte])
    labels = np.concatenate([ytr, yte]).astype(int)
    n_train = len(xtr)
    samples = [Sample(f"fashion-mnist/{'train' if i < n_train else 'test'}/{(i if i < n_train else i - n_train):05d}",
                      int(labels[i]), "train" if i < n_train else "test", i) for i in range(len(array))]
    return DataSource("fashion-mnist", str(folder), "fashion-mnist", list(FASHION_CLASSES), samples, array)


BUILTINS: dict[str, Callable[..., DataSource]] = {"digits": digits, "fashion-mnist": fashion_mnist,
                                                  "fashion_mnist": fashion_mnist}
