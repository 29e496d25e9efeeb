"""A photo-like benchmark built from what is offline (issue 24): Fashion-MNIST objects on real photographs.

Each image of the ``photo`` variant is a random square crop (random scale, random horizontal flip) of one
of the real photographs that scikit-learn (``china.jpg``, ``flower.jpg``) and scikit-image (``astronaut``,
``chelsea``, ``coffee``, ``rocket``, ``hubble_deep_field``, ...; whichever the installed version ships
without a download) bundle, resized to ``size`` px, with one Fashion-MNIST garment composited on it: the
28-px garment is upscaled to 40-80 px (scaled with ``size``/96), tinted with a random colour (its own
grey levels kept as shading), rotated by up to +-15 degrees and alpha-composited at a random position,
its own intensity serving as the mask. The class is the garment's (10 classes, Fashion-MNIST's names).

The ``upscaled`` variant is the same garments with no background: the 28-px image upscaled (bicubic) to
``size`` px and stored as RGB.

Both are colour JPEGs (quality 90) in two folders::

    ROOT/train/<class>/*.jpg       per_class images per class (default 60 -> 600)
    ROOT_heldout/<class>/*.jpg     heldout_per_class images per class (default 100 -> 1,000)

plus ``ROOT.json`` beside them (what was written, the photos and regions used, the seed).

**Held-out is disjoint from train in everything it is made of**, so its accuracy measures generalisation,
not memorised backgrounds or garments: training garments come from Fashion-MNIST's official train set
and held-out garments from its official test set, and training backgrounds are cut only from the
*left half* of every photograph, held-out backgrounds only from the *right half* (a crop never crosses
the middle column). Colours, positions, sizes and angles are drawn independently.

Everything is deterministic from ``seed``: each image draws from its own generator seeded by
(seed, split, class, index), so a file's content does not depend on how many others were asked for
(``per_class=60`` writes the first 60 of what ``per_class=100`` would).

CLI (2 cores: ~10 s for both variants at 96 px)::

    .venv/bin/python bench/photo_data.py --out /tmp/nextclass-bench/photo [--size 96] [--per-class 60]
        [--heldout-per-class 100] [--variant photo|upscaled|both] [--seed 0]

writes ``OUT/photo96/train``, ``OUT/photo96_heldout``, ``OUT/upscaled96/train``, ``OUT/upscaled96_heldout``.

Example:
    >>> info = write_dataset("/tmp/p/photo96", size=96, per_class=2, heldout_per_class=2)  # doctest: +SKIP
    >>> info["train_images"], info["heldout_images"]  # doctest: +SKIP
    (20, 20)
"""

from __future__ import annotations

import argparse
import colorsys
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np

__all__ = ["CLASSES", "SIZES", "VARIANTS", "FASHION_DIR", "load_fashion", "background_photos", "compose",
           "upscaled", "write_dataset", "heldout_dir"]

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
#: Fashion-MNIST's label ids 0-9, named as nextclass's built-in ``fashion-mnist`` names them.
CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]
SIZES = (96, 128, 224)
VARIANTS = ("photo", "upscaled")
#: Real photographs bundled by scikit-image (loaded if the installed version has them without a download).
#: ``cat`` is the same picture as ``chelsea``; ``colorwheel``/``logo`` are drawings, so they are left out.
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "motorcycle_left", "camera", "brick", "grass", "gravel")
GARMENT_PX = (40, 80)  # garment side range at 96 px output; scaled with the output size
MAX_ANGLE = 15.0
SPLITS = {"train": 0, "heldout": 1}  # seed component, and which half of each photo


