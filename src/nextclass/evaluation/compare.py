"""``nextclass compare RUN_A RUN_B``: is B better than A on the same test images, or is it noise?

Both runs' saved predictions of one split (``predictions.csv`` for test, written by the one scorer) are paired
image by image. The comparison is refused, with one line naming the difference, when the runs were not tested on
the same images: another dataset (``data`` in the config), another split (seed or fractions), other class names,
or test images that one run has and the other lacks (beyond the images a run's ``--corrections`` left out, which
are then left out of both). When a run's corrections relabelled test images, both runs are scored against B's
labels (the later review) and the result says how many labels that changed.

The numbers (all paired, on the same images):

* accuracy and macro F1 of each run and their difference, per class too (accuracy of a class = its recall);
* the **exact McNemar test**: of the images exactly one run gets right, B's share under "no difference" is
  Binomial(n_discordant, 1/2); two-sided p from :func:`scipy.stats.binomtest` (McNemar 1947; the exact form
  recommended for classifier comparison by Dietterich 1998, "Approximate statistical tests for comparing
  supervised classification learning algorithms");
* **paired bootstrap** 95% intervals of each difference: the same resampled images for both runs (seeded);
* the images that flipped: right in A and wrong in B, and wrong in A and right in B.

The verdict is one line: "B is better than A" (or worse) when p < 0.05, else "no significant difference".
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from nextclass.rundir import RunDir

__all__ = ["compare_runs", "Comparison", "CompareError", "ALPHA"]

ALPHA = 0.05  # the verdict's significance level


class CompareError(ValueError):
    """The two runs cannot be compared image by image; the message names the difference."""


@dataclass
class _Side:
    """One run's predictions of the split: image path -> (true class, predicted class, p(predicted))."""

    run: RunDir
    cfg: object
    classes: list[str]
    rows: dict[str, tuple[str, str, float]]
    left_out: set[str]


def _read_side(path: str | os.PathLike, split: str, which: str) -> _Side:
    rd = RunDir(path)
    if not rd.is_run():
        raise CompareError(f"RUN_{which} {path}: not a run directory (no config.yaml)")
    cfg = rd.read_config()
    meta = rd.read_bundle_meta() or {}
    if meta.get("task") == "multi-label":  # the paired test reads one right-or-wrong answer per image
        raise CompareError(f"RUN_{which} {path}: compare pairs single-label answers; this run is multi-label (its "
                           "metrics.json has mAP and per-label F1 per split)")
    pred = rd.predictions(split)
    if not pred.is_file():
        raise CompareError(f"RUN_{which} {path}: no saved {split} predictions ({pred.name}); the run has no {split} "
                           f"split or did not finish (`nextclass evaluate {path} --split {split}` writes them)")
    with open(pred, newline="", encoding="utf-8") as f:
        rows = {r["path"]: (r["true"], r["predicted"], float(r["probability"] or 0)) for r in csv.DictReader(f)}
    applied = rd.read_corrections_applied() or {}
    return _Side(rd, cfg, list(meta.get("classes") or []), rows, set(applied.get("left_out") or []))


def _refuse_if_different(a: _Side, b: _Side) -> None:
    """One line naming the first difference that makes the test images not the same."""
    ca, cb = a.cfg, b.cfg
    if str(ca.data) != str(cb.data):
        raise CompareError(f"not the same data: RUN_A was trained on {ca.data}, RUN_B on {cb.data}")
    if ca.seed != cb.seed or tuple(ca.split) != tuple(cb.split):
        raise CompareError(f"not the same split: RUN_A drew it with seed {ca.seed} and fractions "
                           f"{'/'.join(f'{x:g}' for x in ca.split)}, RUN_B with seed {cb.seed} and "
                           f"{'/'.join(f'{x:g}' for x in cb.split)}")
    if a.classes and b.classes and a.classes != b.classes:
        raise CompareError(f"not the same classes: RUN_A has {len(a.classes)} ({', '.join(a.classes[:5])}...), "
                           f"RUN_B {len(b.classes)} ({', '.join(b.classes[:5])}...)")
    only_a = set(a.rows) - set(b.rows) - b.left_out
    only_b = set(b.rows) - set(a.rows) - a.left_out
    if only_a or only_b:
        raise CompareError(f"not the same test images: {len(only_a)} only in RUN_A's predictions, {len(only_b)} only "
                           f"in RUN_B's (first: {sorted(only_a or only_b)[0]}); the data changed since one of the "
                           "runs, so its images or their hashes differ")


