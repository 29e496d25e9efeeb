"""Benchmark: multi-label runs on Fashion-MNIST mosaics (issue 26).

Trains once through the public CLI on the mosaic manifest of ``bench/multilabel_data.py`` (56x56 images holding 1-4
Fashion-MNIST items, labels = the item classes present, with deliberately unequal label frequencies; val carved
from train by iterative stratification, test = the mosaics of the official test images), with defaults and a time
budget (``--minutes``). Then, from the run's own files (the held-out probabilities in ``predictions.csv`` and the
bundle's per-label offsets, temperatures and thresholds), prints JSON:

* ``map`` and per-label AP on test;
* macro and micro F1 on test at the **tuned thresholds** (chosen on val, max F1 per label) beside a **fixed 0.5**,
  once on the raw sigmoid of the network (what a plain sigmoid head answers) and once on the calibrated
  probabilities;
* each label's binary calibration error on test before (raw sigmoid) and after (offset and temperature fitted on
  val), from the run's test block, and their means;
* label frequency in train, so rare labels can be read beside their numbers.

    python bench/multilabel_data.py --out /tmp/nextclass-bench/fashion-mosaics --train 12000 --test 2000
    python bench/multilabel.py --data /tmp/nextclass-bench/fashion-mosaics/manifest.csv --minutes 5

A run already in ``--output`` (same name) is reused.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _train(args: argparse.Namespace) -> tuple[Path, float]:
    run = Path(args.output) / args.name
    if (run / "model" / "model.json").is_file():
        return run, 0.0
    cmd = [sys.executable, "-m", "nextclass", "train", args.data, "--max-minutes", str(args.minutes),
           "--output", args.output, "--name", args.name, "-q"]
    print("$ " + " ".join(["nextclass"] + cmd[3:]), file=sys.stderr)
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=sys.stderr)  # stdout holds only the JSON
    return run, time.time() - t0


def _test_probs(run: Path, labels: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated test probabilities (N, L) and 0/1 targets, as the run's finish step wrote them."""
    rows = list(csv.DictReader(open(run / "predictions.csv", newline="")))
    p = np.array([[float(r[f"p:{c}"]) for c in labels] for r in rows])
    y = np.array([[int(c in set(r["true"].split(";"))) for c in labels] for r in rows])
    return p, y


def _f1s(p: np.ndarray, y: np.ndarray, labels: list[str], thr) -> dict:
    from nextclass.metrics.multilabel import multilabel_metrics

    m = multilabel_metrics(p, y, labels, "test", thr)
    return {"macro_f1": m["macro"]["f1"], "micro_f1": m["micro"]["f1"], "exact_match": m["exact_match"]}


def measure(run: Path) -> dict:
    """The numbers of the module docstring, from the run directory."""
    from nextclass.metrics.multilabel import logits_from_probs, sigmoid

    meta = json.loads((run / "model" / "model.json").read_text())
    block = json.loads((run / "metrics.json").read_text())["test"]
    labels = list(meta["classes"])
    p, y = _test_probs(run, labels)
    t, off = np.asarray(meta["temperatures"]), np.asarray(meta["offsets"])
    raw = sigmoid(logits_from_probs(p) * t + off)  # the network's own sigmoid: undo temperature and offset
    cal = block["calibration"]["per_label"]
    return {
        "n_test": int(len(y)), "labels": len(labels), "map": block["map"],
        "tuned_thresholds_calibrated": _f1s(p, y, labels, meta["thresholds"]),
        "fixed_0.5_calibrated": _f1s(p, y, labels, 0.5),
        "fixed_0.5_raw_sigmoid": _f1s(raw, y, labels, 0.5),
        "mean_ece_before": block["calibration"]["mean_ece_before"],
        "mean_ece_after": block["calibration"]["mean_ece_after"],
        "per_label": {c: {"support_test": int(y[:, j].sum()), "ap": block["per_label"][c]["ap"],
                          "f1_tuned": block["per_label"][c]["f1"], "threshold": meta["thresholds"][j],
                          "offset": meta["offsets"][j], "temperature": meta["temperatures"][j],
                          "ece_before": cal[c]["ece_before"], "ece_after": cal[c]["ece_after"]}
                      for j, c in enumerate(labels)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/nextclass-bench/fashion-mosaics/manifest.csv")
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--output", default="/tmp/nextclass-bench/multilabel-runs")
    ap.add_argument("--name", default=None, help="run name (default: mosaics-<minutes>min)")
    args = ap.parse_args()
    args.name = args.name or f"mosaics-{args.minutes:g}min"
    run, seconds = _train(args)
    out = {"run": str(run), "train_wall_s": round(seconds, 1), "minutes": args.minutes, **measure(run)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
