"""Benchmark (issue 7): DDP training and sharded prediction against one process, in the same run.

1. ``train``: simple_cnn on Fashion-MNIST (array-backed built-in, a train subset) for a few epochs:
   one process with batch B (all cores) vs ``--nproc 2`` with batch B/2 per rank (same global batch,
   one thread per rank). Reported: median epoch images/s (from history.csv), wall time including
   process start-up, and val/test accuracy. On a 2-core CPU this measures the cost of DDP, not a
   speed-up: the same two cores do the work, plus gradient all-reduce over gloo.
2. ``predict``: ``nextclass predict`` on the val PNG files (train/5) with ``--nproc 1`` and ``--nproc 2``.

    flock /tmp/nextclass-bench.lock .venv/bin/python bench/ddp.py [--epochs 3] [--train 12000]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def _cli(*args: str) -> float:
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "nextclass", *args], check=True, capture_output=True, text=True)
    return time.time() - t0


def _run_summary(run: Path) -> dict:
    with open(run / "history.csv", newline="") as f:
        hist = list(csv.DictReader(f))
    m = json.loads((run / "metrics.json").read_text())
    return {"median_images_per_second": statistics.median(float(r["images_per_second"]) for r in hist[1:] or hist),
            "val_accuracy": round(m["val"]["accuracy"], 4), "test_accuracy": round(m["test"]["accuracy"], 4)}


def _manifest(work: Path, n_train: int) -> Path:
    """A CSV manifest over PNGs of a Fashion-MNIST subset (train/val/test), written once."""
    import numpy as np
    from PIL import Image

    from nextclass.data.sources import load_source

    out = work / "fmnist.csv"
    if out.exists():
        return out
    src = load_source("fashion-mnist", cache_dir=str(work / "cache"))
    rng = np.random.default_rng(0)
    train = [s for s in src.samples if s.split == "train"]
    test = [s for s in src.samples if s.split == "test"]
    pick = [train[i] for i in rng.choice(len(train), n_train + n_train // 5, replace=False)]
    rows = []
    for j, s in enumerate(pick + test[:2000]):
        split = "test" if j >= len(pick) else ("val" if j >= n_train else "train")
        p = work / "png" / split / f"{j:06d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(src.array[s.index]).squeeze()).save(p)
        rows.append((str(p), src.classes[s.label], split))
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        w.writerows(rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=128, help="global batch")
    ap.add_argument("--work", default="/tmp/nextclass-ddp-bench")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NEXTCLASS_CACHE", str(work / "cache"))
    data = _manifest(work, a.train)
    common = ["--model", "simple_cnn", "-e", str(a.epochs), "--no-hflip", "-o", str(work / "runs"), "-q",
              "--set", "report=false", "--seed", "0"]
    out: dict = {"machine": {"cpus": os.cpu_count()}, "epochs": a.epochs, "train_images": a.train, "global_batch": a.batch}
    results, names = {}, {}
    for nproc in (1, 2):
        name = names[nproc] = f"p{nproc}-{int(time.time())}"
        wall = _cli("train", str(data), *common, "-b", str(a.batch // nproc), "--nproc", str(nproc), "--name", name)
        results[nproc] = {**_run_summary(work / "runs" / name), "wall_seconds": round(wall, 1)}
    out["train"] = {"1proc": results[1], "2proc": results[2],
                    "ratio_images_per_second_2v1": round(results[2]["median_images_per_second"]
                                                         / results[1]["median_images_per_second"], 3),
                    "ratio_wall_2v1": round(results[2]["wall_seconds"] / results[1]["wall_seconds"], 3)}
    run = work / "runs" / names[1]
    n_files = len(list((work / "png" / "val").glob("*.png")))
    pred = {}
    for nproc in (1, 2):
        dest = work / f"predict-p{nproc}.csv"
        wall = _cli("predict", str(run), str(work / "png" / "val"), "--nproc", str(nproc), "-f", "csv", "-o", str(dest))
        with open(dest, newline="") as f:
            paths = [r["path"] for r in csv.DictReader(f)]
        assert len(paths) == len(set(paths)) == n_files, "a file was lost or duplicated"
        pred[nproc] = {"files": n_files, "wall_seconds": round(wall, 1), "files_per_second": round(n_files / wall, 1)}
    out["predict"] = {"1proc": pred[1], "2proc": pred[2],
                      "ratio_wall_2v1": round(pred[2]["wall_seconds"] / pred[1]["wall_seconds"], 3)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