def _mcnemar(a_right: np.ndarray, b_right: np.ndarray) -> dict:
    """Exact McNemar: discordant pairs, B's share of them, two-sided binomial p."""
    from scipy.stats import binomtest

    broke = int(np.sum(a_right & ~b_right))
    fixed = int(np.sum(~a_right & b_right))
    n = broke + fixed
    p = float(binomtest(fixed, n, 0.5).pvalue) if n else 1.0
    return {"a_right_b_wrong": broke, "a_wrong_b_right": fixed, "discordant": n, "p_value": p}


def _macro_f1(y: np.ndarray, pred: np.ndarray, k: int, w: np.ndarray | None = None) -> float:
    """Macro F1 over the classes present in ``y`` or ``pred`` (scikit-learn's ``average='macro'`` with the
    labels that occur), from weighted counts so a bootstrap resample is one ``bincount``."""
    w = np.ones(len(y)) if w is None else w
    tp = np.bincount(y[y == pred], weights=w[y == pred], minlength=k)
    true_n = np.bincount(y, weights=w, minlength=k)
    pred_n = np.bincount(pred, weights=w, minlength=k)
    present = (true_n + pred_n) > 0
    f1 = np.divide(2 * tp, true_n + pred_n, out=np.zeros(k), where=present)
    return float(f1[present].mean()) if present.any() else 0.0


def _bootstrap(y, pa, pb, k: int, n_boot: int, seed: int) -> dict:
    """Paired bootstrap (the same resampled images for both runs) of the accuracy, macro-F1 and per-class
    accuracy differences: 95% percentile intervals."""
    rng = np.random.default_rng(seed)
    n = len(y)
    ra, rb = (pa == y).astype(float), (pb == y).astype(float)
    acc, f1, per = np.empty(n_boot), np.empty(n_boot), np.full((n_boot, k), np.nan)
    for i in range(n_boot):
        w = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)  # resample counts, one per image
        acc[i] = (w @ (rb - ra)) / n
        f1[i] = _macro_f1(y, pb, k, w) - _macro_f1(y, pa, k, w)
        cnt = np.bincount(y, weights=w, minlength=k)
        diff = np.bincount(y, weights=w * (rb - ra), minlength=k)
        per[i] = np.divide(diff, cnt, out=np.full(k, np.nan), where=cnt > 0)

    def ci(v):
        v = v[~np.isnan(v)]
        return [float(np.quantile(v, 0.025)), float(np.quantile(v, 0.975))] if len(v) else [None, None]

    return {"accuracy": ci(acc), "macro_f1": ci(f1), "per_class": [ci(per[:, c]) for c in range(k)]}


@dataclass
class Comparison:
    """The paired comparison of two runs on the same images (``to_dict()`` is the CLI's ``--json``)."""

    run_a: str  # run folder names (never a path)
    run_b: str
    split: str
    n: int
    classes: list[str]
    overall: dict  # accuracy / macro_f1: {"a", "b", "delta", "ci"}
    mcnemar: dict
    per_class: list[dict]
    flipped: dict  # "right_to_wrong" / "wrong_to_right": [{"id", "path", "true", "a", "b", "p_a", "p_b"}]
    notes: list[str] = field(default_factory=list)
    verdict: str = ""
    seed: int = 0
    n_boot: int = 0

    def to_dict(self, *, paths: bool = False) -> dict:
        """Plain JSON; ``paths=False`` (default) drops each flipped image's local path, keeping its id."""
        d = asdict(self)
        if not paths:
            for rows in d["flipped"].values():
                for r in rows:
                    r.pop("path", None)
        return d


def _verdict(c: Comparison) -> str:
    acc, m = c.overall["accuracy"], c.mcnemar
    lo, hi = acc["ci"]
    span = f"{100 * acc['delta']:+.2f} points of accuracy (95% CI {100 * lo:+.2f} to {100 * hi:+.2f})"
    test = (f"McNemar p = {m['p_value']:.2g} on {m['discordant']} images only one run gets right "
            f"({m['a_wrong_b_right']} fixed by B, {m['a_right_b_wrong']} broken)")
    if m["p_value"] < ALPHA and acc["delta"] != 0:
        word = "better" if m["a_wrong_b_right"] > m["a_right_b_wrong"] else "worse"
        return f"B is {word} than A: {span}, {test}: unlikely to be noise (p < {ALPHA:g})."
    return f"No significant difference: {span}, {test}: could be noise (p >= {ALPHA:g})."


