"""Benchmark (issue 16): finding flipped labels in Fashion-MNIST, and what dropping them buys.

1. Load Fashion-MNIST with nextclass's built-in ``fashion-mnist`` source and flip ``--flip`` (5 %) of the
   60k training labels, each to another class drawn uniformly at random (seeded). ``--noise pair`` instead
   flips that many labels inside one class pair (Shirt <-> T-shirt_top, half each way): errors concentrated
   where the classes really are confusable.
2. Out-of-sample probabilities for every training image, exactly as ``nextclass audit DATA --labels``
   makes them (:func:`nextclass.curation.label_audit.out_of_sample_probs`: the default embedding, i.e. the
   28-px pixels, PCA keeping 99 % of the variance up to 256 dims, C chosen by cross-validation, 5-fold
   cross-validated logistic heads; the quality gate is reported beside), then on the *same* probabilities:
   * **cleanlab**: :func:`nextclass.data.label_issues.find_label_issues`, what ``audit --labels`` flags;
   * cleanlab without nextclass's guard (a flag needs p(suggested) >= 0.5);
   * **previous method**: the confident-learning rule of the deleted ``nextclass/data/label_suspects.py``,
     rewritten below (:func:`previous_method`).
   Precision and recall of each flagged set against the flipped images.
3. Retrain (public ``nextclass.train``, same model, epochs and seed) on a random ``--train-subset`` of the
   noisy training images: keeping every image, after dropping cleanlab's flags, and after dropping the
   previous method's flags; ``--reference`` adds a run on the same subset with the original labels. Val is
   carved (10 %) from the kept training images by nextclass, as a user's run would; test is the official
   10k (clean labels). Also reported: how many of the clean test images each run's end-of-run label check
   flags.
4. ``audit --labels --model RUN``: step 2's cleanlab path again, on the trunk embedding of the run that kept
   every noisy image, scored on the images that run trained on and on the others; then one more retrain after
   dropping *those* flags (train, ``audit --labels --model RUN``, drop, retrain: the workflow docs/audit.md
   recommends).

The loop after step 4 - a reviewer's corrections file (relabel the top flags to the suggested class) applied with
``train --corrections`` and judged with ``nextclass compare`` against doing nothing and against dropping - is
``bench/label_loop.py`` (issue 25), which reuses :func:`flip_labels`.

Prints JSON. Pin threads for a fair timing (the machine is shared)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/label_noise.py [--flip 0.05] [--seed 0] [--epochs 8]
        [--train-subset 20000] [--model fast_resnet] [--noise uniform|pair] [--no-retrain] [--reference]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fashion_files import bench_workspace, write_manifest  # noqa: E402

PAIR = ("Shirt", "T-shirt_top")


def flip_labels(labels: np.ndarray, rows: np.ndarray, fraction: float, classes: list[str], seed: int,
                noise: str = "uniform") -> tuple[np.ndarray, np.ndarray]:
    """(noisy copy of ``labels``, the flipped rows). ``uniform``: ``fraction`` of ``rows``, each to a random other
    class; ``pair``: as many flips, half of them Shirt -> T-shirt_top and half the other way."""
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    n = int(round(fraction * len(rows)))
    if noise == "uniform":
        flipped = np.sort(rng.choice(rows, n, replace=False))
        noisy[flipped] = (labels[flipped] + rng.integers(1, len(classes), n)) % len(classes)
        return noisy, flipped
    a, b = (classes.index(c) for c in PAIR)
    parts = []
    for src, dst, k in ((a, b, n // 2), (b, a, n - n // 2)):
        pick = rng.choice(rows[labels[rows] == src], k, replace=False)
        noisy[pick] = dst
        parts.append(pick)
    return noisy, np.sort(np.concatenate(parts))


def previous_method(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Previous method (nextclass/data/label_suspects.py before issue 16, rewritten here on arrays since the
    package file is deleted): confident learning with per-class thresholds ``t_c`` = the mean probability
    the model gives ``c`` on the images labelled ``c``; an image labelled ``y`` is flagged when the model's
    top class ``k != y`` has ``p_k >= t_k``. Flags ranked by ``p_y`` (lowest first), ties by ``-p_k``.
    The package listed only the first 100 in audit.json (its ``n`` counted all); here all are returned.
    """
    idx = np.arange(len(labels))
    p_given = probs[idx, labels]
    thr = {c: float(p_given[labels == c].mean()) for c in np.unique(labels)}
    top = probs.argmax(axis=1)
    p_top = probs[idx, top]
    t_top = np.array([thr.get(int(k), np.inf) for k in top])
    flagged = np.flatnonzero((top != labels) & (p_top >= t_top))
    return flagged[np.lexsort((-p_top[flagged], p_given[flagged]))]


