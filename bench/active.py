"""Benchmark (issue 16): which images to label next on Fashion-MNIST - ``suggest`` vs random vs uncertainty.

Fashion-MNIST from nextclass's built-in ``fashion-mnist`` source (as PNG files + CSV manifests, see
``fashion_files.py``). Seeded draws from the official 60k training images: a fixed labelled validation set
(``--val``, 1,000 images, the same for every strategy and round: model selection and the calibration
temperature), ``--start`` (500) labelled training images and an unlabelled pool of ``--pool`` (10,000)
candidates. Each round, each strategy adds ``--step`` (500) images from the pool (their true labels are
then used) and a model is trained from scratch on everything labelled so far:

* ``suggest``: ``nextclass.suggest(run, pool, n=500)`` with the previous round's run (calibrated margin
  uncertainty x embedding diversity, copies of labelled images skipped);
* ``uncertainty``: ``nextclass.suggest(..., strategy="uncertainty")``, the 500 smallest margins alone;
* ``random``: 500 pool images drawn uniformly (numpy, seeded), no model involved.

Every run is the public ``nextclass.train`` with the same model, epochs, seed and options (``tta`` off,
no neighbour index, no report: the same for all, to keep the benchmark inside ~25 minutes on one thread);
round 0 (the first 500) is one run shared by all strategies. The score is accuracy on the official 10k
test images. Prints JSON. Target: ``suggest`` >= random at every round.

    OMP_NUM_THREADS=1 .venv/bin/python bench/active.py [--seed 0] [--epochs 20] [--rounds 3] [--pool 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_files import bench_workspace, write_manifest  # noqa: E402

STRATEGIES = ("suggest", "random", "uncertainty")


def train_on(files, labelled: np.ndarray, val: np.ndarray, name: str, args, work: Path) -> tuple[Path, dict]:
    """A run on ``labelled`` (train) + ``val`` + the official test images; returns (run, its numbers)."""
    import nextclass

    manifest = work / f"{name}.csv"
    manifest.unlink(missing_ok=True)
    for rows, split in ((labelled, "train"), (val, "val"), (files.test, "test")):
        write_manifest(manifest, files, rows, files.labels[rows], split)
    t0 = time.time()
    run = Path(nextclass.train(data=str(manifest), model=args.model, epochs=args.epochs, seed=args.seed,
                               threads=args.threads, tta=False, neighbor_index=0, report=False,
                               output=str(work / "runs"), name=name, cache_dir=str(work / "cache"), progress=False))
    m = json.loads((run / "metrics.json").read_text())
    return run, {"labelled": int(len(labelled)), "test_accuracy": round(m["test"]["accuracy"], 4),
                 "val_accuracy": round(m["val"]["accuracy"], 4), "train_seconds": round(time.time() - t0, 1)}


def pick(strategy: str, run: Path, files, pool: np.ndarray, n: int, seed: int, work: Path) -> tuple[np.ndarray, dict]:
    """``n`` images of ``pool`` (indices into ``files``) chosen by ``strategy``, and what the choice cost."""
    t0 = time.time()
    if strategy == "random":
        chosen = np.random.default_rng(seed).choice(pool, n, replace=False)
        return chosen, {"pick_seconds": round(time.time() - t0, 1)}
    import nextclass

    res = nextclass.suggest(str(run), [files.paths[i] for i in pool], n=n, strategy=strategy, seed=seed,
                            cache_dir=str(work / "cache"), progress=False)
    by_path = {files.paths[i]: i for i in pool}
    chosen = np.array([by_path[r["path"]] for r in res["rows"]])
    info = {"pick_seconds": round(time.time() - t0, 1), "skipped_duplicates": res["skipped_duplicates"],
            "mean_margin_of_picks": round(float(np.mean([r["margin"] for r in res["rows"]])), 4)}
    return chosen, info


def _classes(files, rows: np.ndarray) -> dict:
    c = Counter(files.classes[int(y)] for y in files.labels[rows])
    return {"largest_class_share": round(max(c.values()) / len(rows), 3), "classes": len(c)}


def run_strategy(strategy: str, files, start: np.ndarray, pool: np.ndarray, val: np.ndarray, run0: Path,
                 args, work: Path) -> list[dict]:
    """Rounds 1..R of one strategy, each from the previous round's run."""
    labelled, left, run, rounds = start, pool, run0, []
    for r in range(1, args.rounds + 1):
        chosen, info = pick(strategy, run, files, left, args.step, args.seed * 100 + r, work)
        labelled = np.concatenate([labelled, chosen])
        left = np.setdiff1d(left, chosen)
        run, numbers = train_on(files, labelled, val, f"s{args.seed}-{strategy}-r{r}", args, work)
        rounds.append({"round": r, **numbers, **info, "picked": _classes(files, chosen)})
        print(f"{strategy} round {r}: {numbers['labelled']} labelled, test {numbers['test_accuracy']:.4f}",
              file=sys.stderr, flush=True)
    return rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=500)
    ap.add_argument("--step", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pool", type=int, default=10000, help="unlabelled candidates (drawn once from the 60k)")
    ap.add_argument("--val", type=int, default=1000, help="fixed labelled validation images")
    ap.add_argument("--model", default="fast_resnet")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--work", default="/tmp/nextclass-bench/active")
    args = ap.parse_args()
    t0 = time.time()
    work, files = bench_workspace(args.work, args.threads)
    order = np.random.default_rng(args.seed).permutation(files.train)
    val, start = order[:args.val], order[args.val:args.val + args.start]
    pool = order[args.val + args.start:args.val + args.start + args.pool]
    run0, first = train_on(files, start, val, f"s{args.seed}-start", args, work)
    res = {"benchmark": "active_learning", "data": "fashion-mnist (built-in source, as PNG + CSV manifests)",
           "seed": args.seed, "model": args.model, "epochs": args.epochs, "val_images": int(len(val)),
           "pool": int(len(pool)), "start": args.start, "step": args.step, "threads": args.threads,
           "cpus": os.cpu_count(), "round0": {**first, "picked": _classes(files, start)}, "strategies": {}}
    for s in args.strategies.split(","):
        res["strategies"][s] = run_strategy(s, files, start, pool, val, run0, args, work)
    acc = {s: [first["test_accuracy"]] + [r["test_accuracy"] for r in rounds] for s, rounds in res["strategies"].items()}
    res["test_accuracy_per_round"] = acc
    res["labelled_per_round"] = [args.start + r * args.step for r in range(args.rounds + 1)]
    if "suggest" in acc and "random" in acc:
        diff = [round(a - b, 4) for a, b in zip(acc["suggest"][1:], acc["random"][1:])]
        res["suggest_minus_random"] = diff
        res["target_suggest_ge_random_every_round"] = all(d >= 0 for d in diff)
    res["wall_seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