def _ids(paths: list[str]) -> list[str]:
    """Display ids: paths relative to the folder all images share (no absolute path reaches a client)."""
    files = [p for p in paths if os.path.isabs(p)]
    if not files:
        return list(paths)
    root = os.path.commonpath([os.path.dirname(p) for p in files])
    return [Path(os.path.relpath(p, root)).as_posix() if os.path.isabs(p) else p for p in paths]


def compare_runs(run_a: str | os.PathLike, run_b: str | os.PathLike, *, split: str = "test", n_boot: int = 2000,
                 seed: int = 0) -> Comparison:
    """Compare two finished runs on the same images of ``split``: deltas, exact McNemar, paired bootstrap.

    Raises:
        CompareError: the runs were not tested on the same images (the message names the difference).

    Example:
        >>> c = compare_runs("runs/noisy", "runs/reviewed")  # doctest: +SKIP
        >>> c.verdict  # doctest: +SKIP
        'B is better than A: +0.84 points of accuracy (95% CI +0.40 to +1.29), McNemar p = 0.00021 ...'
    """
    a, b = _read_side(run_a, split, "A"), _read_side(run_b, split, "B")
    _refuse_if_different(a, b)
    paths = [p for p in b.rows if p in a.rows]  # B's order; images a run's corrections left out: in neither
    if not paths:
        raise CompareError(f"no {split} images in common")
    classes = b.classes or a.classes or sorted({b.rows[p][0] for p in paths})
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[b.rows[p][0]] for p in paths])
    pa, pb = (np.array([index.get(s.rows[p][1], -1) for p in paths]) for s in (a, b))
    notes = _notes(a, b, paths, split)
    c = _comparison(a, b, split, paths, classes, y, pa, pb, n_boot, seed)
    c.notes = notes
    c.verdict = _verdict(c)
    return c


def _notes(a: _Side, b: _Side, paths: list[str], split: str) -> list[str]:
    notes = []
    relabeled = sum(1 for p in paths if a.rows[p][0] != b.rows[p][0])
    if relabeled:
        notes.append(f"{relabeled} {split} label(s) differ between the runs (a run's corrections): both runs are "
                     "scored against RUN_B's labels")
    left = len(set(a.rows) - set(paths)) + len(set(b.rows) - set(paths))
    if left:
        notes.append(f"{left} {split} image(s) that a run's corrections left out are left out of both")
    return notes


def _comparison(a: _Side, b: _Side, split: str, paths: list[str], classes: list[str], y, pa, pb, n_boot: int,
                seed: int) -> Comparison:
    k = len(classes)
    ra, rb = pa == y, pb == y
    boot = _bootstrap(y, np.where(pa < 0, k, pa), np.where(pb < 0, k, pb), k + 1, n_boot, seed)
    f1a, f1b = _macro_f1(y, np.where(pa < 0, k, pa), k + 1), _macro_f1(y, np.where(pb < 0, k, pb), k + 1)
    overall = {"accuracy": {"a": float(ra.mean()), "b": float(rb.mean()), "delta": float(rb.mean() - ra.mean()),
                            "ci": boot["accuracy"]},
               "macro_f1": {"a": f1a, "b": f1b, "delta": f1b - f1a, "ci": boot["macro_f1"]}}
    per_class = []
    for ci_, name in enumerate(classes):
        m = y == ci_
        if not m.any():
            continue
        fa, fb = (_class_f1(y, p, ci_) for p in (pa, pb))
        per_class.append({"class": name, "n": int(m.sum()), "accuracy_a": float(ra[m].mean()),
                          "accuracy_b": float(rb[m].mean()), "delta": float(rb[m].mean() - ra[m].mean()),
                          "ci": boot["per_class"][ci_], "f1_a": fa, "f1_b": fb, "f1_delta": fb - fa,
                          "mcnemar": _mcnemar(ra[m], rb[m])})
    ids = _ids(paths)

    def rows(mask):
        return [{"id": ids[i], "path": paths[i], "true": classes[y[i]], "a": a.rows[paths[i]][1],
                 "b": b.rows[paths[i]][1], "p_a": a.rows[paths[i]][2], "p_b": b.rows[paths[i]][2]}
                for i in np.flatnonzero(mask)]

    return Comparison(a.run.name, b.run.name, split, len(paths), classes, overall, _mcnemar(ra, rb), per_class,
                      {"right_to_wrong": rows(ra & ~rb), "wrong_to_right": rows(~ra & rb)}, seed=seed, n_boot=n_boot)


def _class_f1(y: np.ndarray, pred: np.ndarray, c: int) -> float:
    tp = float(np.sum((y == c) & (pred == c)))
    denom = float(np.sum(y == c) + np.sum(pred == c))
    return 2 * tp / denom if denom else 0.0