def scores(flagged, truth) -> dict:
    """Precision, recall and F1 of a flagged set against the truly flipped set."""
    f, t = set(map(int, flagged)), set(map(int, truth))
    hit = len(f & t)
    p = hit / len(f) if f else float("nan")
    r = hit / len(t) if t else float("nan")
    return {"flagged": len(f), "correct": hit, "precision": round(p, 4), "recall": round(r, 4),
            "f1": round(2 * p * r / (p + r), 4) if f and hit else 0.0}


def _probabilities(files, noisy: np.ndarray, work: Path, seed: int, model=None):
    """(source, out-of-sample probabilities, files index of each probability row, seconds) for the noisy
    training images, written as the manifest a user would audit (``nextclass audit X --labels``)."""
    from nextclass.curation.label_audit import out_of_sample_probs
    from nextclass.data.sources import load_source

    manifest = work / f"noisy-train-{seed}.csv"
    manifest.unlink(missing_ok=True)
    write_manifest(manifest, files, files.train, noisy[files.train], "train")
    source = load_source(str(manifest))
    t0 = time.time()
    oos = out_of_sample_probs(source, model=model, cache_dir=str(work / "cache"), seed=seed, progress=False)
    by_path = {p: i for i, p in enumerate(files.paths)}
    row_of = np.array([by_path[source.samples[p].path] for p in oos.positions])
    return source, oos, row_of, time.time() - t0


def judge(files, noisy: np.ndarray, flipped: np.ndarray, work: Path, seed: int) -> dict:
    """Step 2: the same out-of-sample probabilities judged by cleanlab and by the previous method."""
    from nextclass.data.label_issues import find_label_issues, quality_gate

    source, oos, row_of, seconds = _probabilities(files, noisy, work, seed)
    truth = np.flatnonzero(np.isin(row_of, flipped))
    true_labels = np.array([source.classes.index(files.classes[y]) for y in files.labels[row_of]])  # manifest order
    clean = find_label_issues(oos.probs, oos.labels)
    loose = find_label_issues(oos.probs, oos.labels, min_suggested_probability=0.0)
    prev = previous_method(oos.probs, oos.labels)
    out = {"checked": len(oos.labels), "flipped": len(truth), "what": oos.what,
           "head_accuracy_vs_given_labels": round(oos.head_accuracy, 4),
           "head_accuracy_vs_true_labels": round(float((oos.probs.argmax(1) == true_labels).mean()), 4),
           "probabilities_seconds": round(seconds, 1), "gate": quality_gate(oos.probs, oos.labels).as_dict(),
           "cleanlab": scores([i.position for i in clean], truth),
           "cleanlab_without_guard": scores([i.position for i in loose], truth),
           "previous_method": {**scores(prev, truth), "listed_in_audit_json": int(min(len(prev), 100))}}
    out["cleanlab"]["flags_per_class_pair"] = _pairs([i.position for i in clean], oos.labels, oos.probs,
                                                     source.classes)
    for key, flagged in (("cleanlab", [i.position for i in clean]), ("previous_method", prev)):
        out[key]["recall_per_flip_pair"] = _pair_recall(flagged, truth, oos.labels, true_labels, source.classes)
    return {"summary": out, "drop": {"cleanlab": row_of[[i.position for i in clean]], "previous": row_of[prev]}}


def judge_with_run(files, noisy: np.ndarray, flipped: np.ndarray, work: Path, seed: int, run: Path) -> dict:
    """``audit --labels --model RUN``: the same cleanlab path on the embedding of a run trained on the noisy
    labels, scored separately on the images that run trained on and on the others."""
    from nextclass.data.label_issues import find_label_issues

    source, oos, row_of, seconds = _probabilities(files, noisy, work, seed, model=run)
    with open(run / "split.csv", newline="") as f:
        trained = {r["path"] for r in csv.DictReader(f) if r["split"] == "train"}
    flagged = np.array([i.position for i in find_label_issues(oos.probs, oos.labels)], dtype=np.int64)
    seen = np.array([files.paths[i] in trained for i in row_of])
    truth = np.flatnonzero(np.isin(row_of, flipped))
    out = {"what": oos.what, "head_accuracy_vs_given_labels": round(oos.head_accuracy, 4),
           "probabilities_seconds": round(seconds, 1), "all": scores(flagged, truth)}
    for name, mask in (("images_the_run_trained_on", seen), ("other_images", ~seen)):
        keep = np.flatnonzero(mask)
        out[name] = {"images": int(len(keep)), **scores(np.intersect1d(flagged, keep), np.intersect1d(truth, keep))}
    return {"summary": out, "drop": row_of[flagged]}


def _pairs(flagged, labels, probs, classes, top: int = 5) -> list:
    from collections import Counter

    others = probs.copy()
    others[np.arange(len(labels)), labels] = -1
    c = Counter((classes[labels[i]], classes[int(others[i].argmax())]) for i in flagged)
    return [{"given": a, "suggested": b, "n": n} for (a, b), n in c.most_common(top)]


