"""Benchmark (issue 23): ``audit --labels`` on small planted sets across sizes - recall, precision, the gate.

For each dataset and size: draw ``n`` images (stratified-ish: a seeded random draw), flip ``--flip`` (4 %)
of their labels, each to another class drawn uniformly at random, and write them as a class-per-folder
PNG tree (the flipped images sit in the wrong folder), exactly what a user would audit. Then:

* **after**: ``nextclass.curation.label_audit.audit_labels`` on that folder - the real path of
  ``nextclass audit DIR --labels`` (default embedding: the images' pixels; PCA keeping 99 % of the
  variance, not whitened; C chosen by cross-validated log-loss; 5-fold heads; the quality gate; cleanlab);
  every flag is read back from ``label_issues.csv``;
* **ungated**: the same heads and cleanlab with the quality gate switched off (what the gate holds back);
* **before**: the path this issue replaced, on the same pixel embedding (PCA to 256 dims when there are more
  than 256 images and more than 256 features, per-feature standardisation, ``C=1``, no gate), for comparison.

Datasets: ``digits`` (scikit-learn's 8x8 digits upscaled to 32x32 with bilinear resampling, as the issue
reported; 1,797 images at most) and ``fashion`` (the Fashion-MNIST training images, 28 px, from
``/usr/share/datasets/fashion-mnist``). ``--shuffled`` adds a no-signal row (every label drawn at random).

Prints one JSON line per (dataset, size, seed) and a summary (pooled over seeds) at the end::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/label_audit_sizes.py \
        [--sizes 100 300 1000 5000] [--seeds 0 1 2] [--flip 0.04] [--datasets digits fashion] [--shuffled]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 images upscaled to 32x32 (bilinear), and their labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    px = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(p, "L").resize((32, 32), Image.BILINEAR)) for p in px])
    return big, d.target.astype(np.int64)


def fashion_images() -> tuple[np.ndarray, np.ndarray]:
    """The 60,000 Fashion-MNIST training images and labels (Debian's dataset-fashion-mnist)."""
    from nextclass.data.builtin import FASHION_DIR, read_idx

    return (read_idx(f"{FASHION_DIR}/train-images-idx3-ubyte.gz"),
            read_idx(f"{FASHION_DIR}/train-labels-idx1-ubyte.gz").astype(np.int64))


def plant(labels: np.ndarray, n: int, flip: float, seed: int, shuffled: bool = False):
    """(rows drawn, their noisy labels, positions flipped among the drawn rows)."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(labels), n, replace=False))
    k = int(labels.max() + 1)
    noisy = labels[rows].copy()
    if shuffled:
        return rows, rng.integers(0, k, n), np.arange(0)
    flipped = np.sort(rng.choice(n, max(1, int(round(flip * n))), replace=False))
    noisy[flipped] = (noisy[flipped] + rng.integers(1, k, len(flipped))) % k
    return rows, noisy, flipped


def write_tree(root: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """Class-per-folder PNGs; returns {resolved path: position}."""
    from PIL import Image

    where = {}
    for i, (img, y) in enumerate(zip(images, labels)):
        folder = root / f"c{int(y)}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{i:05d}.png"
        Image.fromarray(img).save(path)
        where[str(path.resolve())] = i
    return where


def before(root: Path, cache: Path, seed: int) -> dict:
    """The replaced path (PCA 256 beyond 256 images, StandardScaler, C=1, no gate) on the same embedding."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from nextclass.curation.embed import embed_source
    from nextclass.data.label_issues import find_label_issues
    from nextclass.data.sources import load_source

    source = load_source(str(root))
    emb = embed_source(source, cache_dir=str(cache), progress=False)
    x = emb.features.astype(np.float64)
    if x.shape[1] > 256 and len(x) > 256:
        x = PCA(256, svd_solver="randomized", random_state=seed).fit_transform(x)
    y = np.array([source.samples[p].label for p in emb.positions])
    probs = np.zeros((len(y), len(source.classes)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tr, he in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
            head = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(x[tr], y[tr])
            probs[np.ix_(he, head.classes_)] = head.predict_proba(x[he])
    flagged = [source.samples[emb.positions[i.position]].path for i in find_label_issues(probs, y)]
    return {"head_accuracy": round(float((probs.argmax(1) == y).mean()), 4), "flagged_paths": flagged}


def without_gate(root: Path, cache: Path, seed: int) -> list[str]:
    """What the new heads would flag if the quality gate let everything through (to show what it holds back)."""
    from nextclass.curation.label_audit import out_of_sample_probs
    from nextclass.data.label_issues import find_label_issues
    from nextclass.data.sources import load_source

    source = load_source(str(root))
    oos = out_of_sample_probs(source, cache_dir=str(cache), seed=seed, progress=False)
    return [source.samples[oos.positions[i.position]].path for i in find_label_issues(oos.probs, oos.labels)]


def score(flagged: list[str], where: dict[str, int], flipped: np.ndarray) -> dict:
    got = {where[p] for p in flagged}
    hit = len(got & set(flipped.tolist()))
    return {"flagged": len(got), "found": hit,
            "recall": round(hit / len(flipped), 3) if len(flipped) else None,
            "precision": round(hit / len(got), 3) if got else None}


def one(name: str, images, labels, n: int, seed: int, flip: float, shuffled: bool, work: Path) -> dict:
    from nextclass.curation.label_audit import audit_labels

    rows, noisy, flipped = plant(labels, n, flip, seed, shuffled)
    root = work / f"{name}-{n}-{seed}{'-shuffled' if shuffled else ''}"
    where = write_tree(root, images[rows], noisy)
    t0 = time.time()
    block = audit_labels(str(root), csv_path=root.with_suffix(".csv"), cache_dir=str(work / "cache"), seed=seed,
                         progress=False)
    seconds = time.time() - t0
    with open(root.with_suffix(".csv"), newline="") as fh:
        after_paths = [r["path"] for r in csv.DictReader(fh)]
    old = before(root, work / "cache", seed)
    gate = block.get("gate", {})
    ungated = without_gate(root, work / "cache", seed)
    return {"dataset": name + (" (labels shuffled)" if shuffled else ""), "n": n, "seed": seed,
            "planted": len(flipped), "after": {**score(after_paths, where, flipped),
                                               "head_accuracy": block.get("head_accuracy"),
                                               "chance": gate.get("chance"), "gate_ok": gate.get("ok"),
                                               "seconds": round(seconds, 1)},
            "before": {**score(old["flagged_paths"], where, flipped), "head_accuracy": old["head_accuracy"]},
            "ungated": {**score(ungated, where, flipped), "head_accuracy": block.get("head_accuracy")},
            "method": block["method"]}


def pooled(results: list[dict]) -> list[dict]:
    """Per (dataset, n): flips, found, flagged summed over seeds; recall and precision of the pooled counts."""
    out = []
    for key in dict.fromkeys((r["dataset"], r["n"]) for r in results):
        rs = [r for r in results if (r["dataset"], r["n"]) == key]
        row = {"dataset": key[0], "n": key[1], "seeds": len(rs), "planted": sum(r["planted"] for r in rs)}
        for side in ("before", "after", "ungated"):
            found, flagged = sum(r[side]["found"] for r in rs), sum(r[side]["flagged"] for r in rs)
            row[side] = {"found": found, "flagged": flagged,
                         "recall": round(found / row["planted"], 3) if row["planted"] else None,
                         "precision": round(found / flagged, 3) if flagged else None,
                         "head_accuracy": round(float(np.mean([r[side]["head_accuracy"] for r in rs])), 3)}
        row["after"]["chance"] = round(float(np.mean([r["after"]["chance"] or 0 for r in rs])), 3)
        row["after"]["gate_refused"] = sum(r["after"]["gate_ok"] is False for r in rs)
        out.append(row)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000, 5000])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--flip", type=float, default=0.04)
    ap.add_argument("--datasets", nargs="+", default=["digits", "fashion"], choices=["digits", "fashion"])
    ap.add_argument("--shuffled", action="store_true", help="add rows with every label drawn at random")
    args = ap.parse_args(argv)
    loaders = {"digits": digits_images, "fashion": fashion_images}
    results = []
    with tempfile.TemporaryDirectory(prefix="label-audit-sizes-") as tmp:
        for name in args.datasets:
            images, labels = loaders[name]()
            for n in [s for s in args.sizes if s <= len(labels)]:
                for seed in args.seeds if n < 5000 else args.seeds[:1]:
                    for shuffled in ([False, True] if args.shuffled and n <= 1000 else [False]):
                        results.append(one(name, images, labels, n, seed, args.flip, shuffled, Path(tmp)))
                        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"summary": pooled(results), "flip": args.flip, "command": " ".join(sys.argv)}, indent=1))


if __name__ == "__main__":
    main()
