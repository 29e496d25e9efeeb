"""Benchmark: do prediction sets keep their promise? (issue 26)

Trains once per dataset through the public CLI (Fashion-MNIST under a short ``--max-minutes`` budget with a
90/10 train/val split of the official training set and the official 10k test images; sklearn's digits with
``nextclass train digits``), takes the selected model's held-out logits (val + test, TTA-averaged exactly as the
run measured them, through the one scorer's :func:`nextclass.evaluation.scorer.split_logits`) and saves them in
the run (``heldout_logits.npz``; a second call reuses them). Then, without retraining, it re-splits the held-out
images ``--splits`` times at random into a calibration part (the size of the run's val split) and a test part,
and on each split does what the finish step does on val: fit the temperature, fit the conformal threshold
(:mod:`nextclass.metrics.conformal`), build the test sets. Printed as JSON per dataset and coverage:
the mean empirical test coverage over the splits (target: within 1.5 points of the coverage asked for), its
spread, the mean set size and the share of empty and single-class sets, beside the top-1 accuracy; for APS as
nextclass ships it (randomised: ``u ~ U(0, 1)`` tie-breaking, drawn afresh on every split), deterministic APS
(``u = 1``) and randomised RAPS.

    python bench/coverage.py [--minutes 4] [--splits 100] [--output /tmp/cov-bench]

A run already in ``--output`` (same name) is reused: only the re-splitting is repeated.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

COVERAGES = (0.90, 0.95)
#: (name, keyword arguments of the conformity score). RAPS: lambda 0.01 beyond the k_reg = 2 most probable classes.
METHODS = (("aps", {"randomized": True}), ("aps-deterministic", {}),
           ("raps", {"randomized": True, "penalty": 0.01, "k_reg": 2}))


def _train(name: str, args: argparse.Namespace) -> tuple[Path, float]:
    run = Path(args.output) / name
    if (run / "model" / "model.json").is_file():
        return run, 0.0
    cmd = [sys.executable, "-m", "nextclass", "train", "digits" if name == "digits" else "fashion-mnist",
           "--output", args.output, "--name", name, "-q"]
    cmd += ["--epochs", "15"] if name == "digits" else ["--max-minutes", str(args.minutes), "--split", "90/10/0"]
    print("$ " + " ".join(["nextclass"] + cmd[3:]), file=sys.stderr)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    return run, time.time() - t0


def heldout_logits(run: Path) -> dict[str, np.ndarray]:
    """The run's val and test logits and labels, as its finish step measured them (cached in the run)."""
    cache = run / "heldout_logits.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    from nextclass.bundle import load_model
    from nextclass.evaluation.scorer import split_logits
    from nextclass.evaluation.targets import bundle_scoring, run_split
    from nextclass.rundir import RunDir

    rd = RunDir(run)
    cfg = rd.read_config()
    model, meta = load_model(rd.bundle)
    s = bundle_scoring(rd, meta, cfg, tta=None, batch_size=None, robustness=False, cache_dir=cfg.cache_dir)
    out = {}
    for split in ("val", "test"):
        images, _ = run_split(rd, cfg, split, s.pp, cfg.cache_dir, progress=False)
        lg = split_logits(model, images, s)
        out[f"{split}_logits"], out[f"{split}_labels"] = lg.logits.astype(np.float32), np.asarray(lg.labels)
    np.savez(cache, **out)
    return out


def _one_split(logits: np.ndarray, labels: np.ndarray, n_cal: int, rng: np.random.Generator) -> dict:
    """One random calibration/test split: per (method, coverage) the test coverage, mean size, empty/singleton."""
    from nextclass.metrics.calibration import fit_temperature
    from nextclass.metrics.classification import softmax
    from nextclass.metrics.conformal import class_scores, conformal_quantile

    perm = rng.permutation(len(labels))
    cal, test = perm[:n_cal], perm[n_cal:]
    with contextlib.redirect_stderr(io.StringIO()):  # the temperature's notes, once per split
        t = fit_temperature(logits[cal], labels[cal])
    probs = softmax(logits, t)
    u = rng.uniform(size=len(labels))
    out = {"accuracy": float((probs[test].argmax(1) == labels[test]).mean())}
    for name, kw in METHODS:
        scores = class_scores(probs, penalty=kw.get("penalty", 0.0), k_reg=kw.get("k_reg", 1),
                              u=u if kw.get("randomized") else None)
        true = scores[np.arange(len(labels)), labels]
        for c in COVERAGES:
            q = conformal_quantile(true[cal], c)
            size = (scores[test] <= q).sum(axis=1)
            out[f"{name}@{c}"] = (float((true[test] <= q).mean()), float(size.mean()), float((size == 0).mean()),
                                  float((size == 1).mean()))
    return out


def resplit(d: dict[str, np.ndarray], splits: int, seed: int) -> dict:
    logits = np.concatenate([d["val_logits"], d["test_logits"]]).astype(np.float64)
    labels = np.concatenate([d["val_labels"], d["test_labels"]])
    n_cal = len(d["val_labels"])
    rng = np.random.default_rng(seed)
    rows = [_one_split(logits, labels, n_cal, rng) for _ in range(splits)]
    acc = np.array([r["accuracy"] for r in rows])
    res = {"calibration_n": n_cal, "test_n": int(len(labels) - n_cal), "splits": splits,
           "top1_accuracy": round(float(acc.mean()), 4), "sets": {}}
    for name, _ in METHODS:
        for c in COVERAGES:
            a = np.array([r[f"{name}@{c}"] for r in rows])
            res["sets"][f"{name}@{c}"] = {
                "target": c, "mean_coverage": round(float(a[:, 0].mean()), 4), "sd": round(float(a[:, 0].std()), 4),
                "min": round(float(a[:, 0].min()), 4), "max": round(float(a[:, 0].max()), 4),
                "within_1.5_points": bool(abs(a[:, 0].mean() - c) <= 0.015),
                "mean_set_size": round(float(a[:, 1].mean()), 3), "empty": round(float(a[:, 2].mean()), 4),
                "singleton": round(float(a[:, 3].mean()), 4)}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=4.0, help="Fashion-MNIST training budget (whole command)")
    ap.add_argument("--splits", type=int, default=100, help="random calibration/test re-splits (>= 20)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", default="/tmp/cov-bench")
    args = ap.parse_args()
    out = {"command": "python bench/coverage.py " + " ".join(sys.argv[1:]), "datasets": {}}
    for name in ("fashion-mnist", "digits"):
        run, wall = _train(name, args)
        t0 = time.time()
        res = resplit(heldout_logits(run), args.splits, args.seed)
        res["train_wall_s"] = round(wall, 1)
        res["resplit_s"] = round(time.time() - t0, 1)
        out["datasets"][name] = res
    out["holds"] = all(v["within_1.5_points"] for d in out["datasets"].values()
                       for k, v in d["sets"].items() if k.startswith("aps@"))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