def _pair_recall(flagged, truth, given, true, classes, top: int = 4) -> list:
    """Recall among the flipped images of the most common (true -> given) flips."""
    from collections import Counter

    found = set(map(int, flagged))
    c = Counter((int(true[i]), int(given[i])) for i in truth)
    out = []
    for (t, g), n in c.most_common(top):
        hit = sum(1 for i in truth if true[i] == t and given[i] == g and int(i) in found)
        out.append({"true": classes[t], "given": classes[g], "flipped": n, "found": hit, "recall": round(hit / n, 4)})
    return out


def retrain(files, labels: np.ndarray, rows: np.ndarray, name: str, args, work: Path) -> dict:
    """Train ``args.model`` for ``args.epochs`` on ``rows`` with ``labels`` (val carved by nextclass) and test on
    the official 10k; returns test accuracy and the end-of-run label check's flags on the clean test images."""
    import nextclass

    manifest = work / f"{name}.csv"
    manifest.unlink(missing_ok=True)
    write_manifest(manifest, files, rows, labels[rows], "train")
    write_manifest(manifest, files, files.test, files.labels[files.test], "test")
    t0 = time.time()
    run = Path(nextclass.train(data=str(manifest), model=args.model, epochs=args.epochs, seed=args.seed,
                               split=(0.9, 0.1, 0.0), threads=args.threads, output=str(work / "runs"), name=name,
                               report=False, neighbor_index=0, cache_dir=str(work / "cache"), progress=False))
    m = json.loads((run / "metrics.json").read_text())
    issues = json.loads((run / "audit.json").read_text()).get("label_issues", {})
    with open(run / "label_issues.csv", newline="") as f:  # every flag (audit.json lists the first 100)
        test = set(files.paths[i] for i in files.test)
        test_flags = sum(1 for r in csv.DictReader(f) if r["path"] in test)
    return {"train_images": int(len(rows)), "test_accuracy": round(m["test"]["accuracy"], 4),
            "val_accuracy": round(m["val"]["accuracy"], 4), "seconds": round(time.time() - t0, 1),
            "end_of_run_flags": {"n": issues.get("n"), "checked": issues.get("checked"),
                                 "clean_test_images_flagged": test_flags, "test_images": int(len(files.test))},
            "run": str(run)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flip", type=float, default=0.05)
    ap.add_argument("--noise", choices=("uniform", "pair"), default="uniform")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="fast_resnet")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--train-subset", type=int, default=20000, help="training images of each retraining run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-retrain", action="store_true")
    ap.add_argument("--reference", action="store_true", help="also retrain on the subset's original labels")
    ap.add_argument("--work", default="/tmp/nextclass-bench/label-noise")
    args = ap.parse_args()
    t0 = time.time()
    work, files = bench_workspace(args.work, args.threads)
    noisy, flipped = flip_labels(files.labels, files.train, args.flip, files.classes, args.seed, args.noise)
    res = {"benchmark": "label_noise", "data": "fashion-mnist (built-in source, as PNG + CSV manifests)",
           "noise": args.noise, "flip_fraction": args.flip, "flipped": int(len(flipped)), "seed": args.seed,
           "threads": args.threads, "cpus": os.cpu_count()}
    found = judge(files, noisy, flipped, work, args.seed)
    res["label_audit"] = found["summary"]
    if not args.no_retrain:
        rng = np.random.default_rng(args.seed + 1)
        subset = np.sort(rng.choice(files.train, min(args.train_subset, len(files.train)), replace=False))
        runs = {"keep_all": subset, "drop_cleanlab_flags": np.setdiff1d(subset, found["drop"]["cleanlab"]),
                "drop_previous_method_flags": np.setdiff1d(subset, found["drop"]["previous"])}
        res["retrain"] = {"model": args.model, "epochs": args.epochs, "subset": int(len(subset)),
                          "flipped_in_subset": int(np.isin(subset, flipped).sum()), "runs": {}}
        for name, rows in runs.items():
            res["retrain"]["runs"][name] = retrain(files, noisy, rows, f"{args.noise}-{args.seed}-{name}", args, work)
            res["retrain"]["runs"][name]["flipped_left"] = int(np.isin(rows, flipped).sum())
        by_run = judge_with_run(files, noisy, flipped, work, args.seed, Path(res["retrain"]["runs"]["keep_all"]["run"]))
        res["label_audit_with_run_trunk"] = by_run["summary"]
        rows = np.setdiff1d(subset, by_run["drop"])  # the workflow the docs recommend: train, audit --model RUN, retrain
        res["retrain"]["runs"]["drop_run_trunk_flags"] = retrain(files, noisy, rows, f"{args.noise}-{args.seed}-drop_run",
                                                                 args, work)
        res["retrain"]["runs"]["drop_run_trunk_flags"]["flipped_left"] = int(np.isin(rows, flipped).sum())
        if args.reference:
            res["retrain"]["runs"]["original_labels"] = retrain(files, files.labels, subset,
                                                                f"{args.noise}-{args.seed}-original", args, work)
    res["wall_seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
