"""Benchmark (issue 25): the data loop on planted label noise, end to end through the public API.

Extends ``bench/label_noise.py`` (its ``flip_labels``) from "drop the flags" to the loop a user runs:

1. A seeded ``--train-subset`` of Fashion-MNIST's 60k training images (PNG files + a CSV manifest, as in
   ``label_noise.py``) with ``--flip`` (5 %) of their labels flipped to another class (seeded, uniform); test =
   the official 10k with their clean labels. Val is carved (10 %) from train by nextclass.
2. **A**: ``nextclass.train`` on the noisy labels (``--model``, ``--epochs``, seed 0).
3. ``nextclass.audit(manifest_of_training_images, labels=True, model=A)``: the flags of ``audit --labels --model
   RUN``, ranked (label_issues.csv).
4. A scripted reviewer: for the top ``--review`` fraction of the flags (K; a person's time), accepts the suggested
   label, written row by row with :func:`nextclass.data.corrections.append_correction` (content hash, "relabel",
   reason "label issue"). The same K images dropped instead, and all flags dropped (what ``label_noise.py``
   measured), are two more corrections files; with ``--oracle`` a fourth relabels every planted flip to its
   true label (a perfect reviewer of every image: the ceiling).
5. Each corrections file -> ``nextclass.train(..., corrections=FILE)`` (same manifest, split and seed) ->
   ``nextclass.compare(A, run)``: accuracy won back, its paired bootstrap interval and exact McNemar p; and
   ``compare(drop top-K, relabel top-K)``: relabelling against dropping at the same effort.

Prints JSON (and the table rows for bench/RESULTS.md). The test labels are never touched: the reviewer only
sees the training images' flags::

    OMP_NUM_THREADS=2 nice .venv/bin/python bench/label_loop.py [--train-subset 10000] [--epochs 8]
        [--review 0.5] [--flip 0.05] [--seed 0] [--model fast_resnet] [--oracle] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_files import bench_workspace, write_manifest  # noqa: E402
from label_noise import flip_labels  # noqa: E402


def _train(manifest: Path, name: str, args, work: Path, corrections: Path | None = None) -> tuple[Path, float]:
    import nextclass

    t0 = time.time()
    shutil.rmtree(work / "runs" / name, ignore_errors=True)
    run = Path(nextclass.train(data=str(manifest), model=args.model, epochs=args.epochs, seed=args.seed,
                               split=(0.9, 0.1, 0.0), threads=args.threads, output=str(work / "runs"), name=name,
                               report=False, robustness=False, neighbor_index=0, cache_dir=str(work / "cache"),
                               corrections=str(corrections) if corrections else None, progress=False))
    return run, time.time() - t0


def _flags(files, subset: np.ndarray, noisy: np.ndarray, run: Path, work: Path, seed: int) -> list[dict]:
    """``audit --labels --model RUN`` on the training images (a manifest of the subset): the ranked flags."""
    import nextclass

    manifest = work / "audit-train.csv"
    manifest.unlink(missing_ok=True)
    write_manifest(manifest, files, subset, noisy[subset], "train")
    out = work / "audit"
    shutil.rmtree(out, ignore_errors=True)
    nextclass.audit(str(manifest), labels=True, model=str(run), output=str(out), splits="none",
                    cache_dir=str(work / "cache"), seed=seed, progress=False)
    with open(out / "label_issues.csv", newline="") as f:
        return sorted(csv.DictReader(f), key=lambda r: int(r["rank"]))


def _write_reviews(files, flags: list[dict], flipped: set, args, work: Path) -> dict:
    """The corrections files: the scripted reviewer (top K, suggestion accepted), the same K dropped, every flag
    dropped, and with ``--oracle`` every planted flip relabelled to its true label. Returns the reviewer's tally."""
    from nextclass.data.corrections import Correction, append_correction, sample_ids, sample_shas
    from nextclass.data.sources import load_source

    src = load_source(str(work / "audit-train.csv"))
    ids, shas = sample_ids(src), sample_shas(src, cache_dir=str(work / "cache"))
    key = {s.path: (i, h) for s, i, h in zip(src.samples, ids, shas)}
    row_of = {p: n for n, p in enumerate(files.paths)}
    k = int(round(args.review * len(flags)))
    paths = {name: work / f"{name}.jsonl" for name in ("relabel_top_k", "drop_top_k", "drop_all_flags", "oracle")}
    for p in paths.values():
        p.unlink(missing_ok=True)
    tally = {"flags": len(flags), "reviewed": k, "hit_a_flip": 0, "restored_true_label": 0}
    for n, r in enumerate(flags):
        i, h = key[r["path"]]
        if n < k:
            append_correction(paths["relabel_top_k"], Correction(i, h, "relabel", label=r["suggested_label"],
                                                                 reason="label issue"))
            append_correction(paths["drop_top_k"], Correction(i, h, "drop", reason="label issue"))
            row = row_of[r["path"]]
            tally["hit_a_flip"] += row in flipped
            tally["restored_true_label"] += files.classes[files.labels[row]] == r["suggested_label"]
        append_correction(paths["drop_all_flags"], Correction(i, h, "drop", reason="label issue"))
    if args.oracle:
        for s, i, h in zip(src.samples, ids, shas):
            row = row_of[s.path]
            if row in flipped:
                append_correction(paths["oracle"], Correction(i, h, "relabel", label=files.classes[files.labels[row]],
                                                              reason="oracle"))
    else:
        del paths["oracle"]
    return {"tally": tally, "files": paths}


