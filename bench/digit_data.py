"""Build an MNIST-style digit folder offline: 28-px grey digits drawn in many fonts, then distorted like handwriting.

No MNIST exists on this machine (issue 24's 28-px digit target is stated on it), so this builds the closest thing
from what is installed: the TrueType fonts under /usr/share/fonts (DejaVu, Liberation: regular, bold, italic,
condensed, mono, serif). Each image follows MNIST's recipe on top of a font-rendered digit: white on black, a random
stroke width, a random affine (rotation, shear, scale), an elastic distortion (Simard et al. 2003: a smoothed random
displacement field), then the digit's bounding box scaled into 20x20 and centred by its centre of mass in a 28x28
frame. Train and test draw from the same fonts with independent random distortions (MNIST's writers are mixed the
same way). Digits are orientation-sensitive (2/5, 6/9 mirror into other digits or into nothing), so the set also
checks that ``hflip: auto`` turns mirror flips off.

    python bench/digit_data.py --out /tmp/nextclass-bench/digits28 [--train 60000 --test 10000] [--seed 0]

Writes ``OUT/train/<digit>/*.png`` and ``OUT/test/<digit>/*.png`` (a split-folder dataset: ``nextclass train OUT``
carves val from train) and prints JSON with the counts, the fonts and the seconds it took.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

CANVAS = 96  # digits are drawn and distorted at this side, then reduced to 28 px as MNIST did
FONT_DIRS = ("/usr/share/fonts/truetype", "/usr/share/fonts/opentype")
SKIP = ("Math", "Symbol", "Emoji")  # fonts without ordinary digit shapes


def fonts() -> list[str]:
    found = sorted(p for d in FONT_DIRS for p in glob.glob(f"{d}/**/*.[to]tf", recursive=True)
                   if not any(s in os.path.basename(p) for s in SKIP))
    if not found:
        raise SystemExit("no TrueType fonts found under /usr/share/fonts: apt-get install fonts-dejavu-core")
    return found


def _draw(digit: int, font: str, rng: np.random.Generator) -> np.ndarray:
    """The digit in white on black at CANVAS px, a random stroke width, roughly centred."""
    img = Image.new("L", (CANVAS, CANVAS), 0)
    f = ImageFont.truetype(font, int(rng.integers(56, 72)))
    d = ImageDraw.Draw(img)
    d.text((CANVAS / 2, CANVAS / 2), str(digit), fill=255, font=f, anchor="mm",
           stroke_width=int(rng.integers(0, 5)), stroke_fill=255)
    return np.asarray(img, np.float32)


def _affine(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rot, shear = np.deg2rad(rng.uniform(-15, 15)), rng.uniform(-0.3, 0.3)
    scale = rng.uniform(0.85, 1.1)
    m = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]]) @ np.array([[1, shear], [0, 1]]) / scale
    centre = np.array(a.shape) / 2
    return ndimage.affine_transform(a, m, offset=centre - m @ centre, order=1)


def _elastic(a: np.ndarray, rng: np.random.Generator, alpha: float = 34.0, sigma: float = 6.0) -> np.ndarray:
    dy = ndimage.gaussian_filter(rng.uniform(-1, 1, a.shape), sigma) * alpha
    dx = ndimage.gaussian_filter(rng.uniform(-1, 1, a.shape), sigma) * alpha
    yy, xx = np.meshgrid(np.arange(a.shape[0]), np.arange(a.shape[1]), indexing="ij")
    return ndimage.map_coordinates(a, [yy + dy, xx + dx], order=1)


def _to_mnist(a: np.ndarray) -> np.ndarray:
    """MNIST's framing: the bounding box into 20x20 (aspect kept), centred by its centre of mass in 28x28."""
    ys, xs = np.nonzero(a > 30)
    if not len(ys):
        return np.zeros((28, 28), np.uint8)
    box = a[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    h, w = box.shape
    s = 20.0 / max(h, w)
    small = np.asarray(Image.fromarray(box.clip(0, 255).astype(np.uint8)).resize(
        (max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS), np.float32)
    out = np.zeros((28, 28), np.float32)
    cy, cx = ndimage.center_of_mass(small)
    top, left = int(round(14 - cy)), int(round(14 - cx))
    top, left = min(max(top, 0), 28 - small.shape[0]), min(max(left, 0), 28 - small.shape[1])
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return out.clip(0, 255).astype(np.uint8)


def _write(job: tuple) -> int:
    out, split, start, count, seed, font_list = job
    rng = np.random.default_rng([seed, start])
    for i in range(start, start + count):
        digit = i % 10
        a = _draw(digit, font_list[int(rng.integers(len(font_list)))], rng)
        a = _elastic(_affine(a, rng), rng)
        folder = Path(out) / split / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_to_mnist(a)).save(folder / f"{i:05d}.png")
    return count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", type=int, default=60000)
    ap.add_argument("--test", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    t0, font_list, chunk = time.time(), fonts(), 2000
    jobs = [(args.out, split, s, min(chunk, n - s), args.seed + k, font_list)
            for k, (split, n) in enumerate((("train", args.train), ("test", args.test))) for s in range(0, n, chunk)]
    with ProcessPoolExecutor(args.workers) as pool:
        written = sum(pool.map(_write, jobs))
    print(json.dumps({"benchmark_data": "digits28", "out": args.out, "images": written, "train": args.train,
                      "test": args.test, "fonts": [os.path.basename(f) for f in font_list],
                      "seconds": round(time.time() - t0, 1)}, indent=2))


if __name__ == "__main__":
    main()