def heldout_dir(root: str | os.PathLike) -> Path:
    """``ROOT_heldout`` for ``ROOT`` (the held-out folder sits beside the training root)."""
    root = Path(root)
    return root.with_name(root.name + "_heldout")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion(split: str, folder: str | os.PathLike = FASHION_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's official ``train`` (60k) or ``test`` (10k) images (N, 28, 28) and labels from IDX files."""
    prefix = {"train": "train", "test": "t10k"}[split]
    folder = Path(folder)
    img, lab = folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz"
    if not img.exists():
        raise FileNotFoundError(f"{img} is missing: apt-get update && apt-get install -y dataset-fashion-mnist")
    return _read_idx(img), _read_idx(lab)


def background_photos() -> list[tuple[str, np.ndarray]]:
    """The real photographs available offline as (name, HxWx3 uint8), scikit-learn's first.

    Greyscale ones (camera, brick, grass, gravel) are stacked to RGB; photos that the installed
    scikit-image can only download are skipped.
    """
    import skimage.data
    from sklearn.datasets import load_sample_images

    sk = load_sample_images()
    photos = [(Path(f).stem, np.asarray(im)) for f, im in zip(sk.filenames, sk.images)]
    for name in SKIMAGE_PHOTOS:
        fn = getattr(skimage.data, name, None)
        if fn is None:
            continue
        try:
            a = np.asarray(fn())
        except Exception:  # noqa: BLE001 - skimage raises ModuleNotFoundError/OSError for download-only data
            continue
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        photos.append((name, np.ascontiguousarray(a[..., :3]).astype(np.uint8)))
    return photos


def _background(rng: np.random.Generator, photo: np.ndarray, half: int, size: int):
    """A random square crop inside one half (0 = left, 1 = right) of ``photo``, flipped at random, ``size`` px."""
    from PIL import Image

    h, w = photo.shape[:2]
    x_lo, x_hi = (0, w // 2) if half == 0 else (w // 2, w)
    limit = min(h, x_hi - x_lo)
    side = max(16, int(round(limit * rng.uniform(0.3, 1.0))))
    x = int(rng.integers(x_lo, x_hi - side + 1))
    y = int(rng.integers(0, h - side + 1))
    im = Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(im, dtype=np.float32)


def _garment(rng: np.random.Generator, g28: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The garment upscaled, rotated and tinted: (h, w, 3) colour and (h, w, 1) alpha in [0, 1], cropped to its extent."""
    from PIL import Image

    lo, hi = (int(round(p * size / 96)) for p in GARMENT_PX)
    side = int(rng.integers(lo, hi + 1))
    im = Image.fromarray(g28).resize((side, side), Image.Resampling.BICUBIC)
    im = im.rotate(float(rng.uniform(-MAX_ANGLE, MAX_ANGLE)), resample=Image.Resampling.BICUBIC, expand=True)
    box = im.getbbox() or (0, 0, im.width, im.height)
    grey = np.asarray(im.crop(box), dtype=np.float32)[..., None] / 255.0
    # A saturated, reasonably bright colour; the garment's own grey levels stay as shading.
    tint = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.35, 1.0), rng.uniform(0.55, 1.0)), np.float32)
    colour = 255.0 * tint * (0.3 + 0.7 * grey)
    alpha = np.clip(grey * 2.0, 0.0, 1.0)  # the intensity is the mask; faint pixels stay see-through
    return colour, alpha


def compose(rng: np.random.Generator, photo: np.ndarray, half: int, g28: np.ndarray, size: int) -> np.ndarray:
    """One photo-like image (size, size, 3) uint8: ``g28`` composited on a crop of ``photo``'s ``half``."""
    bg = _background(rng, photo, half, size)
    colour, alpha = _garment(rng, g28, size)
    h, w = alpha.shape[:2]
    # Anywhere it fits; a garment larger than the image (big and rotated) is centred-ish and clipped.
    y0 = int(rng.integers(min(0, size - h), max(0, size - h) + 1))
    x0 = int(rng.integers(min(0, size - w), max(0, size - w) + 1))
    ys, xs = slice(max(0, y0), min(size, y0 + h)), slice(max(0, x0), min(size, x0 + w))
    gy, gx = slice(ys.start - y0, ys.stop - y0), slice(xs.start - x0, xs.stop - x0)
    a = alpha[gy, gx]
    bg[ys, xs] = a * colour[gy, gx] + (1.0 - a) * bg[ys, xs]
    return np.clip(bg + 0.5, 0, 255).astype(np.uint8)


def upscaled(g28: np.ndarray, size: int) -> np.ndarray:
    """Plain Fashion-MNIST: the 28-px image upscaled (bicubic) to ``size`` px, as RGB uint8."""
    from PIL import Image

    im = Image.fromarray(g28).resize((size, size), Image.Resampling.BICUBIC)
    return np.repeat(np.asarray(im)[..., None], 3, axis=2)


def _choose(labels: np.ndarray, per_class: int, seed: int, split: int) -> dict[int, np.ndarray]:
    """Per class, a seeded permutation of its images; the first ``per_class`` are used."""
    rng = np.random.default_rng([seed, split, 999])
    out = {}
    for k in range(len(CLASSES)):
        idx = rng.permutation(np.flatnonzero(labels == k))
        if len(idx) < per_class:
            raise ValueError(f"class {CLASSES[k]} has {len(idx)} images, {per_class} asked for")
        out[k] = idx[:per_class]
    return out


def _write_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, per_class: int, *,
                 variant: str, size: int, seed: int, quality: int, photos) -> int:
    from PIL import Image

    s = SPLITS[split]
    for k, idx in _choose(labels, per_class, seed, s).items():
        d = folder / CLASSES[k]
        d.mkdir(parents=True, exist_ok=True)
        for i, j in enumerate(idx):
            if variant == "photo":
                rng = np.random.default_rng([seed, s, k, i])
                _, photo = photos[int(rng.integers(len(photos)))]
                arr = compose(rng, photo, s, images[j], size)
            else:
                arr = upscaled(images[j], size)
            tmp = d / f".{i:04d}.jpg.tmp"
            Image.fromarray(arr).save(tmp, format="JPEG", quality=quality)
            tmp.replace(d / f"{split}_{i:04d}_fm{j:05d}.jpg")
    return per_class * len(CLASSES)


def write_dataset(root: str | os.PathLike, *, variant: str = "photo", size: int = 96, per_class: int = 60,
                  heldout_per_class: int = 100, seed: int = 0, quality: int = 90,
                  fashion_dir: str | os.PathLike = FASHION_DIR) -> dict:
    """Write ``ROOT/train/<class>/*.jpg`` and ``ROOT_heldout/<class>/*.jpg`` (see the module docstring).

    Args:
        root: the training root; the held-out folder is ``heldout_dir(root)``. Existing files of the same
            names are overwritten (the content is a function of the arguments).
        variant: ``photo`` (garments on photo crops) or ``upscaled`` (garments alone, upscaled to RGB).
        size: output side in px (96 by default; 128 and 224 are the other sizes this benchmark uses).
        per_class, heldout_per_class: images per class in train and in held-out.
        seed: everything random derives from it.
        quality: JPEG quality.
        fashion_dir: the folder with Fashion-MNIST's IDX files.

    Returns:
        What was written (also saved as ``ROOT.json``): folders, counts, size, seed, photos, seconds.

    Example:
        >>> write_dataset("/tmp/nextclass-bench/photo/photo96")  # doctest: +SKIP
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    if size < 32:
        raise ValueError(f"size {size} is too small for 40-80 px garments scaled to it; use 96, 128 or 224")
    t0 = time.time()
    root = Path(root)
    photos = background_photos() if variant == "photo" else []
    counts = {}
    for split, folder, n, official in (("train", root / "train", per_class, "train"),
                                       ("heldout", heldout_dir(root), heldout_per_class, "test")):
        images, labels = load_fashion(official, fashion_dir)
        counts[split] = _write_split(folder, split, images, labels, n, variant=variant, size=size, seed=seed,
                                     quality=quality, photos=photos)
    info = {"variant": variant, "size": size, "seed": seed, "jpeg_quality": quality, "classes": CLASSES,
            "train": str(root / "train"), "heldout": str(heldout_dir(root)),
            "train_images": counts["train"], "heldout_images": counts["heldout"],
            "garments": "train: Fashion-MNIST official train set; heldout: official test set",
            "photos": [name for name, _ in photos],
            "background_regions": "train: left half of each photo; heldout: right half" if photos else None,
            "seconds": round(time.time() - t0, 1)}
    root.with_name(root.name + ".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/nextclass-bench/photo"),
                    help="parent folder; writes OUT/<variant><size>/train and OUT/<variant><size>_heldout")
    ap.add_argument("--size", type=int, default=96, help="output side in px (96; also 128 or 224)")
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--heldout-per-class", type=int, default=100)
    ap.add_argument("--variant", choices=[*VARIANTS, "both"], default="both")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--fashion-dir", default=FASHION_DIR)
    args = ap.parse_args(argv)
    for variant in VARIANTS if args.variant == "both" else (args.variant,):
        info = write_dataset(args.out / f"{variant}{args.size}", variant=variant, size=args.size,
                             per_class=args.per_class, heldout_per_class=args.heldout_per_class, seed=args.seed,
                             quality=args.quality, fashion_dir=args.fashion_dir)
        print(json.dumps(info))


if __name__ == "__main__":
    main()
