"""Benchmark: `nextclass audit` on Fashion-MNIST (official train 60k vs test 10k).

Prints JSON with the audit's counts of exact and near duplicates across and within the official
splits (``near_candidates``: pairs the hashes and thumbnails propose; ``near_pairs``: those the pixel
check confirms as the same picture), its run time, and baselines measured in the same run:

* near-duplicate search: multi-index hashing vs the all-pairs Hamming comparison (numpy popcount on
  70k x 70k in blocks); the pair sets must be identical;
* fingerprinting: the batched numpy phash vs ``imagehash.phash`` image by image;
* the file path: the same 70k images written as PNG files and audited as a folder (each file read
  once, 2 processes), to show files/s for a folder of images.

    flock /tmp/nextclass-bench.lock .venv/bin/python bench/audit_fashion.py [--no-files] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def _brute_pairs(h: np.ndarray, threshold: int, block: int = 512) -> set[tuple[int, int]]:
    out: set[tuple[int, int]] = set()
    for s in range(0, len(h), block):
        d = np.bitwise_count(h[s:s + block, None] ^ h[None, :])
        i, j = np.nonzero(d <= threshold)
        i = i + s
        keep = j > i
        out.update(zip(i[keep].tolist(), j[keep].tolist()))
    return out


def _write_png(args) -> None:
    from PIL import Image

    arr, paths = args
    for a, p in zip(arr, paths):
        Image.fromarray(a).save(p)


def _as_folder(source, root: Path) -> None:
    """Write the images as train/<class>/*.png and test/<class>/*.png (2 processes)."""
    jobs: list[tuple[np.ndarray, list[str]]] = []
    by = {}
    for s in source.samples:
        d = root / s.split / source.classes[s.label]
        d.mkdir(parents=True, exist_ok=True)
        by.setdefault("all", []).append((s.index, str(d / f"{s.index:05d}.png")))
    items = by["all"]
    for k in range(0, len(items), 2000):
        part = items[k:k + 2000]
        jobs.append((source.array[[i for i, _ in part]], [p for _, p in part]))
    with ProcessPoolExecutor(2) as ex:
        list(ex.map(_write_png, jobs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--no-files", action="store_true", help="skip the PNG-folder run")
    ap.add_argument("--out", default=None, help="keep audit.json files here")
    args = ap.parse_args()

    import imagehash
    from PIL import Image

    import nextclass
    from nextclass.data.audit import NEAR_THRESHOLD, PIXEL_TOLERANCE
    from nextclass.data.hashing import hash_arrays, near_pairs
    from nextclass.data.sources import load_source

    out_dir = Path(args.out or tempfile.mkdtemp(prefix="audit-bench-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    res: dict = {"benchmark": "audit_fashion_mnist", "cpus": os.cpu_count(), "near_threshold": NEAR_THRESHOLD,
                 "pixel_tolerance": PIXEL_TOLERANCE}

    cache = tempfile.mkdtemp(prefix="audit-bench-cache-")  # cold: no fingerprints cached yet
    t0 = time.time()
    rep = nextclass.audit(args.data, splits="none", output=out_dir / "audit.json", progress=False, cache_dir=cache)
    res["audit_seconds"] = round(time.time() - t0, 2)
    t0 = time.time()
    nextclass.audit(args.data, splits="none", progress=False, cache_dir=cache)
    res["audit_again_seconds_cached_hashes"] = round(time.time() - t0, 2)
    s = rep["summary"]
    res["n_images"] = rep["n_images"]
    res["train_test"] = s["cross_split"]["train-test"]
    res["within_split"] = s["within_split"]
    res["exact_groups"] = s["exact_groups"]
    # candidates: pairs within near_threshold hash bits and pixel_tolerance on the thumbnail; near_pairs: the
    # candidates the pixel check (same_picture, picture_tolerance) confirmed as the same picture
    res["near_candidates"], res["near_pairs"] = s.get("near_candidates"), s["near_pairs"]
    res["duplicate_clusters"] = s["duplicate_clusters"]
    res["label_conflict_groups"], res["label_conflict_images"] = s["label_conflict_groups"], s["label_conflict_images"]

    # the quick audit `nextclass train` runs on its decoded cache (here the 28x28 arrays themselves)
    from nextclass.data.quick_audit import audit_decoded
    from nextclass.data.cache import DecodedImages

    qsrc = load_source(args.data)
    qarr = qsrc.array[[x.index for x in qsrc.samples]]
    t0 = time.time()
    quick = audit_decoded(qsrc, DecodedImages(qarr, np.ones(len(qarr), bool), {}), out_dir / "audit_quick.json")
    res["quick_audit_seconds"] = round(time.time() - t0, 2)
    res["quick_audit_train_test"] = quick["summary"]["cross_split"]["train-test"] if quick else None

    # stages and baselines on the same fingerprints
    src = load_source(args.data)
    rows = np.array([x.index for x in src.samples])
    t = time.time()
    fp = hash_arrays(src.array, rows)
    res["hash_seconds"] = round(time.time() - t, 2)
    t = time.time()
    i, j, _ = near_pairs(fp.phash, threshold=NEAR_THRESHOLD)
    res["mih_seconds_hash_only"] = round(time.time() - t, 2)
    t = time.time()
    vi, _, _ = near_pairs(fp.phash, fp.thumb, threshold=NEAR_THRESHOLD, tolerance=PIXEL_TOLERANCE)
    res["mih_seconds_verified"] = round(time.time() - t, 2)
    res["phash_pairs"], res["verified_pairs"] = int(len(i)), int(len(vi))
    split = np.array([x.split for x in src.samples])
    label = np.array([x.label for x in src.samples])
    mad = np.abs(fp.thumb[i].astype(np.int16) - fp.thumb[j]).mean(axis=1)
    cross = split[i] != split[j]
    res["tolerance_sweep"] = {}
    for tol in (1, 2, 3, 4, 5, 6):
        k = mad <= tol
        test_imgs = np.unique(np.where(split[i] == "test", i, j)[k & cross])
        res["tolerance_sweep"][tol] = {"pairs": int(k.sum()), "test_images_near_train": int(len(test_imgs)),
                                       "pairs_with_different_labels": int((k & (label[i] != label[j])).sum())}
    t = time.time()
    brute = _brute_pairs(fp.phash, NEAR_THRESHOLD)
    res["brute_force_seconds"] = round(time.time() - t, 2)
    res["mih_equals_brute_force"] = brute == set(zip(i.tolist(), j.tolist()))
    res["speedup_mih_vs_brute"] = round(res["brute_force_seconds"] / max(res["mih_seconds_hash_only"], 1e-9), 2)
    t = time.time()
    ref = np.array([int(str(imagehash.phash(Image.fromarray(src.array[r]))), 16) for r in rows], dtype=np.uint64)
    res["imagehash_loop_seconds"] = round(time.time() - t, 2)
    diff = np.bitwise_count(ref ^ fp.phash)
    res["batched_vs_imagehash_bits"] = {"mean": round(float(diff.mean()), 3), "max": int(diff.max())}
    res["speedup_batched_vs_imagehash"] = round(res["imagehash_loop_seconds"] / max(res["hash_seconds"], 1e-9), 2)

    if not args.no_files:
        folder = Path(tempfile.mkdtemp(prefix="fmnist-png-"))
        try:
            t = time.time()
            _as_folder(src, folder)
            res["png_write_seconds"] = round(time.time() - t, 1)
            t = time.time()
            frep = nextclass.audit(str(folder), splits="none", output=out_dir / "audit_png.json", progress=False,
                                   cache_dir=cache)
            res["folder_audit_seconds"] = round(time.time() - t, 2)
            res["folder_files_per_second"] = round(frep["n_images"] / res["folder_audit_seconds"], 1)
            res["folder_train_test"] = frep["summary"]["cross_split"]["train-test"]
            res["folder_near_candidates"] = frep["summary"].get("near_candidates")
            res["folder_near_pairs"] = frep["summary"]["near_pairs"]
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    res["reports"] = str(out_dir)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