def _row(name: str, c: dict | None, run: Path, seconds: float) -> dict:
    m = json.loads((run / "metrics.json").read_text())["test"]
    applied = json.loads((run / "corrections.applied.json").read_text()) if (run / "corrections.applied.json").exists() \
        else {}
    out = {"run": name, "test_accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro"]["f1"], 4),
           "relabeled": applied.get("relabeled", 0), "dropped": applied.get("dropped", 0),
           "train_seconds": round(seconds, 1)}
    if c is not None:
        acc = c["overall"]["accuracy"]
        out.update({"vs_A_points": round(100 * acc["delta"], 2),
                    "ci_points": [round(100 * x, 2) for x in acc["ci"]],
                    "fixed": c["mcnemar"]["a_wrong_b_right"], "broken": c["mcnemar"]["a_right_b_wrong"],
                    "mcnemar_p": float(f"{c['mcnemar']['p_value']:.3g}"), "verdict": c["verdict"]})
    return out


def main() -> None:
    import nextclass

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flip", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="fast_resnet")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--train-subset", type=int, default=10000)
    ap.add_argument("--review", type=float, default=0.5, help="fraction of the flags the reviewer gets through")
    ap.add_argument("--oracle", action="store_true", help="also retrain with every planted flip fixed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/nextclass-bench/label-loop")
    args = ap.parse_args()
    t0 = time.time()
    work, files = bench_workspace(args.work, args.threads)
    rng = np.random.default_rng(args.seed + 1)
    subset = np.sort(rng.choice(files.train, min(args.train_subset, len(files.train)), replace=False))
    noisy, flipped = flip_labels(files.labels, subset, args.flip, files.classes, args.seed)
    manifest = work / "noisy.csv"
    manifest.unlink(missing_ok=True)
    write_manifest(manifest, files, subset, noisy[subset], "train")
    write_manifest(manifest, files, files.test, files.labels[files.test], "test")
    res = {"benchmark": "label_loop", "model": args.model, "epochs": args.epochs, "train_subset": int(len(subset)),
           "flipped": int(len(flipped)), "review_fraction": args.review, "seed": args.seed, "threads": args.threads,
           "test_images": int(len(files.test)), "cpus": os.cpu_count()}
    run_a, sec = _train(manifest, "A-noisy", args, work)
    rows = [_row("A: noisy labels, nothing done", None, run_a, sec)]
    t1 = time.time()
    flags = _flags(files, subset, noisy, run_a, work, args.seed)
    res["audit_seconds"] = round(time.time() - t1, 1)
    review = _write_reviews(files, flags, set(map(int, flipped)), args, work)
    res["reviewer"] = review["tally"]
    row_of, flips = {p: n for n, p in enumerate(files.paths)}, set(map(int, flipped))
    res["reviewer"]["flags_that_are_flips"] = sum(1 for r in flags if row_of[r["path"]] in flips)
    runs = {}
    for name, f in review["files"].items():
        if not f.exists():  # nothing flagged (the quality gate held the flags back): nothing to review
            rows.append({"run": name, "skipped": "no flags"})
            continue
        runs[name], sec = _train(manifest, name, args, work, corrections=f)
        c = nextclass.compare(str(run_a), str(runs[name]), html=work / f"compare-{name}.html")
        rows.append(_row(name, c, runs[name], sec))
    if "relabel_top_k" in runs:
        c = nextclass.compare(str(runs["drop_top_k"]), str(runs["relabel_top_k"]), html=False)
        res["relabel_vs_drop_same_k"] = _row("relabel_top_k vs drop_top_k", c, runs["relabel_top_k"], 0)
    res["rows"] = rows
    res["wall_seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
