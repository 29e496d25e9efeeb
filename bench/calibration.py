"""Benchmark: calibration (temperature scaling) and TTA on Fashion-MNIST with simple_cnn.

Trains ``simple_cnn`` briefly through the real ``nextclass.train`` path (or reuses ``--run``), then
recomputes from the bundle, independently of the numbers the run stored:

* the temperature fitted on the val split (must equal the bundle's), ECE / log-loss / Brier on
  the official 10k test split before (T = 1, the baseline) and after temperature scaling, and
  that top-1 is unchanged image by image;
* TTA: accuracy with each set of views (plain = the baseline; flip; 5 crops; flip + 5 crops) on
  val and on test, the gain over plain in the same run;
* the time to rebuild ``report.html`` from the run directory alone.

Prints JSON. Run under the shared lock::

    flock /tmp/nextclass-bench.lock .venv/bin/python bench/calibration.py [--epochs 4] [--run RUN]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

VIEW_SETS = {
    "plain": ["identity"],
    "flip": ["identity", "hflip"],
    "crops": ["identity", "crop_c", "crop_tl", "crop_tr", "crop_bl", "crop_br"],
    "flip+crops": ["identity", "hflip", "crop_c", "crop_tl", "crop_tr", "crop_bl", "crop_br"],
}


def split_logits(run: Path, split: str, views: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Logits of every view for one split of the run's data, from the bundle (decode cache reused)."""
    import torch
    import yaml

    from nextclass.bundle import load_model
    from nextclass.data.cache import decode_all
    from nextclass.data.loader import ArrayDataset, Batching, make_loader
    from nextclass.data.sources import load_source
    from nextclass.data.splits import read_split_csv
    from nextclass.data.transforms import Preprocess, eval_transform
    from nextclass.metrics.tta import make_view

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    model, meta = load_model(run / "model")
    pp = Preprocess.from_dict(meta["preprocess"])
    source = load_source(cfg["data"], cache_dir=cfg.get("cache_dir"))
    read_split_csv(run / "split.csv", source)
    pos = [i for i, s in enumerate(source.samples) if s.split == split]
    imgs = decode_all(source, pos, pp, cache_dir=cfg.get("cache_dir"), progress=False)
    ok = np.flatnonzero(imgs.ok)
    labels = np.array([source.samples[pos[i]].label for i in ok])
    loader = make_loader(ArrayDataset(imgs.array, ok, labels, eval_transform(pp)), Batching(batch_size=512, train=False))
    out: dict[str, list] = {v: [] for v in views}
    with torch.no_grad():
        for x, _ in loader:
            for v in views:
                out[v].append(model(make_view(x, v)).float().numpy())
    return {v: np.concatenate(o) for v, o in out.items()}, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=None, help="reuse a trained run directory instead of training")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--output", default="/tmp/nextclass-bench")
    args = ap.parse_args()

    from nextclass.metrics.calibration import calibration_block, fit_temperature
    from nextclass.metrics.classification import softmax
    from nextclass.report.html import build_report

    t0 = time.time()
    if args.run:
        run = Path(args.run)
    else:
        from nextclass.config import make_config
        from nextclass.training.fit import fit

        run = fit(make_config(data=args.data, model="simple_cnn", epochs=args.epochs, batch_size=128,
                              split=(0.9, 0.1, 0.0), output=args.output, name=f"calib-{int(t0)}"), progress=False)
    train_wall = time.time() - t0
    meta = json.loads((run / "model" / "model.json").read_text())
    views = VIEW_SETS["flip+crops"]
    val, yv = split_logits(run, "val", views)
    test, yt = split_logits(run, "test", views)
    t = fit_temperature(val["identity"], yv)
    cal = calibration_block(test["identity"], yt, t)["calibration"]
    acc = lambda lg, y: float((lg.argmax(1) == y).mean())  # noqa: E731
    p1, pt = softmax(test["identity"], 1.0), softmax(test["identity"], t)
    tta = {}
    for name, vs in VIEW_SETS.items():
        mv = acc(np.mean([val[v] for v in vs], axis=0), yv)
        mt = acc(np.mean([test[v] for v in vs], axis=0), yt)
        tta[name] = {"views": len(vs), "val_accuracy": round(mv, 4), "test_accuracy": round(mt, 4)}
    for name in tta:
        tta[name]["val_gain"] = round(tta[name]["val_accuracy"] - tta["plain"]["val_accuracy"], 4)
        tta[name]["test_gain"] = round(tta[name]["test_accuracy"] - tta["plain"]["test_accuracy"], 4)
    t1 = time.time()
    build_report(run)
    report_s = time.time() - t1
    out = {
        "benchmark": "calibration_tta_fashion_mnist_simple_cnn",
        "run": str(run),
        "epochs": len((run / "history.csv").read_text().splitlines()) - 1,
        "train_and_finish_seconds": round(train_wall, 1) if not args.run else None,
        "n_val": int(len(yv)), "n_test": int(len(yt)),
        "temperature": {"fitted_on_val": round(t, 4), "bundle": meta["temperature"]},
        "test_calibration": {
            "baseline_T1": {k: round(v, 4) for k, v in cal["before"].items()},
            "temperature_scaled": {k: round(v, 4) for k, v in cal["after"].items()},
            "ece_ratio_after_over_before": round(cal["after"]["ece"] / max(cal["before"]["ece"], 1e-12), 3),
            "top1_T1": round(acc(p1, yt), 4), "top1_T": round(acc(pt, yt), 4),
            "top1_identical_per_image": bool(np.array_equal(p1.argmax(1), pt.argmax(1))),
        },
        "tta": tta,
        "tta_views_in_bundle": meta.get("tta", {}).get("views"),
        "report_rebuild_seconds": round(report_s, 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
